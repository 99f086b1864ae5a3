package notify

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// rsyslogd starts the real rsyslogd with a UDP, a TCP and a TLS input, each written to its
// own file in RFC 5424 form, and returns the ports and the files.
func rsyslogd(t *testing.T) (udp, tcp, tlsPort int, out func(string) string, caFile string, restart func(stop bool)) {
	t.Helper()
	bin := testpeer.Require(t, "rsyslogd", "rsyslog")
	if !hasGlob("/usr/lib/*/rsyslog/lmnsd_gtls.so") {
		testpeer.Require(t, "/nonexistent/lmnsd_gtls.so", "rsyslog-gnutls")
	}
	dir := t.TempDir()
	cert, key, _ := testpeer.SelfSigned(t)
	udp, tcp, tlsPort = testpeer.FreeUDPPort(t), testpeer.FreePort(t), testpeer.FreePort(t)
	out = func(name string) string { return filepath.Join(dir, name+".log") }
	conf := fmt.Sprintf(`global(workDirectory=%q defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
module(load="imudp")
module(load="imtcp" maxSessions="10")
template(name="p" type="string" string="%%rawmsg%%\n")
ruleset(name="udp") { action(type="omfile" file=%q template="p") }
ruleset(name="tcp") { action(type="omfile" file=%q template="p") }
ruleset(name="tls") { action(type="omfile" file=%q template="p") }
input(type="imudp" address="127.0.0.1" port="%d" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tls" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
`, dir, cert, cert, key, out("udp"), out("tcp"), out("tls"), udp, tcp, tlsPort)
	cf := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(cf, []byte(conf), 0o600)
	if b, err := exec.Command(bin, "-N1", "-f", cf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1: %v\n%s", err, b)
	}
	var p *testpeer.Proc
	restart = func(stop bool) {
		if stop {
			p.Stop()
			return
		}
		p = testpeer.Start(t, bin, "-n", "-f", cf, "-i", filepath.Join(dir, "pid"))
		testpeer.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", tcp), 30*time.Second)
		testpeer.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), 30*time.Second)
	}
	restart(false)
	return udp, tcp, tlsPort, out, cert, restart
}

func hasGlob(p string) bool { m, _ := filepath.Glob(p); return len(m) > 0 }

func TestSyslogRsyslogd(t *testing.T) {
	udp, tcp, tlsPort, out, ca, _ := rsyslogd(t)
	dir := t.TempDir()
	db := openDB(t, dir)
	defer db.Close()
	cfg := Config{Targets: []Target{
		{Name: "udp", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", udp)},
		{Name: "tcp", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", tcp), Transport: "tcp"},
		{Name: "tls", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", tlsPort), Transport: "tls", CAFile: ca, Facility: "local3"},
	}, Routes: []Route{{Targets: []string{"udp", "tcp", "tls"}}}}
	n, stop := start(t, db, cfg)
	defer stop()
	e := event("rack12-9", Opened, "critical")
	e.Note = `water "under" the floor ] \ here`
	e.Value = 1.5
	r := e
	r.Event = Resolved
	stage(t, db, n, e, r)
	for _, name := range []string{"udp", "tcp", "tls"} {
		var lines []string
		waitFor(t, name+" log lines", func() bool {
			b, _ := os.ReadFile(out(name))
			lines = strings.Split(strings.TrimSpace(string(b)), "\n")
			return len(lines) >= 2
		})
		fac := 16
		if name == "tls" {
			fac = 19
		}
		for i, want := range []struct {
			pri   int
			event string
		}{{fac*8 + 2, "opened"}, {fac*8 + 5, "resolved"}} {
			l := lines[i]
			prefix := fmt.Sprintf("<%d>1 ", want.pri)
			if !strings.HasPrefix(l, prefix) {
				t.Errorf("%s line %d: %q, want prefix %q", name, i, l, prefix)
			}
			f := strings.SplitN(l, " ", 7)
			if len(f) < 7 || f[2] != hostname() || f[3] != "rackwatch" || f[5] != want.event {
				t.Errorf("%s line %d header: %q", name, i, l)
				continue
			}
			sd := fmt.Sprintf(`[incident@32473 id="rack12-9" event=%q severity="critical" rule="leak" device="leak" metric="contact" value="1.5" threshold="" site="dc1" node="rack12" key="dc1/rack12/rack12-9"`, want.event)
			if !strings.Contains(f[6], `[timeQuality tzKnown="1" isSynced="`) || !strings.Contains(f[6], sd) {
				t.Errorf("%s line %d: structured data not intact: %q\nwant %s", name, i, f[6], sd)
			}
			if !strings.Contains(f[6], `water "under" the floor ] \ here`) {
				t.Errorf("%s line %d: message %q", name, i, f[6])
			}
		}
	}
}

// TestSyslogReconnect: TCP and TLS targets whose rsyslogd stops and starts again get the
// event sent meanwhile over a new connection.
func TestSyslogReconnect(t *testing.T) {
	_, tcp, tlsPort, out, ca, restart := rsyslogd(t)
	db := openDB(t, t.TempDir())
	defer db.Close()
	n, stop := start(t, db, Config{Targets: []Target{
		{Name: "tcp", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", tcp), Transport: "tcp", RetryMax: 100 * time.Millisecond},
		{Name: "tls", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", tlsPort), Transport: "tls", CAFile: ca, RetryMax: 100 * time.Millisecond},
	}, Routes: []Route{{Targets: []string{"tcp", "tls"}}}})
	defer stop()
	count := func(name string) int {
		b, _ := os.ReadFile(out(name))
		return strings.Count(string(b), "[incident@")
	}
	stage(t, db, n, event("rack12-1", Opened, "warning"))
	waitFor(t, "the first event", func() bool { return count("tcp") == 1 && count("tls") == 1 })
	restart(true)
	stage(t, db, n, event("rack12-2", Opened, "warning"))
	waitFor(t, "failed attempts", func() bool { s := n.Stats(); return s[0].Failed > 0 && s[1].Failed > 0 })
	restart(false)
	waitFor(t, "the second event after the restart", func() bool { return count("tcp") == 2 && count("tls") == 2 })
}

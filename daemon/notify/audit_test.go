package notify

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/audit"
)

// TestAuditSyslogRsyslogd: an audit record sent to a syslog target arrives at rsyslogd as one
// RFC 5424 message with MSGID audit, severity notice and every field of the record (the hash
// too, so the SIEM can check the chain) in [audit@32473 ...].
func TestAuditSyslogRsyslogd(t *testing.T) {
	_, tcp, _, out, _, _ := rsyslogd(t)
	db := openDB(t, t.TempDir())
	defer db.Close()
	cfg := Config{Targets: []Target{{Name: "siem", Type: "syslog", Target: fmt.Sprintf("127.0.0.1:%d", tcp), Transport: "tcp", Audit: true}},
		Routes: []Route{{Targets: []string{"siem"}}}}
	n, stop := start(t, db, cfg)
	defer stop()
	if got := n.AuditTargets(); fmt.Sprint(got) != "[siem]" {
		t.Fatalf("AuditTargets %v", got)
	}
	r := audit.Record{Seq: 7, TS: "2026-12-03T10:00:00.000Z", Actor: "alice", Source: "web", Action: "relay.set",
		Target: "cooling-backup", Detail: `mode "on" ] \ by hand`, Hash: strings.Repeat("ab", 32)}
	if err := n.SendAudit(context.Background(), "siem", r); err != nil {
		t.Fatal(err)
	}
	var line string
	waitFor(t, "the audit line", func() bool {
		b, _ := os.ReadFile(out("tcp"))
		line = strings.TrimSpace(string(b))
		return line != ""
	})
	f := strings.SplitN(line, " ", 7)
	if len(f) < 7 || f[0] != fmt.Sprintf("<%d>1", 16*8+5) || f[3] != "rackwatch" || f[5] != "audit" {
		t.Fatalf("header: %q", line)
	}
	sd := `[audit@32473 seq="7" ts="2026-12-03T10:00:00.000Z" actor="alice" source="web" action="relay.set" target="cooling-backup" site="dc1" node="rack12" hash="` + r.Hash + `"]`
	if !strings.Contains(f[6], sd) || !strings.HasSuffix(f[6], `relay.set cooling-backup by alice: mode "on" ] \ by hand`) {
		t.Errorf("message %q\nwant %s", f[6], sd)
	}
	if st := n.Stats()[0]; st.AuditSent != 1 || st.AuditFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestAuditTargetTypes: audit: true is refused on webhooks that take alerts (Alertmanager,
// PagerDuty), where a record is not an alert.
func TestAuditTargetTypes(t *testing.T) {
	for _, tc := range []struct {
		t  Target
		ok bool
	}{
		{Target{Name: "a", Type: "syslog", Target: "127.0.0.1:514", Transport: "udp", Facility: "local0", Audit: true}, true},
		{Target{Name: "a", Type: "webhook", URL: "http://x/", Format: "generic", Audit: true}, true},
		{Target{Name: "a", Type: "webhook", URL: "http://x/", Format: "alertmanager", Audit: true}, false},
		{Target{Name: "a", Type: "webhook", URL: "http://x/", Format: "pagerduty", RoutingKey: "k", Audit: true}, false},
		{Target{Name: "a", Type: "snmp", Target: "127.0.0.1:162", Version: "2c", Audit: true}, true},
		{Target{Name: "a", Type: "email", SMTP: "127.0.0.1:25", From: "a@b.c", To: []string{"d@e.f"}, StartTLS: "off", Audit: true}, true},
	} {
		err := CheckTarget(tc.t)
		if (err == nil) != tc.ok {
			t.Errorf("%s/%s: err %v, want ok=%v", tc.t.Type, tc.t.Format, err, tc.ok)
		}
	}
}

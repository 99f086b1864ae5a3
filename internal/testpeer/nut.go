package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Upsc runs NUT's own `upsc UPS@ADDR` and returns its variables.
func Upsc(t testing.TB, ups, addr string) (map[string]string, error) {
	t.Helper()
	bin := Require(t, "upsc", "nut-client")
	out, err := exec.Command(bin, ups+"@"+addr).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("upsc %s@%s: %v: %s", ups, addr, err, strings.TrimSpace(string(out)))
	}
	return upscVars(out), nil
}

// upscVars reads upsc's "name: value" lines.
func upscVars(out []byte) map[string]string {
	vars := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok {
			vars[k] = v
		}
	}
	return vars
}

// Upsd is NUT's own upsd and its drivers, run from a private folder.
type Upsd struct {
	Addr    string  // 127.0.0.1:port, where upsd listens
	Drivers []*Proc // one for each UPS, in the order StartUpsd was given them
	upsc    string
}

// StartUpsd runs the NUT driver program driver (e.g. /lib/nut/nutdrv_qx, found with Require)
// once for each UPS named in ups, with upsConf as ups.conf, then upsd on a free port with no
// users, all with their config, state and pid files in a private folder, and waits until
// upsd listens.
func StartUpsd(t testing.TB, driver, upsConf string, ups ...string) *Upsd {
	t.Helper()
	upsdBin := Require(t, "/lib/nut/upsd", "nut-server")
	upscBin := Require(t, "upsc", "nut-client")
	dir := t.TempDir()
	// NUT refuses to run as root without a user to switch to; -u names ourselves.
	who := "root"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	tcp := FreePort(t)
	files := map[string]string{
		"ups.conf":   upsConf,
		"upsd.conf":  fmt.Sprintf("LISTEN 127.0.0.1 %d\n", tcp),
		"upsd.users": "",
		"nut.conf":   "MODE=standalone\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"NUT_CONFPATH=" + dir, "NUT_STATEPATH=" + dir, "NUT_ALTPIDPATH=" + dir}
	u := &Upsd{Addr: fmt.Sprintf("127.0.0.1:%d", tcp), upsc: upscBin}
	for _, name := range ups {
		u.Drivers = append(u.Drivers, StartEnv(t, env, driver, "-a", name, "-u", who, "-F"))
	}
	StartEnv(t, env, upsdBin, "-u", who, "-F")
	WaitTCP(t, u.Addr, 20*time.Second)
	return u
}

// Vars runs `upsc UPS@ADDR` and returns its variables, or nil while it fails (before the
// driver has claimed the UPS).
func (u *Upsd) Vars(ups string) map[string]string {
	out, err := exec.Command(u.upsc, ups+"@"+u.Addr).Output()
	if err != nil {
		return nil
	}
	return upscVars(out)
}

// UpsmonPeers returns the paths of unshare and upsmon, or stops the test. upsmon insists on
// /run/nut for its state whatever NUT_STATEPATH says, so each one runs in a private mount
// namespace with its own /run/nut: that needs root.
func UpsmonPeers(t testing.TB) (unshare, upsmon string) {
	t.Helper()
	upsmon = Require(t, "/lib/nut/upsmon", "nut-client")
	unshare = Require(t, "unshare", "util-linux")
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if out, err := exec.Command(unshare, "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
		why = fmt.Sprintf("no mount namespaces here: %v %s", err, out)
	}
	if why != "" {
		Missing(t, "upsmon tests need root and a private /run/nut for each upsmon: "+why)
	}
	return unshare, upsmon
}

// Upsmon describes one upsmon client.
type Upsmon struct {
	UPS      string // ups@host:port
	User     string
	Password string
	Role     string // secondary or primary
	// HostSync (s; 1 if 0): a secondary that sees OB LB without FSD waits this long for its
	// primary to set FSD before shutting down on its own (upsmon.c is_ups_critical); a primary
	// waits as long for its secondaries to log out.
	HostSync int
}

// StartUpsmon runs NUT's upsmon in the foreground, with its config, state and pid files in a
// private folder and a SHUTDOWNCMD that creates a file, and returns that file's path: it exists
// once upsmon decided to shut its host down.
func StartUpsmon(t testing.TB, unshare, bin string, m Upsmon) string {
	t.Helper()
	dir := t.TempDir()
	flag := filepath.Join(dir, "shutdown-ordered")
	if m.HostSync == 0 {
		m.HostSync = 1
	}
	conf := fmt.Sprintf(`RUN_AS_USER root
MONITOR %s 1 %s %s %s
MINSUPPLIES 1
SHUTDOWNCMD "touch %s"
POLLFREQ 1
POLLFREQALERT 1
HOSTSYNC %d
DEADTIME 15
FINALDELAY 0
POWERDOWNFLAG %s/killpower
`, m.UPS, m.User, m.Password, m.Role, flag, m.HostSync, dir)
	if err := os.WriteFile(filepath.Join(dir, "upsmon.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Run as root, upsmon keeps its pid file in /run/nut whatever NUT_ALTPIDPATH says, and
	// refuses to start while another upsmon's is there: each gets a private /run/nut in a
	// mount namespace of its own, so several in one test (and any other test's) never meet.
	// exec keeps upsmon's pid the one Start signals at the end.
	StartEnv(t, []string{"NUT_CONFPATH=" + dir, "NUT_STATEPATH=" + dir, "NUT_ALTPIDPATH=" + dir},
		unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mkdir -p /run/nut && mount --bind "$1" /run/nut && exec "$2" -D -F -p`, "sh", dir, bin)
	return flag
}

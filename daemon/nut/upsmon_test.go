package nut_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// upsmonPeers finds upsmon and unshare, and checks that this machine lets us give each upsmon
// its own /run/nut (root, and mount namespaces allowed): Fatal under CI=true, Skip otherwise,
// like testpeer.Require.
func upsmonPeers(t *testing.T) (unshare, upsmon string) {
	t.Helper()
	upsmon = testpeer.Require(t, "/lib/nut/upsmon", "nut-client")
	unshare = testpeer.Require(t, "unshare", "util-linux")
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if out, err := exec.Command(unshare, "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
		why = fmt.Sprintf("no mount namespaces here: %v %s", err, out)
	}
	if why != "" {
		msg := "upsmon tests need root and a private /run/nut for each upsmon: " + why
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return unshare, upsmon
}

// upsmonRole is how one upsmon monitors ups1.
type upsmonRole struct {
	user, password, role string
	hostsync             int
}

var secondary = upsmonRole{"monuser", "secret", "secondary", 1}

// startUpsmon runs Debian's upsmon on ups1 at addr, in the foreground with its config, state
// and pid files in a private folder. It returns the file its SHUTDOWNCMD makes.
func startUpsmon(t *testing.T, unshare, bin, addr string, r upsmonRole) string {
	t.Helper()
	dir := t.TempDir()
	flag := filepath.Join(dir, "shutdown-ordered")
	// HOSTSYNC: a secondary that sees OB LB without FSD waits this long for its primary
	// to set FSD before shutting down on its own (upsmon.c is_ups_critical), 15 s by default; a
	// primary waits as long for its secondaries to log out.
	conf := fmt.Sprintf(`RUN_AS_USER root
MONITOR ups1@%s 1 %s %s %s
MINSUPPLIES 1
SHUTDOWNCMD "touch %s"
POLLFREQ 1
POLLFREQALERT 1
HOSTSYNC %d
DEADTIME 15
FINALDELAY 0
POWERDOWNFLAG %s/killpower
`, addr, r.user, r.password, r.role, flag, r.hostsync, dir)
	if err := os.WriteFile(filepath.Join(dir, "upsmon.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Run as root, upsmon keeps its pid file in /run/nut whatever NUT_ALTPIDPATH says, and
	// refuses to start while another upsmon's is there: each gets a private /run/nut in a
	// mount namespace of its own, so the three here (and any other test's) never meet.
	// exec keeps upsmon's pid the one testpeer signals at the end.
	testpeer.StartEnv(t, []string{"NUT_CONFPATH=" + dir, "NUT_STATEPATH=" + dir, "NUT_ALTPIDPATH=" + dir},
		unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mkdir -p /run/nut && mount --bind "$1" /run/nut && exec "$2" -D -F -p`, "sh", dir, bin)
	return flag
}

// Stock upsmon secondaries shut their hosts down when the site's UPS goes OB LB, or when the
// site orders a shutdown (FSD); three of them at once all do.
func TestUpsmonSecondaries(t *testing.T) {
	unshare, bin := upsmonPeers(t)
	for _, tc := range []struct {
		name   string
		change func(*source)
	}{
		{"OB LB", func(s *source) { s.set("ups1", "ups.status", "OB LB") }},
		{"FSD", func(s *source) { s.SetFSD("ups1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource()
			addr, srv := start(t, nut.Config{}, src)
			var flags []string
			for range 3 {
				flags = append(flags, startUpsmon(t, unshare, bin, addr, secondary))
			}
			testpeer.Eventually(t, 30*time.Second, "three upsmon logged in to ups1", func() bool {
				return srv.NumLogins("ups1") == 3
			})
			if cl := srv.Clients(); len(cl) != 3 || cl[0].User != "monuser" || cl[0].UPS != "ups1" {
				t.Errorf("Clients() = %+v", cl)
			}
			// On mains, after a few polls, nobody has shut down.
			src.set("ups1", "battery.charge", "99")
			time.Sleep(2500 * time.Millisecond) // POLLFREQ 1: lets each upsmon poll at least twice
			for _, f := range flags {
				if _, err := os.Stat(f); err == nil {
					t.Fatalf("upsmon shut down while the UPS was OL")
				}
			}
			tc.change(src)
			testpeer.Eventually(t, 30*time.Second, "every upsmon to run its SHUTDOWNCMD", func() bool {
				for _, f := range flags {
					if _, err := os.Stat(f); err != nil {
						return false
					}
				}
				return true
			})
		})
	}
}

// A stock upsmon primary (PRIMARY, then FSD on OB LB) and two secondaries that would wait 15 s
// for it: the primary's FSD reaches the site, and every host shuts down.
func TestUpsmonPrimarySetsFSD(t *testing.T) {
	unshare, bin := upsmonPeers(t)
	src := newSource()
	addr, srv := start(t, nut.Config{}, src)
	patient := upsmonRole{"monuser", "secret", "secondary", 15}
	flags := []string{
		startUpsmon(t, unshare, bin, addr, upsmonRole{"admin", "adm1n", "primary", 3}),
		startUpsmon(t, unshare, bin, addr, patient),
		startUpsmon(t, unshare, bin, addr, patient),
	}
	testpeer.Eventually(t, 30*time.Second, "the primary and two secondaries logged in", func() bool {
		cl := srv.Clients()
		primaries := 0
		for _, c := range cl {
			if c.Primary && c.User == "admin" {
				primaries++
			}
		}
		return len(cl) == 3 && primaries == 1
	})
	start := time.Now()
	src.set("ups1", "ups.status", "OB LB")
	testpeer.Eventually(t, 30*time.Second, "every upsmon to run its SHUTDOWNCMD", func() bool {
		for _, f := range flags {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	})
	src.mu.Lock()
	fsd := src.fsd["ups1"]
	src.mu.Unlock()
	if !fsd {
		t.Error("the primary never set FSD through the server")
	}
	if d := time.Since(start); d > 14*time.Second {
		t.Errorf("took %v: the secondaries seem to have given up on the primary instead of seeing its FSD", d)
	}
}

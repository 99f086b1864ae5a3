package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

// TestShutdownSurvivesRestart: the emulator goes OB LB, the power policy orders the shutdown
// (FSD, the shutdown command appends a line), the daemon is stopped (SIGTERM) or killed
// (SIGKILL) and started again while the UPS does not answer: NUT's own upsc sees FSD from
// the restarted daemon before it has polled anything, the status API says shutdown, and
// after the UPS answers again and more restarts the command has still run exactly once; mains
// back while the daemon is down recovers on the first polls.
func TestShutdownSurvivesRestart(t *testing.T) {
	testpeer.Require(t, "upsc", "nut-client")
	bin := buildDaemon(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { shutdownAcrossRestart(t, bin, sig) })
	}
}

func shutdownAcrossRestart(t *testing.T, bin string, sig syscall.Signal) {
	emu := upsemu.StartT(t)
	dir := t.TempDir()
	webPort, nutPort := testpeer.FreePort(t), testpeer.FreePort(t)
	nutAddr := fmt.Sprintf("127.0.0.1:%d", nutPort)
	ran := filepath.Join(dir, "shutdown.log")
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
nut: {listen: "%s"}
devices:
  - {id: ups1, driver: megatec, port: %s, poll: 200ms}
failover:
  power:
    ups: [ups1]
    shutdown_command: "echo shutdown >> %s"
    recover_for: 2s
`, dir, webPort, nutAddr, emu.Path(), ran))
	upsStatus := func() string {
		vars, err := testpeer.Upsc(t, "ups1", nutAddr)
		if err != nil {
			return err.Error()
		}
		return vars["ups.status"]
	}
	policy := func() string {
		var st struct {
			Failover struct {
				Power struct{ State string } `json:"power"`
			} `json:"failover"`
		}
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", webPort), &st); err != nil {
			return err.Error()
		}
		return st.Failover.Power.State
	}
	lines := func() int {
		b, _ := os.ReadFile(ran)
		return strings.Count(string(b), "\n")
	}

	d := startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 30*time.Second, "upsc shows ups1 on mains", func() bool { return upsStatus() == "OL" })
	emu.SetOnBattery(true)
	emu.SetLowBattery(true)
	testpeer.Eventually(t, 30*time.Second, "the shutdown ordered: FSD, the command run", func() bool {
		return upsStatus() == "OB LB FSD" && policy() == "shutdown" && lines() == 1
	})

	for i := range 2 {
		d.stop(sig)
		// Silent: whatever the restarted daemon serves comes from what it stored, not a poll.
		emu.SetFault(upsemu.FaultSilent)
		queries := emu.Queries()
		d = startDaemon(t, bin, cfg)
		testpeer.WaitTCP(t, nutAddr, 30*time.Second)
		if st := upsStatus(); !strings.Contains(" "+st+" ", " FSD ") {
			t.Fatalf("restart %d: upsc ups1 ups.status = %q before any poll, want FSD", i+1, st)
		}
		if p := policy(); p != "shutdown" {
			t.Fatalf("restart %d: power policy %q, want shutdown", i+1, p)
		}
		emu.SetFault(upsemu.FaultNone)
		// Polls (200 ms) answered after the restart, then the order still stands.
		testpeer.Eventually(t, 30*time.Second, "polls after the restart", func() bool {
			return emu.Queries() >= queries+10 && upsStatus() == "OB LB FSD"
		})
		if p := policy(); p != "shutdown" {
			t.Fatalf("restart %d: power policy %q after the polls, want shutdown", i+1, p)
		}
		if n := lines(); n != 1 {
			t.Fatalf("restart %d: the shutdown command ran %d times for one event", i+1, n)
		}
	}
	// Mains back while the daemon is down: the restart still serves FSD (cleared only by an
	// acknowledgement), and the policy recovers on the polls.
	d.stop(sig)
	emu.SetLowBattery(false)
	emu.SetOnBattery(false)
	d = startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 30*time.Second, "recovered after mains came back while the daemon was down", func() bool {
		return policy() == "recovered" && upsStatus() == "OL FSD"
	})
	if n := lines(); n != 1 {
		t.Fatalf("the shutdown command ran %d times for one event", n)
	}
	d.stop(syscall.SIGTERM)
}

package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func seqs(t *testing.T, payloads []string) []int {
	var out []int
	for _, p := range payloads {
		var m struct {
			Seq int `json:"seq"`
		}
		if err := json.Unmarshal([]byte(p), &m); err != nil {
			t.Fatalf("bad payload %q: %v", p, err)
		}
		out = append(out, m.Seq)
	}
	return out
}

// TestKillAndRestart: SIGKILL of the daemon and a restart keeps open incidents open without
// duplicating them, and seq continues where it stopped.
func TestKillAndRestart(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "e2e-kill")
	bin := buildDaemon(t)
	dir := t.TempDir()
	webPort := testpeer.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
mqtt: {brokers: ["%s"], telemetry_interval: 200ms}
devices:
  - {id: leak, driver: sim.contact, poll: 100ms, values: {contact: 1}}
  - {id: inlet, driver: sim.env, poll: 100ms}
rules:
  - {name: leak, device: leak, metric: contact, equals: 1}
`, dir, webPort, m.URL))
	d := startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 30*time.Second, "an opened incident and telemetry", func() bool {
		return len(sub.Matching("/incidents", `"event":"opened"`)) == 1 && len(sub.Matching("/telemetry")) >= 5
	})
	d.stop(syscall.SIGKILL)
	before := seqs(t, sub.Matching("/telemetry"))
	startDaemon(t, bin, cfg)
	// The restart may send again what the killed run had sent (held telemetry from its hold
	// file): count new seqs, not messages.
	testpeer.Eventually(t, 30*time.Second, "telemetry after the restart", func() bool {
		all := seqs(t, sub.Matching("/telemetry"))
		return slices.Max(all) >= slices.Max(before)+5
	})
	var open []map[string]any
	if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/api/v1/incidents?state=open", webPort), &open); err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0]["rule"] != "leak" {
		t.Fatalf("open incidents after restart: %v", open)
	}
	// An opened event sent again with its own seq is a redelivery (at least once: the killed
	// run may not have deleted what the broker had acknowledged); a second seq is a duplicate.
	if opened := slices.Compact(slices.Sorted(slices.Values(seqs(t, sub.Matching("/incidents", `"event":"opened"`))))); len(opened) != 1 {
		t.Fatalf("opened events with seqs %v for one leak across a restart, want one seq", opened)
	}
	// seq: every number from 1 up, none missing (duplicates are allowed: at-least-once).
	all := seqs(t, sub.Matching("/telemetry"))
	sort.Ints(all)
	seen := map[int]bool{}
	for _, s := range all {
		seen[s] = true
	}
	for i := 1; i <= all[len(all)-1]; i++ {
		if !seen[i] {
			t.Fatalf("telemetry seq %d missing (have %v)", i, all)
		}
	}
	if all[len(all)-1] <= before[len(before)-1] {
		t.Fatalf("seq did not continue: before %v, after %v", before, all)
	}
	// The clean stop is TestCleanStop's: an offline here could be the SIGKILL's will.
}

func TestCheck(t *testing.T) {
	bin := buildDaemon(t)
	out, err := exec.Command(bin, "-config", "config/testdata/contract.yaml", "-check").CombinedOutput()
	if err != nil {
		t.Fatalf("the CONTRACT example is refused: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-config", "config/testdata/bad.yaml", "-check")
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("bad config: exit %v, want 1\n%s", err, out)
	}
	for _, want := range []string{"config/testdata/bad.yaml:6: cannot read `2 seconds` as a duration", `config/testdata/bad.yaml:7: unknown key "colour"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	out, err = exec.Command(bin, "-version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rackwatch") {
		t.Fatalf("-version: %v %s", err, out)
	}
}

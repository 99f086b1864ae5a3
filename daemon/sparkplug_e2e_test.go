package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/uplink/sparkplug/sparkplugtest"
)

// TestSparkplugKillAndRestart runs the daemon with mqtt.format sparkplug_b against mosquitto
// and checks, with every message decoded by protoc, the session rules across a SIGKILL (the
// NDEATH will, with the NBIRTH's bdSeq), a restart (bdSeq + 1), a rebirth asked for over NCMD
// and a clean stop (NDEATH); R/state stays JSON beside it.
func TestSparkplugKillAndRestart(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	rec := sparkplugtest.Record(t, m.URL)
	state := m.Subscribe(t, "rackwatch/test/rack1/state", "")
	bin := buildDaemon(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "site.yaml")
	webPort := testpeer.FreePort(t)
	os.WriteFile(cfg, fmt.Appendf(nil, `site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
mqtt:
  brokers: ["%s"]
  telemetry_interval: 200ms
  format: sparkplug_b
  sparkplug: {group: dc1}
devices:
  - {id: feed-a, driver: sim.power, poll: 200ms}
  - {id: ups1, driver: sim.ups, poll: 200ms}
`, dir, webPort, m.URL), 0o644)
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "-config", cfg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	var s *sparkplugtest.Session
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testpeer.Eventually(t, 60*time.Second, what, func() bool {
			s = sparkplugtest.CheckSession(t, rec.All(), "dc1", "rack1")
			return cond()
		})
	}
	born := func(births int) func() bool {
		return func() bool {
			return s.Count("NBIRTH", "") == births && s.Count("DBIRTH", "feed-a") == births && s.Count("DBIRTH", "ups1") == births
		}
	}

	cmd := run()
	waitFor("births and data", func() bool { return born(1)() && s.Count("DDATA", "") >= 2 })
	for _, name := range []string{"feed-a/voltage", "feed-a/energy", "ups1/battery.charge"} {
		if v := s.Values[name]; v == nil || v.Alias == nil || v.Datatype == nil {
			t.Errorf("metric %s not born with alias and datatype: %v", name, v)
		}
	}
	testpeer.Eventually(t, 30*time.Second, "R/state online (JSON)", func() bool { return strings.Contains(strings.Join(state.Lines(), "\n"), `"state":"online"`) })

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	waitFor("the NDEATH will", func() bool { return len(s.Deaths) == 1 })

	cmd = run()
	waitFor("births after the restart", born(2))
	if fmt.Sprint(s.Births) != "[0 1]" || fmt.Sprint(s.Deaths) != "[0]" {
		t.Fatalf("bdSeq: births %v, deaths %v", s.Births, s.Deaths)
	}

	rec.Publish(t, "spBv1.0/dc1/NCMD/rack1", false, sparkplugtest.Encode(t,
		`timestamp: 1 metrics { name: "Node Control/Rebirth" datatype: 11 boolean_value: true }`))
	waitFor("the rebirth", born(3))
	// An NCMD that is not a Sparkplug payload is dropped and counted on /metrics.
	rec.Publish(t, "spBv1.0/dc1/NCMD/rack1", false, []byte("not protobuf \xff\xff"))
	var metrics string
	testpeer.Eventually(t, 30*time.Second, "the unreadable NCMD counted on /metrics", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort))
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		return strings.Contains(metrics, `rackwatch_sparkplug_unreadable_total{topic="NCMD"} 1`)
	})
	for _, want := range []string{"rackwatch_sparkplug_births_total 2", "rackwatch_sparkplug_rebirths_total 1", `rackwatch_sparkplug_unreadable_total{topic="STATE"} 0`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(metrics, "sparkplug"))
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	waitFor("the NDEATH of a clean stop", func() bool { return len(s.Deaths) == 2 })
	if fmt.Sprint(s.Births) != "[0 1 1]" || fmt.Sprint(s.Deaths) != "[0 1]" {
		t.Fatalf("bdSeq: births %v, deaths %v", s.Births, s.Deaths)
	}
}

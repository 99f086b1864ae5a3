package site

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	_ "github.com/rackwatch/rackwatch/sensors/all"
)

func replay(t *testing.T, cfgFile, timeline string) []Line {
	t.Helper()
	cfg, err := config.Load("testdata/replay/" + cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := ReadTimeline("testdata/replay/" + timeline)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Replay(cfg, tl, &buf); err != nil {
		t.Fatal(err)
	}
	var lines []Line
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var x Line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		lines = append(lines, x)
	}
	t.Logf("replay %s:\n%s", timeline, buf.String())
	return lines
}

func count(lines []Line, match func(Line) bool) int {
	n := 0
	for _, l := range lines {
		if match(l) {
			n++
		}
	}
	return n
}

func find(lines []Line, match func(Line) bool) (Line, int) {
	for i, l := range lines {
		if match(l) {
			return l, i
		}
	}
	return Line{}, -1
}

func decision(state string) func(Line) bool {
	return func(l Line) bool { return l.Type == "decision" && l.State == state }
}

func relayLine(id string, on bool) func(Line) bool {
	return func(l Line) bool { return l.Type == "relay" && l.Relay == id && l.On != nil && *l.On == on }
}

func TestReplayMainsBlip(t *testing.T) {
	lines := replay(t, "power.yaml", "blip.yaml")
	if n := count(lines, func(l Line) bool { return l.Type != "incident" }); n != 0 {
		t.Fatalf("a blip shorter than the confirmation made the policy act: %+v", lines)
	}
}

func TestReplayGeneratorAndMainsBack(t *testing.T) {
	lines := replay(t, "power.yaml", "generator.yaml")
	_, onAt := find(lines, relayLine("genset", true))
	_, obAt := find(lines, decision("on_battery"))
	_, recAt := find(lines, decision("recovered"))
	off, offAt := find(lines, relayLine("genset", false))
	_, normAt := find(lines, decision("normal"))
	if onAt < 0 || obAt < 0 || recAt < 0 || offAt < 0 || normAt < 0 || !(obAt < recAt && recAt < offAt && offAt <= normAt) {
		t.Fatalf("want on_battery (generator on) → recovered → generator off after cool-down → normal: %+v", lines)
	}
	if !strings.HasPrefix(off.TS, "2026-01-01T00:03:") {
		t.Errorf("generator released at %s: want the 2 m cool-down after mains was back at ~1:20", off.TS)
	}
	if count(lines, decision("generator_timeout")) != 0 || count(lines, decision("shutdown")) != 0 {
		t.Fatalf("mains came back within the generator timeout: no escalation, no shutdown: %+v", lines)
	}
}

func TestReplayLowBatteryShutdownOnce(t *testing.T) {
	lines := replay(t, "power.yaml", "lowbattery.yaml")
	if n := count(lines, decision("shutdown")); n != 1 {
		t.Fatalf("%d shutdown decisions, want exactly 1", n)
	}
	if n := count(lines, func(l Line) bool { return l.Type == "command" }); n != 1 {
		t.Fatalf("shutdown command ordered %d times, want 1", n)
	}
	if count(lines, decision("generator_timeout")) != 1 {
		t.Fatal("no generator_timeout escalation")
	}
	fsdOn, onAt := find(lines, func(l Line) bool { return l.Type == "fsd" && *l.On })
	_, offAt := find(lines, func(l Line) bool { return l.Type == "fsd" && !*l.On })
	_, ackAt := find(lines, func(l Line) bool {
		return l.Type == "incident" && l.Event == "acknowledged" && l.Key == "power:shutdown"
	})
	if onAt < 0 || len(fsdOn.UPS) != 1 || offAt < ackAt || ackAt < 0 {
		t.Fatalf("FSD must be raised, and cleared only after mains is back and the operator acknowledged: %+v", lines)
	}
	// The runtime fell below 300 s at 9:00; two polls (2 s) confirm it.
	if !strings.HasPrefix(fsdOn.TS, "2026-01-01T00:09:0") {
		t.Errorf("FSD at %s, want just after 9:00", fsdOn.TS)
	}
	if count(lines, decision("normal")) != 1 {
		t.Fatal("the policy did not return to normal")
	}
}

func TestReplaySilentUPSOnBattery(t *testing.T) {
	lines := replay(t, "power.yaml", "silent.yaml")
	comm, commAt := find(lines, func(l Line) bool {
		return l.Type == "incident" && l.Event == "opened" && l.Key == "power:comm-lost:ups1"
	})
	if commAt < 0 || comm.Severity != "critical" {
		t.Fatalf("no critical communication-lost incident: %+v", lines)
	}
	sd, sdAt := find(lines, decision("shutdown"))
	if sdAt < commAt || sdAt < 0 {
		t.Fatalf("no shutdown on the extrapolated runtime: %+v", lines)
	}
	// Last reading 800 s at 1:40, discharging 1 s/s: below 300 s at about 10:00.
	if !strings.HasPrefix(sd.TS, "2026-01-01T00:10:") && !strings.HasPrefix(sd.TS, "2026-01-01T00:09:5") {
		t.Errorf("shutdown at %s, want about 10:00 (800 s at 1:40, 1 s/s)", sd.TS)
	}
	if count(lines, decision("shutdown")) != 1 {
		t.Fatal("shutdown ordered more than once")
	}
}

func TestReplayOutlierSensor(t *testing.T) {
	lines := replay(t, "cooling.yaml", "outlier.yaml")
	if n := count(lines, func(l Line) bool { return l.Type == "relay" || l.Type == "decision" }); n != 0 {
		t.Fatalf("one sensor at 80 °C with two at 24 °C must not switch cooling: %+v", lines)
	}
	opened := count(lines, func(l Line) bool { return l.Type == "incident" && l.Event == "opened" })
	in, at := find(lines, func(l Line) bool {
		return l.Type == "incident" && l.Event == "opened" && l.Key == "cooling:sensor-disagrees:inlet-c"
	})
	if at < 0 || opened != 1 || in.Device != "inlet-c" {
		t.Fatalf("want exactly one incident, on inlet-c: %+v", lines)
	}
}

func TestReplayAllCoolingSensorsLost(t *testing.T) {
	lines := replay(t, "cooling.yaml", "nosensors.yaml")
	_, on := find(lines, relayLine("crac2", true))
	in, at := find(lines, func(l Line) bool { return l.Type == "incident" && l.Event == "opened" && l.Key == "cooling:no-sensors" })
	if on < 0 || at < 0 || in.Severity != "critical" || count(lines, decision("no_sensors")) != 1 {
		t.Fatalf("all sensors lost: want the backup relay on and a critical incident: %+v", lines)
	}
	// Fail safe only once every sensor is gone: inlet-c answered until 1:10.
	if l := lines[on]; l.TS < "2026-01-01T00:01:10" {
		t.Fatalf("relay on at %s, before the last sensor was lost", l.TS)
	}
}

// The generator controller confirms the start within generator_start_within, or the critical
// generator-start incident opens, on the replay's virtual clock.
func TestReplayGeneratorStart(t *testing.T) {
	genInc := func(event string) func(Line) bool {
		return func(l Line) bool { return l.Type == "incident" && l.Key == "power:generator-start" && l.Event == event }
	}
	lines := replay(t, "genset.yaml", "genset-starts.yaml")
	if _, on := find(lines, relayLine("genset", true)); on < 0 {
		t.Fatalf("no generator start: %+v", lines)
	}
	if n := count(lines, genInc("opened")); n != 0 {
		t.Errorf("the engine ran in time, yet %d generator-start incidents", n)
	}

	lines = replay(t, "genset.yaml", "genset-fails.yaml")
	relay, _ := find(lines, relayLine("genset", true))
	opened, at := find(lines, genInc("opened"))
	if at < 0 || opened.Severity != "critical" {
		t.Fatalf("no critical generator-start incident: %+v", lines)
	}
	ron, _ := time.Parse(time.RFC3339, relay.TS)
	oat, _ := time.Parse(time.RFC3339, opened.TS)
	if d := oat.Sub(ron); d < 30*time.Second || d > 35*time.Second {
		t.Errorf("incident %v after the relay, want generator_start_within (30s) and a tick", d)
	}
	if _, res := find(lines, genInc("resolved")); res < at {
		t.Errorf("the incident did not close once the engine ran: %+v", lines)
	}
}

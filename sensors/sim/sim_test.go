package sim

import (
	"context"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/relay"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func get(t *testing.T, d *Device, metric string) sensors.Reading {
	t.Helper()
	rs, err := d.Poll(context.Background())
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	for _, r := range rs {
		if r.Metric == metric {
			return r
		}
	}
	t.Fatalf("no %s in %v", metric, rs)
	return sensors.Reading{}
}

func TestUPSStory(t *testing.T) {
	c := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	spec := sensors.Spec{ID: "ups1", Options: Story{Script: []ScriptStep{
		{At: 10 * time.Second, Set: map[string]sensors.Value{"ups.status": {Text: "OB DISCHRG", IsText: true}}},
		{At: 20 * time.Minute, Set: map[string]sensors.Value{"ups.status": {Text: "OL CHRG", IsText: true}}},
	}}}
	d := New("sim.ups", spec, c.now)
	if s := get(t, d, "ups.status").Text; s != "OL" {
		t.Fatalf("start status %q", s)
	}
	c.t = c.t.Add(11 * time.Second)
	if s := get(t, d, "ups.status").Text; s != "OB DISCHRG" {
		t.Fatalf("after outage %q", s)
	}
	if v := get(t, d, "input.voltage").Value; v != 0 {
		t.Fatalf("input voltage on battery = %v", v)
	}
	// 1200 s from full to empty: after 17 minutes on battery charge is about 15 %: LB.
	c.t = c.t.Add(17 * time.Minute)
	r := get(t, d, "battery.charge")
	if r.Value > 20 || r.Value < 10 {
		t.Fatalf("charge after 17 min on battery = %v", r.Value)
	}
	if s := get(t, d, "ups.status").Text; s != "OB DISCHRG LB" {
		t.Fatalf("low battery status %q", s)
	}
	if rt := get(t, d, "battery.runtime").Value; rt <= 0 || rt > 240 {
		t.Fatalf("runtime %v", rt)
	}
	c.t = c.t.Add(5 * time.Minute)
	if s := get(t, d, "ups.status").Text; s != "OL CHRG" {
		t.Fatalf("mains back status %q", s)
	}
}

func TestLoopAndFail(t *testing.T) {
	c := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	spec := sensors.Spec{ID: "t", Options: Story{Values: map[string]sensors.Value{"temperature": {Num: 22}}, Loop: true, Script: []ScriptStep{
		{At: time.Minute, Set: map[string]sensors.Value{"temperature": {Num: 35}}},
		{At: 2 * time.Minute, Set: map[string]sensors.Value{"fail": {Num: 1}}},
		{At: 3 * time.Minute},
	}}}
	d := New("sim.env", spec, c.now)
	c.t = c.t.Add(90 * time.Second)
	if v := get(t, d, "temperature").Value; v != 35 {
		t.Fatalf("temperature %v", v)
	}
	c.t = c.t.Add(time.Minute)
	if _, err := d.Poll(context.Background()); err == nil {
		t.Fatal("failed sensor answered")
	}
	c.t = c.t.Add(time.Minute) // 3m30s: the loop restarted at 3m
	if v := get(t, d, "temperature").Value; v != 22 {
		t.Fatalf("after loop temperature %v", v)
	}
}

func TestRelaySafeState(t *testing.T) {
	d := New("sim.relay", sensors.Spec{ID: "r", Options: RelayOptions{Options: relay.Options{SafeState: "off"}}}, time.Now)
	r := Relay{d}
	if err := r.Set(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if v := get(t, d, "relay").Value; v != 1 {
		t.Fatalf("relay %v", v)
	}
	d.Close()
	if v := get(t, d, "relay").Value; v != 0 {
		t.Fatalf("after close relay %v", v)
	}
	var _ sensors.Actuator = r
}

// TestMetricNamesFollowTheScript: the sorted names a poll reuses follow a metric that a
// script adds and a loop removes again.
func TestMetricNamesFollowTheScript(t *testing.T) {
	c := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	spec := sensors.Spec{ID: "env1", Options: Story{Loop: true, Script: []ScriptStep{
		{At: 10 * time.Second, Set: map[string]sensors.Value{"pressure": {Num: 101325}}},
		{At: time.Minute},
	}}}
	d := New("sim.env", spec, c.now)
	names := func() []string {
		rs, err := d.Poll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Metric)
		}
		return out
	}
	want := func(got []string, w ...string) {
		t.Helper()
		if len(got) != len(w) {
			t.Fatalf("metrics %v, want %v", got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Fatalf("metrics %v, want %v", got, w)
			}
		}
	}
	want(names(), "humidity", "temperature")
	c.t = c.t.Add(11 * time.Second)
	want(names(), "humidity", "pressure", "temperature")
	c.t = c.t.Add(50 * time.Second) // the loop starts again from values: no pressure yet
	want(names(), "humidity", "temperature")
	d.Set("contact", sensors.Value{Num: 1})
	want(names(), "contact", "humidity", "temperature")
}

// A sim.genset names its state as the dse-gencomm profile does; a sim.meter counts energy.
func TestGensetAndMeter(t *testing.T) {
	c := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g := New("sim.genset", sensors.Spec{ID: "gen", Options: ModbusOptions{Story: Story{Script: []ScriptStep{
		{At: 10 * time.Second, Set: map[string]sensors.Value{"engine.state": {Num: 3}, "generator.voltage.l1": {Num: 231}}},
	}}}}, c.now)
	if r := get(t, g, "engine.state.text"); r.Text != "stopped" {
		t.Errorf("engine.state.text %q at start", r.Text)
	}
	if r := get(t, g, "engine.running"); r.Value != 0 {
		t.Errorf("engine.running %v at start", r.Value)
	}
	c.t = c.t.Add(11 * time.Second)
	if r := get(t, g, "engine.state.text"); r.Text != "running" {
		t.Errorf("engine.state.text %q after the start step", r.Text)
	}
	if r := get(t, g, "engine.running"); r.Value != 1 {
		t.Errorf("engine.running %v after the start step", r.Value)
	}
	m := New("sim.meter", sensors.Spec{ID: "meter", Options: ModbusOptions{Story: Story{Values: map[string]sensors.Value{"power": {Num: 3600}}}}}, c.now)
	get(t, m, "energy")
	c.t = c.t.Add(time.Hour)
	if r := get(t, m, "energy"); r.Value != 3600 || r.Unit != "Wh" {
		t.Errorf("energy after an hour at 3600 W: %+v", r)
	}
}

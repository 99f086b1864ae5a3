package failover

import (
	"reflect"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

func genset(at time.Time, running bool, volts float64) []sensors.Reading {
	r := 0.0
	st := "stopped"
	if running {
		r, st = 1, "running"
	}
	return []sensors.Reading{sensors.Num("g1", "engine.running", r, "", at), sensors.Text("g1", "engine.state.text", st, at),
		sensors.Num("g1", "generator.voltage.l1", volts, "V", at)}
}

// The generator controller must report the engine running with voltage within
// generator_start_within of the relay, else a critical incident opens; it closes when the
// engine runs, or when the relay is released.
func TestGeneratorStartConfirmed(t *testing.T) {
	type ev struct {
		at      time.Duration
		ups     string // a UPS poll's status, or "" for a generator poll / tick
		gen     string // "run", "stop", "silent", "tick"
		running bool
	}
	cases := []struct {
		name string
		evs  []ev
		want []string // generator-start actions only
	}{
		{"starts in time", []ev{{0, "OB", "", false}, {5 * time.Second, "OB", "", false}, {10 * time.Second, "", "stop", false},
			{25 * time.Second, "", "run", true}, {40 * time.Second, "", "tick", false}, {time.Minute, "", "tick", false}}, nil},
		{"never starts", []ev{{0, "OB", "", false}, {5 * time.Second, "OB", "", false}, {20 * time.Second, "", "stop", false},
			{34 * time.Second, "", "tick", false}, {35 * time.Second, "", "tick", false}, {40 * time.Second, "", "stop", false}},
			[]string{"raise:power:generator-start:critical"}},
		{"silent controller is not a start", []ev{{0, "OB", "", false}, {5 * time.Second, "OB", "", false},
			{36 * time.Second, "", "silent", false}}, []string{"raise:power:generator-start:critical"}},
		{"starts late", []ev{{0, "OB", "", false}, {5 * time.Second, "OB", "", false}, {36 * time.Second, "", "tick", false},
			{50 * time.Second, "", "run", true}}, []string{"raise:power:generator-start:critical", "resolve:power:generator-start"}},
		{"running without voltage", []ev{{0, "OB", "", false}, {5 * time.Second, "OB", "", false}, {36 * time.Second, "", "novolts", true}},
			[]string{"raise:power:generator-start:critical"}},
	}
	for _, c := range cases {
		cfg := powerCfg
		cfg.GeneratorDevice = "g1"
		cfg.GeneratorStartWithin = 30 * time.Second
		p := NewPower(cfg, t0)
		if !p.Covers("g1") {
			t.Fatal("the policy does not watch the generator controller")
		}
		var got []string
		for _, e := range c.evs {
			at := t0.Add(e.at)
			var acts []Action
			switch {
			case e.ups != "":
				acts = p.Observe("u1", sensors.DeviceOK, []sensors.Reading{sensors.Text("u1", "ups.status", e.ups, at)}, at)
			case e.gen == "tick":
				acts = p.Tick(at)
			case e.gen == "silent":
				acts = p.Observe("g1", sensors.DeviceStale, nil, at)
			case e.gen == "novolts":
				acts = p.Observe("g1", sensors.DeviceOK, genset(at, true, 0), at)
			default:
				acts = p.Observe("g1", sensors.DeviceOK, genset(at, e.running, map[bool]float64{true: 230, false: 0}[e.running]), at)
			}
			for _, a := range acts {
				if a.Key == KeyGenStart {
					got = append(got, show(a))
				}
			}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// The incident closes when the relay is released (mains back, cool-down over).
func TestGeneratorStartResolvedOnRelease(t *testing.T) {
	cfg := powerCfg
	cfg.GeneratorDevice = "g1"
	cfg.GeneratorStartWithin = 30 * time.Second
	cfg.GeneratorCooldown = 0
	p := NewPower(cfg, t0)
	var got []string
	obs := func(at time.Duration, st string) {
		for _, a := range p.Observe("u1", sensors.DeviceOK, []sensors.Reading{sensors.Text("u1", "ups.status", st, t0.Add(at))}, t0.Add(at)) {
			if a.Key == KeyGenStart || a.Kind == Relay {
				got = append(got, show(a))
			}
		}
	}
	obs(0, "OB")
	obs(5*time.Second, "OB")
	obs(40*time.Second, "OB")
	obs(50*time.Second, "OL")
	obs(55*time.Second, "OL")
	obs(2*time.Minute, "OL")
	want := []string{"relay:gen:on", "raise:power:generator-start:critical", "relay:gen:off", "resolve:power:generator-start"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}

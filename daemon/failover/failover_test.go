package failover

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/sensors"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// step is one event on the virtual clock: a poll of a device, a tick, an operator's
// acknowledgement of the shutdown, or a restart (the policy saved, made anew and restored).
type step struct {
	at     time.Duration
	op     string // poll, tick, ack, restart
	dev    string
	state  sensors.DeviceState // of a poll
	status string              // ups.status of a UPS poll
	rt     float64
	temp   float64
}

func ob(at time.Duration, status string) step {
	return step{at: at, op: "poll", dev: "u1", state: sensors.DeviceOK, status: status, rt: -1}
}
func obRT(at time.Duration, status string, rt float64) step {
	return step{at: at, op: "poll", dev: "u1", state: sensors.DeviceOK, status: status, rt: rt}
}
func silent(at time.Duration, dev string) step {
	return step{at: at, op: "poll", dev: dev, state: sensors.DeviceStale}
}
func failed(at time.Duration, dev string) step {
	return step{at: at, op: "poll", dev: dev, state: sensors.DeviceError}
}
func temp(at time.Duration, dev string, v float64) step {
	return step{at: at, op: "poll", dev: dev, state: sensors.DeviceOK, temp: v}
}
func tick(at time.Duration) step    { return step{at: at, op: "tick"} }
func ack(at time.Duration) step     { return step{at: at, op: "ack"} }
func restart(at time.Duration) step { return step{at: at, op: "restart"} }

// show prints an action as "kind:detail", the way the tables expect them.
func show(a Action) string {
	switch a.Kind {
	case Decision:
		return "state:" + a.State
	case Relay:
		return fmt.Sprintf("relay:%s:%s", a.Relay, onOff(a.On))
	case FSD:
		return "fsd:" + onOff(a.On)
	case Command:
		return "command:" + a.Cmd
	case Raise:
		return "raise:" + a.Key + ":" + string(a.Severity)
	case Resolve:
		return "resolve:" + a.Key
	}
	return a.Kind
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func upsReadings(s step, at time.Time) []sensors.Reading {
	if s.state != sensors.DeviceOK {
		return nil
	}
	rs := []sensors.Reading{sensors.Text(s.dev, "ups.status", s.status, at)}
	if s.rt >= 0 {
		rs = append(rs, sensors.Num(s.dev, "battery.runtime", s.rt, "s", at))
	}
	return rs
}

var powerCfg = config.Power{UPS: []string{"u1"}, GeneratorRelay: "gen", GeneratorTimeout: 10 * time.Minute,
	ShutdownRuntimeBelow: 5 * time.Minute, ShutdownCommand: "poweroff", ConfirmPolls: 2, RecoverFor: time.Minute,
	GeneratorCooldown: 5 * time.Minute}

// onBattery is the way into on_battery shared by most cases: two polls with OB.
var onBattery = []step{ob(0, "OL"), ob(5*time.Second, "OB"), ob(10*time.Second, "OB")}
var onBatteryActs = []string{"state:on_battery", "raise:power:mains-lost:warning", "relay:gen:on"}

// shutdown adds LB on two polls.
var shutdown = append(append([]step(nil), onBattery...), ob(15*time.Second, "OB LB"), ob(20*time.Second, "OB LB"))
var shutdownActs = append(append([]string(nil), onBatteryActs...), "state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical")

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func acts(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestPowerTransitions(t *testing.T) {
	const s, m = time.Second, time.Minute
	autoClear := powerCfg
	autoClear.AutoClear = true
	twoUPS := powerCfg
	twoUPS.UPS = []string{"u1", "u2"}
	for _, tc := range []struct {
		name  string
		cfg   config.Power
		steps []step
		want  []string
		state string
		fsd   bool
	}{
		{name: "a one-poll OB blip does nothing", steps: []step{ob(0, "OL"), ob(5*s, "OB"), ob(10*s, "OL"), tick(15 * s)}, state: Normal},
		{name: "stale and error polls never confirm", steps: []step{ob(0, "OB"), failed(5*s, "u1"), silent(10*s, "u1"), tick(15 * s)}, state: Normal},
		{name: "normal to on_battery on confirm_polls OB polls", steps: onBattery, want: onBatteryActs, state: OnBattery},
		{name: "on_battery to generator_timeout", steps: cat(onBattery, []step{tick(10*m + 5*s), tick(10*m + 10*s)}),
			want: acts(onBatteryActs, []string{"state:generator_timeout", "raise:power:mains-lost:critical"}), state: GeneratorTimeout},
		{name: "on_battery to shutdown on LB", steps: shutdown, want: shutdownActs, state: Shutdown, fsd: true},
		{name: "one LB poll is not enough", steps: cat(onBattery, []step{ob(15*s, "OB LB"), ob(20*s, "OB")}), want: onBatteryActs, state: OnBattery},
		{name: "on_battery to shutdown on the runtime",
			steps: []step{obRT(0, "OB", 900), obRT(5*s, "OB", 800), obRT(10*s, "OB", 200), obRT(15*s, "OB", 190)},
			want:  acts(onBatteryActs, []string{"state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical"}), state: Shutdown, fsd: true},
		{name: "generator_timeout to shutdown",
			steps: cat(onBattery, []step{tick(10*m + 5*s), ob(10*m+10*s, "OB LB"), ob(10*m+15*s, "OB LB")}),
			want:  acts(onBatteryActs, []string{"state:generator_timeout", "raise:power:mains-lost:critical", "state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical"}),
			state: Shutdown, fsd: true},
		{name: "a UPS silent on battery: shutdown on its extrapolated runtime, resolved when it answers",
			// Runtime 900 → 600 in 5 s: rate 10.5 s/s (EWMA from 1, capped at 20), so the
			// extrapolation crosses 300 s after 28.6 s of silence.
			steps: []step{obRT(0, "OB", 900), obRT(5*s, "OB", 600), silent(10*s, "u1"), tick(30 * s), tick(35 * s), tick(40 * s), obRT(45*s, "OB", 250)},
			want: acts(onBatteryActs, []string{"raise:power:comm-lost:u1:critical", "state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical",
				"resolve:power:comm-lost:u1"}), state: Shutdown, fsd: true},
		{name: "on_battery to recovered after recover_for, then normal after the cool-down",
			steps: cat(onBattery, []step{ob(15*s, "OL"), ob(20*s, "OL"), tick(m + 19*s), tick(m + 20*s), tick(6*m + 19*s), tick(6*m + 20*s)}),
			want:  acts(onBatteryActs, []string{"state:recovered", "resolve:power:mains-lost", "relay:gen:off", "state:normal"}), state: Normal},
		{name: "mains back but not for recover_for", steps: cat(onBattery, []step{ob(15*s, "OL"), ob(20*s, "OL"), ob(50*s, "OB"), tick(2 * m)}),
			want: onBatteryActs, state: OnBattery},
		{name: "generator_timeout to recovered",
			steps: cat(onBattery, []step{tick(10*m + 5*s), ob(10*m+10*s, "OL"), ob(10*m+15*s, "OL"), tick(11*m + 15*s)}),
			want:  acts(onBatteryActs, []string{"state:generator_timeout", "raise:power:mains-lost:critical", "state:recovered", "resolve:power:mains-lost"}), state: Recovered},
		{name: "shutdown to recovered keeps FSD until acknowledged, then normal",
			steps: cat(shutdown, []step{ob(25*s, "OL"), ob(30*s, "OL"), tick(m + 30*s), tick(6*m + 30*s), ack(7 * m)}),
			want: acts(shutdownActs, []string{"state:recovered", "resolve:power:mains-lost", "relay:gen:off",
				"fsd:off", "resolve:power:shutdown", "state:normal"}), state: Normal},
		{name: "auto_clear clears FSD once mains is back", cfg: autoClear,
			steps: cat(shutdown, []step{ob(25*s, "OL"), ob(30*s, "OL"), tick(m + 30*s), tick(6*m + 30*s)}),
			want: acts(shutdownActs, []string{"state:recovered", "resolve:power:mains-lost", "fsd:off", "resolve:power:shutdown",
				"relay:gen:off", "state:normal"}), state: Normal},
		{name: "recovered to on_battery again: the command does not run twice for one event",
			steps: cat(shutdown, []step{ob(25*s, "OL"), ob(30*s, "OL"), tick(m + 30*s), ob(2*m, "OB"), ob(2*m+5*s, "OB"), ob(2*m+10*s, "OB LB"), ob(2*m+15*s, "OB LB")}),
			want: acts(shutdownActs, []string{"state:recovered", "resolve:power:mains-lost", "state:on_battery", "raise:power:mains-lost:warning",
				"state:shutdown", "fsd:on", "raise:power:shutdown:critical"}), state: Shutdown, fsd: true},
		{name: "a new event after normal runs the command again", cfg: autoClear,
			steps: cat(shutdown, []step{ob(25*s, "OL"), ob(30*s, "OL"), tick(m + 30*s), tick(6*m + 30*s),
				ob(7*m, "OB"), ob(7*m+5*s, "OB"), ob(7*m+10*s, "OB LB"), ob(7*m+15*s, "OB LB")}),
			want: acts(shutdownActs, []string{"state:recovered", "resolve:power:mains-lost", "fsd:off", "resolve:power:shutdown", "relay:gen:off", "state:normal"},
				shutdownActs[:3], shutdownActs[3:]), state: Shutdown, fsd: true},
		{name: "mains back needs every covered UPS", cfg: twoUPS,
			steps: []step{{op: "poll", dev: "u2", state: sensors.DeviceOK, status: "OL", rt: -1}, ob(0, "OB"), ob(5*s, "OB"),
				ob(10*s, "OL"), ob(15*s, "OL"), {at: 20 * s, op: "poll", dev: "u2", state: sensors.DeviceOK, status: "OB", rt: -1}, tick(2 * m)},
			want: onBatteryActs, state: OnBattery},

		// Restarts: the snapshot brings the state back, the outputs come back as actions, and
		// nothing is raised or run a second time.
		{name: "restart in shutdown: FSD and the generator back, no command, stays shut down",
			steps: cat(shutdown, []step{restart(m), ob(m+5*s, "OB LB"), ob(m+10*s, "OB LB"), restart(2 * m), restart(3 * m), ob(3*m+5*s, "OB LB"), ob(3*m+10*s, "OB LB")}),
			want:  acts(shutdownActs, []string{"fsd:on", "relay:gen:on", "fsd:on", "relay:gen:on", "fsd:on", "relay:gen:on"}), state: Shutdown, fsd: true},
		{name: "restart in shutdown, mains came back while down: recovers as usual",
			steps: cat(shutdown, []step{restart(time.Hour), ob(time.Hour+5*s, "OL"), ob(time.Hour+10*s, "OL"), tick(time.Hour + m + 10*s)}),
			want:  acts(shutdownActs, []string{"fsd:on", "relay:gen:on", "state:recovered", "resolve:power:mains-lost"}), state: Recovered, fsd: true},
		{name: "restart on battery: a UPS that stays silent does not count as mains back",
			steps: cat(onBattery, []step{restart(m), tick(m + 5*s), silent(m+30*s, "u1"), tick(3 * m)}),
			want:  acts(onBatteryActs, []string{"relay:gen:on", "raise:power:comm-lost:u1:critical"}), state: OnBattery},
		{name: "restart on battery, the UPS silent from then on: shutdown on its runtime extrapolated across the restart",
			steps: []step{obRT(0, "OB", 900), obRT(5*s, "OB", 600), restart(10 * s), silent(15*s, "u1"), tick(30 * s), tick(35 * s), tick(40 * s)},
			want: acts(onBatteryActs, []string{"relay:gen:on", "raise:power:comm-lost:u1:critical",
				"state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical"}), state: Shutdown, fsd: true},
		{name: "restart while a UPS is silent: the extrapolation goes on",
			steps: []step{obRT(0, "OB", 900), obRT(5*s, "OB", 600), silent(10*s, "u1"), restart(20 * s), silent(25*s, "u1"), tick(35 * s), tick(40 * s)},
			want: acts(onBatteryActs, []string{"raise:power:comm-lost:u1:critical", "relay:gen:on",
				"state:shutdown", "fsd:on", "command:poweroff", "raise:power:shutdown:critical"}), state: Shutdown, fsd: true},
		{name: "restart in recovered after a shutdown, mains lost again: the command does not run twice",
			steps: cat(shutdown, []step{ob(25*s, "OL"), ob(30*s, "OL"), tick(m + 30*s), restart(2 * m),
				ob(2*m+5*s, "OB"), ob(2*m+10*s, "OB"), ob(2*m+15*s, "OB LB"), ob(2*m+20*s, "OB LB")}),
			want: acts(shutdownActs, []string{"state:recovered", "resolve:power:mains-lost", "fsd:on", "relay:gen:on",
				"state:on_battery", "raise:power:mains-lost:warning", "state:shutdown", "fsd:on", "raise:power:shutdown:critical"}), state: Shutdown, fsd: true},
		{name: "restart in recovered: the generator runs out its cool-down",
			steps: cat(onBattery, []step{ob(15*s, "OL"), ob(20*s, "OL"), tick(m + 20*s), restart(2 * m), ob(2*m+5*s, "OL"), tick(6*m + 20*s)}),
			want:  acts(onBatteryActs, []string{"state:recovered", "resolve:power:mains-lost", "relay:gen:on", "relay:gen:off", "state:normal"}), state: Normal},
		{name: "restart in shutdown after the acknowledgement: FSD clears once mains is back",
			steps: cat(shutdown, []step{ack(30 * s), restart(m), ob(m+5*s, "OL"), ob(m+10*s, "OL"), tick(2*m + 10*s)}),
			want: acts(shutdownActs, []string{"fsd:on", "relay:gen:on", "state:recovered", "resolve:power:mains-lost",
				"fsd:off", "resolve:power:shutdown"}), state: Recovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.UPS == nil {
				cfg = powerCfg
			}
			p := NewPower(cfg, t0)
			var got []string
			for _, st := range tc.steps {
				at := t0.Add(st.at)
				var as []Action
				switch st.op {
				case "poll":
					as = p.Observe(st.dev, st.state, upsReadings(st, at), at)
				case "tick":
					as = p.Tick(at)
				case "ack":
					as = p.Ack(KeyShutdown, at)
				case "restart":
					b, err := json.Marshal(p.Snapshot())
					if err != nil {
						t.Fatal(err)
					}
					var snap PowerSnapshot
					if err := json.Unmarshal(b, &snap); err != nil {
						t.Fatal(err)
					}
					p = NewPower(cfg, at)
					as = p.Restore(snap, at)
				}
				for _, a := range as {
					got = append(got, show(a))
				}
			}
			if !reflect.DeepEqual(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
				t.Errorf("actions\n got %s\nwant %s", strings.Join(got, " "), strings.Join(tc.want, " "))
			}
			if st, _ := p.State(); st != tc.state {
				t.Errorf("state %s, want %s", st, tc.state)
			}
			if p.FSD() != tc.fsd {
				t.Errorf("FSD %v, want %v", p.FSD(), tc.fsd)
			}
		})
	}
}

// TestPowerSnapshotQuiet: a UPS on mains whose runtime wanders (as real ones do with the load)
// does not change the snapshot, so a quiet site writes nothing.
func TestPowerSnapshotQuiet(t *testing.T) {
	p := NewPower(powerCfg, t0)
	p.Observe("u1", sensors.DeviceOK, upsReadings(obRT(0, "OL", 1800), t0), t0)
	first, _ := json.Marshal(p.Snapshot())
	for i := 1; i < 50; i++ {
		at := t0.Add(time.Duration(i) * 5 * time.Second)
		p.Observe("u1", sensors.DeviceOK, upsReadings(obRT(0, "OL CHRG", 1800-float64(i%7)), at), at)
		p.Tick(at)
		if now, _ := json.Marshal(p.Snapshot()); string(now) != string(first) {
			t.Fatalf("snapshot changed on a quiet poll:\n%s\n%s", first, now)
		}
	}
}

func TestRestoreRefusesUnknownState(t *testing.T) {
	p := NewPower(powerCfg, t0)
	if as := p.Restore(PowerSnapshot{State: "melting", FSD: true}, t0); as != nil || p.FSD() {
		t.Fatalf("restored a snapshot with an unknown state: %v", as)
	}
	c := NewCooling(coolCfg, nil, t0)
	if as := c.Restore(CoolingSnapshot{State: "melting", RelayOn: true}, t0); as != nil {
		t.Fatalf("restored a snapshot with an unknown state: %v", as)
	}
}

func f64(v float64) *float64 { return &v }

var coolCfg = config.Cooling{Sensors: []string{"a", "b", "c"}, BackupRelay: "fan", OnAbove: f64(30), For: time.Minute}

func all3(at time.Duration, a, b, c float64) []step {
	return []step{temp(at, "a", a), temp(at, "b", b), temp(at, "c", c)}
}

func TestCoolingTransitions(t *testing.T) {
	const s, m = time.Second, time.Minute
	hot := cat(all3(0, 31, 31, 31), all3(30*s, 31, 31, 31), all3(60*s, 31, 31, 31))
	hotActs := []string{"state:backup_on", "raise:cooling:backup-on:warning", "relay:fan:on"}
	noFor := coolCfg
	noFor.For = 0
	for _, tc := range []struct {
		name  string
		cfg   config.Cooling
		steps []step
		want  []string
		state string
	}{
		{name: "normal to backup_on when the median stays above on_above for `for`", steps: hot, want: hotActs, state: CoolBackupOn},
		{name: "an excursion shorter than `for` does nothing",
			steps: cat(all3(0, 31, 31, 31), all3(30*s, 28, 28, 28), all3(70*s, 31, 31, 31)), state: CoolNormal},
		{name: "for: 0 switches at once", cfg: noFor, steps: all3(0, 31, 31, 31), want: hotActs, state: CoolBackupOn},
		{name: "backup_on stays on between off_below and on_above", steps: cat(hot, all3(70*s, 29.5, 29.5, 29.5)), want: hotActs, state: CoolBackupOn},
		{name: "backup_on to normal below off_below (on_above - 1)", steps: cat(hot, all3(70*s, 28.9, 28.9, 28.9)),
			want: acts(hotActs, []string{"state:normal", "resolve:cooling:backup-on", "relay:fan:off"}), state: CoolNormal},
		{name: "a sensor far from the median is left out, and back when it agrees",
			steps: cat(all3(0, 20, 21, 40), all3(10*s, 20, 21, 40), all3(20*s, 20, 21, 22)),
			want:  []string{"raise:cooling:sensor-disagrees:c:warning", "resolve:cooling:sensor-disagrees:c"}, state: CoolNormal},
		{name: "every sensor lost: no_sensors, fail safe",
			steps: []step{failed(0, "a"), silent(5*s, "b"), failed(10*s, "c")},
			want:  []string{"state:no_sensors", "raise:cooling:no-sensors:critical", "relay:fan:on"}, state: CoolNoSensors},
		{name: "no sensor answers within the start grace: no_sensors",
			steps: []step{tick(29 * s), tick(31 * s)},
			want:  []string{"state:no_sensors", "raise:cooling:no-sensors:critical", "relay:fan:on"}, state: CoolNoSensors},
		{name: "readings age out after MaxAge polls",
			steps: cat(all3(0, 25, 25, 25), []step{tick(29 * s), tick(31 * s)}),
			want:  []string{"state:no_sensors", "raise:cooling:no-sensors:critical", "relay:fan:on"}, state: CoolNoSensors},
		{name: "no_sensors to backup_on when a sensor is back, then normal on its reading",
			steps: []step{failed(0, "a"), failed(0, "b"), failed(0, "c"), temp(10*s, "a", 25)},
			want: []string{"state:no_sensors", "raise:cooling:no-sensors:critical", "relay:fan:on",
				"resolve:cooling:no-sensors", "state:backup_on", "state:normal", "resolve:cooling:backup-on", "relay:fan:off"}, state: CoolNormal},
		{name: "no_sensors to backup_on, staying on while hot",
			steps: []step{failed(0, "a"), failed(0, "b"), failed(0, "c"), temp(10*s, "a", 31)},
			want: []string{"state:no_sensors", "raise:cooling:no-sensors:critical", "relay:fan:on",
				"resolve:cooling:no-sensors", "state:backup_on"}, state: CoolBackupOn},

		{name: "restart in backup_on: the relay back on, off when cool",
			steps: cat(hot, []step{restart(2 * m)}, all3(2*m+10*s, 31, 31, 31), all3(2*m+20*s, 25, 25, 25)),
			want:  acts(hotActs, []string{"relay:fan:on", "state:normal", "resolve:cooling:backup-on", "relay:fan:off"}), state: CoolNormal},
		{name: "restart halfway through `for`: the excursion keeps its start",
			steps: cat(all3(0, 31, 31, 31), []step{restart(30 * s)}, all3(61*s, 31, 31, 31)), want: hotActs, state: CoolBackupOn},
		{name: "restart with a sensor left out: not raised twice, resolved when it agrees",
			steps: cat(all3(0, 20, 21, 40), []step{restart(m)}, all3(m+10*s, 20, 21, 40), all3(m+20*s, 20, 21, 22)),
			want:  []string{"raise:cooling:sensor-disagrees:c:warning", "resolve:cooling:sensor-disagrees:c"}, state: CoolNormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.Sensors == nil {
				cfg = coolCfg
			}
			polls := map[string]time.Duration{"a": 10 * time.Second, "b": 10 * time.Second, "c": 10 * time.Second}
			c := NewCooling(cfg, polls, t0)
			var got []string
			for _, st := range tc.steps {
				at := t0.Add(st.at)
				var as []Action
				switch st.op {
				case "poll":
					var rs []sensors.Reading
					if st.state == sensors.DeviceOK {
						rs = []sensors.Reading{sensors.Num(st.dev, "temperature", st.temp, "°C", at)}
					}
					as = c.Observe(st.dev, st.state, rs, at)
				case "tick":
					as = c.Tick(at)
				case "restart":
					b, _ := json.Marshal(c.Snapshot())
					var snap CoolingSnapshot
					if err := json.Unmarshal(b, &snap); err != nil {
						t.Fatal(err)
					}
					c = NewCooling(cfg, polls, at)
					as = c.Restore(snap, at)
				}
				for _, a := range as {
					got = append(got, show(a))
				}
			}
			if !reflect.DeepEqual(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
				t.Errorf("actions\n got %s\nwant %s", strings.Join(got, " "), strings.Join(tc.want, " "))
			}
			if st, _ := c.State(); st != tc.state {
				t.Errorf("state %s, want %s", st, tc.state)
			}
		})
	}
}

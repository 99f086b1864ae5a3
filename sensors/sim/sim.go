// Package sim holds the simulated twins of the real drivers: sim.ups, sim.env, sim.power,
// sim.contact, sim.relay, sim.meter and sim.genset. They take the same keys as their real twins (the hardware address
// is optional), plus `values` (initial readings) and `script` (a story of timed changes), and
// power the demo site and the tests.
//
// A script step `{at: 30s, set: {ups.status: OB}}` applies 30 s after the device started. With
// `loop: true` the story starts again from `values` when the last step's `at` is reached, so a
// last step is the end marker of the loop. The special metric `fail` set to 1 makes the device
// stop answering (its polls fail) until it is set back to 0: that is how a story loses a sensor.
//
// sim.meter (a three-phase meter) and sim.genset (a generator controller) are the twins of
// the modbus device with the sdm630 and dse-gencomm profiles; a sim.genset names its
// engine.state and engine.mode and says engine.running as the profile does.
//
// sim.ups models the battery: on battery (`OB` in ups.status) battery.charge falls at a rate
// set by `discharge_s` (seconds from full to empty, default 1200) and battery.runtime follows
// from it; below 20 % charge the status gains LB. On mains the battery recharges. A script
// that sets battery.charge or battery.runtime itself overrides the model.
//
// It must not import daemon/ or uplink/.
package sim

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/contact"
	"github.com/rackwatch/rackwatch/sensors/ina219"
	"github.com/rackwatch/rackwatch/sensors/megatec"
	"github.com/rackwatch/rackwatch/sensors/modbus"
	"github.com/rackwatch/rackwatch/sensors/relay"
	"github.com/rackwatch/rackwatch/sensors/sht3x"
	"github.com/rackwatch/rackwatch/sensors/snmp"
)

// Clock is the time source; tests and replay use a virtual one.
type Clock func() time.Time

// Device is one simulated device.
type Device struct {
	spec  sensors.Spec
	story Story
	kind  string
	units map[string]string
	now   Clock

	mu      sync.Mutex
	start   time.Time
	last    time.Time // last model step
	vals    map[string]sensors.Value
	names   []string // vals' keys, sorted; nil when a key was added or removed since
	applied int      // script steps applied in the current loop
	loopAt  time.Time
	pinned  map[string]bool // set explicitly by the script or Set: the model leaves it alone
	fail    bool
}

var units = map[string]map[string]string{
	"sim.ups": {
		"ups.status": "", "battery.charge": "%", "battery.runtime": "s", "battery.voltage": "V",
		"input.voltage": "V", "input.frequency": "Hz", "output.voltage": "V", "ups.load": "%",
		"ups.temperature": "°C",
	},
	"sim.env":     {"temperature": "°C", "humidity": "%RH", "pressure": "Pa"},
	"sim.power":   {"voltage": "V", "current": "A", "power": "W", "energy": "Wh"},
	"sim.contact": {"contact": ""},
	"sim.relay":   {"relay": ""},
	// The modbus twins give a subset of the sdm630 and dse-gencomm profiles' readings.
	"sim.meter": {
		"voltage": "V", "voltage.l1": "V", "voltage.l2": "V", "voltage.l3": "V",
		"current": "A", "current.l1": "A", "current.l2": "A", "current.l3": "A",
		"power": "W", "power.l1": "W", "power.l2": "W", "power.l3": "W",
		"frequency": "Hz", "energy": "Wh",
	},
	"sim.genset": {
		"engine.state": "", "engine.state.text": "", "engine.running": "", "engine.mode": "",
		"engine.mode.text": "", "engine.speed": "rpm", "generator.voltage.l1": "V",
		"generator.frequency": "Hz", "generator.load": "%", "mains.voltage.l1": "V",
		"mains.frequency": "Hz", "battery.voltage": "V", "fuel.level": "%", "alarms.active": "",
	},
}

var defaults = map[string]map[string]sensors.Value{
	"sim.ups": {
		"ups.status": {Text: "OL", IsText: true}, "battery.charge": {Num: 100}, "battery.runtime": {Num: 1200},
		"battery.voltage": {Num: 27.2}, "input.voltage": {Num: 230}, "input.frequency": {Num: 50},
		"output.voltage": {Num: 230}, "ups.load": {Num: 35}, "ups.temperature": {Num: 30},
	},
	"sim.env":     {"temperature": {Num: 23}, "humidity": {Num: 45}},
	"sim.power":   {"voltage": {Num: 230}, "current": {Num: 4}, "power": {Num: 920}, "energy": {Num: 0}},
	"sim.contact": {"contact": {Num: 0}},
	"sim.relay":   {},
	"sim.meter": {
		"voltage": {Num: 230}, "voltage.l1": {Num: 230}, "voltage.l2": {Num: 230}, "voltage.l3": {Num: 230},
		"current": {Num: 12}, "current.l1": {Num: 4}, "current.l2": {Num: 4}, "current.l3": {Num: 4},
		"power": {Num: 2760}, "power.l1": {Num: 920}, "power.l2": {Num: 920}, "power.l3": {Num: 920},
		"frequency": {Num: 50}, "energy": {Num: 0},
	},
	"sim.genset": {
		"engine.state": {Num: 0}, "engine.mode": {Num: 1}, "engine.speed": {Num: 0},
		"generator.voltage.l1": {Num: 0}, "generator.frequency": {Num: 0}, "generator.load": {Num: 0},
		"mains.voltage.l1": {Num: 230}, "mains.frequency": {Num: 50}, "battery.voltage": {Num: 24.6},
		"fuel.level": {Num: 82}, "alarms.active": {Num: 0},
	},
}

// Story is what every twin takes besides its real twin's keys. A test may give a bare Story
// as a Spec's Options.
type Story struct {
	Values map[string]sensors.Value `yaml:"values"`
	Script []ScriptStep             `yaml:"script"`
	Loop   bool                     `yaml:"loop"`
}

func (s Story) story() Story { return s }

// ScriptStep is one step of a simulated device's story: at At after start (or after the
// previous loop), set the listed metrics.
type ScriptStep struct {
	At  time.Duration            `yaml:"at"`
	Set map[string]sensors.Value `yaml:"set"`
}

// StoryOf returns the story of a sim's spec (empty for any other spec).
func StoryOf(spec sensors.Spec) Story {
	if s, ok := spec.Options.(interface{ story() Story }); ok {
		return s.story()
	}
	return Story{}
}

// The twins' options: a story and their real twin's keys (the hardware address is optional,
// and only the checks of keys that change behaviour are shared).
type (
	UPSOptions struct {
		Story  `yaml:",inline"`
		Serial megatec.Options `yaml:",inline"`
		SNMP   snmp.Agent      `yaml:",inline"`
	}
	EnvOptions struct {
		Story         `yaml:",inline"`
		sht3x.Options `yaml:",inline"`
	}
	PowerOptions struct {
		Story          `yaml:",inline"`
		ina219.Options `yaml:",inline"`
	}
	ContactOptions struct {
		Story           `yaml:",inline"`
		contact.Options `yaml:",inline"`
	}
	RelayOptions struct {
		Story         `yaml:",inline"`
		relay.Options `yaml:",inline"`
	}
	// ModbusOptions are a sim.meter's or sim.genset's: the link of the modbus device it
	// stands for and its profile (a twin reads no registers).
	ModbusOptions struct {
		Story       `yaml:",inline"`
		modbus.Link `yaml:",inline"`
		Profile     string `yaml:"profile"`
	}
)

// SNMPAgent names the agent a sim.ups stands for, so traps from it reach the sim.
func (o UPSOptions) SNMPAgent() snmp.Agent { return o.SNMP }

var twins = map[string]struct {
	class   sensors.Class
	options any
	check   func(sensors.Spec) error
}{
	"sim.ups":   {sensors.ClassUPS, UPSOptions{}, nil},
	"sim.env":   {sensors.ClassEnvironmental, EnvOptions{}, nil},
	"sim.power": {sensors.ClassPower, PowerOptions{}, nil},
	"sim.contact": {sensors.ClassContact, ContactOptions{}, func(spec sensors.Spec) error {
		return contact.CheckOptions(sensors.Opts[ContactOptions](spec).Options)
	}},
	"sim.relay": {sensors.ClassRelay, RelayOptions{}, func(spec sensors.Spec) error {
		return relay.CheckOptions(sensors.Opts[RelayOptions](spec).Options)
	}},
	"sim.meter":  {sensors.ClassPower, ModbusOptions{}, nil},
	"sim.genset": {sensors.ClassGenerator, ModbusOptions{}, nil},
}

// gensetStates and gensetModes name a sim.genset's engine.state and engine.mode as the
// dse-gencomm profile does (DSE GenComm pages 3 and 6).
var (
	gensetStates = map[float64]string{0: "stopped", 1: "pre-start", 2: "warming up", 3: "running", 4: "cooling down", 5: "stopped", 6: "post-run"}
	gensetModes  = map[float64]string{0: "stop", 1: "auto", 2: "manual", 3: "test on load", 4: "auto with manual restore", 5: "user configuration", 6: "test off load", 7: "off"}
)

func init() {
	for kind, tw := range twins {
		kind, tw := kind, tw
		sensors.Register(sensors.Driver{
			Name:    kind,
			Class:   tw.class,
			Options: tw.options,
			Metrics: units[kind],
			// A sim reads no hardware: tests may poll it fast.
			MinPoll: time.Millisecond,
			Check: func(spec sensors.Spec) error {
				var errs []error
				if tw.check != nil {
					errs = append(errs, tw.check(spec))
				}
				steps := StoryOf(spec).Script
				for j := 1; j < len(steps); j++ {
					if steps[j].At < steps[j-1].At {
						errs = append(errs, &sensors.KeyError{Key: "script", In: []any{j}, Err: errors.New("script steps must be in time order")})
						break
					}
				}
				return errors.Join(errs...)
			},
			New: func(spec sensors.Spec, env sensors.Env) (sensors.Device, error) {
				d := New(kind, spec, time.Now)
				if kind == "sim.relay" {
					return Relay{d}, nil
				}
				return d, nil
			},
		})
	}
}

// New makes a simulated device of kind (sim.ups, …) on the given clock.
func New(kind string, spec sensors.Spec, now Clock) *Device {
	d := &Device{spec: spec, story: StoryOf(spec), kind: kind, units: units[kind], now: now, pinned: map[string]bool{}}
	d.start = now()
	d.reset(d.start)
	if kind == "sim.relay" {
		on := sensors.SafeOn(spec)
		d.vals["relay"] = sensors.Value{Num: b2f(on)}
	}
	return d
}

func (d *Device) reset(at time.Time) {
	d.vals = map[string]sensors.Value{}
	d.names = nil
	for k, v := range defaults[d.kind] {
		d.vals[k] = v
	}
	for k, v := range d.story.Values {
		d.vals[k] = v
		d.pinned[k] = true
	}
	d.applied = 0
	d.loopAt = at
	d.last = at
	d.fail = false
}

// advance applies the script and the model up to now. Called with mu held.
func (d *Device) advance(now time.Time) {
	steps := d.story.Script
	for {
		for d.applied < len(steps) && !now.Before(d.loopAt.Add(steps[d.applied].At)) {
			at := d.loopAt.Add(steps[d.applied].At)
			d.model(at)
			for k, v := range steps[d.applied].Set {
				d.set(k, v)
			}
			d.applied++
		}
		if d.story.Loop && len(steps) > 0 && d.applied == len(steps) && steps[len(steps)-1].At > 0 {
			next := d.loopAt.Add(steps[len(steps)-1].At)
			relay, hasRelay := d.vals["relay"]
			d.reset(next)
			if hasRelay {
				d.vals["relay"] = relay // an output is ours, not the story's
			}
			continue
		}
		break
	}
	d.model(now)
	if d.kind == "sim.genset" {
		// Named after every step, so a script sets engine.state alone.
		st := d.vals["engine.state"].Num
		d.put("engine.state.text", sensors.Value{Text: gensetStates[st], IsText: true})
		d.put("engine.mode.text", sensors.Value{Text: gensetModes[d.vals["engine.mode"].Num], IsText: true})
		d.put("engine.running", sensors.Value{Num: b2f(st == 2 || st == 3)})
	}
}

func (d *Device) set(k string, v sensors.Value) {
	if k == "fail" {
		d.fail = v.Num != 0
		return
	}
	d.put(k, v)
	// The script may set the battery directly; otherwise the model owns it.
	if k == "battery.charge" || k == "battery.runtime" {
		d.pinned[k] = true
	}
}

// model moves the battery of a sim.ups and the energy counter of a sim.power.
func (d *Device) model(now time.Time) {
	dt := now.Sub(d.last).Seconds()
	if dt <= 0 {
		return
	}
	d.last = now
	switch d.kind {
	case "sim.ups":
		st := d.vals["ups.status"].Text
		full := 1200.0
		charge := d.vals["battery.charge"].Num
		flags := strings.Fields(st)
		onBattery := has(flags, "OB")
		if !d.pinned["battery.charge"] {
			if onBattery {
				charge -= dt / full * 100
			} else {
				charge += dt / full * 100 / 4 // recharging takes four times as long
			}
			charge = clamp(charge, 0, 100)
			d.put("battery.charge", sensors.Value{Num: round1(charge)})
		}
		if !d.pinned["battery.runtime"] {
			d.put("battery.runtime", sensors.Value{Num: float64(int(charge / 100 * full))})
		}
		d.put("battery.voltage", sensors.Value{Num: round1(23.0 + 4.2*charge/100)})
		if onBattery {
			d.put("input.voltage", sensors.Value{Num: 0})
			d.put("input.frequency", sensors.Value{Num: 0})
		}
		low := onBattery && charge < 20
		flags = without(flags, "LB")
		if low {
			flags = append(flags, "LB")
		}
		d.put("ups.status", sensors.Value{Text: strings.Join(flags, " "), IsText: true})
	case "sim.power", "sim.meter":
		e := d.vals["energy"].Num + d.vals["power"].Num*dt/3600
		d.put("energy", sensors.Value{Num: round1(e)})
	}
}

// ErrNoAnswer is what a failed simulated device returns.
var ErrNoAnswer = errors.New("simulated device does not answer")

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.advance(now)
	if d.fail {
		return nil, ErrNoAnswer
	}
	if d.names == nil {
		// Sorted once, not on every poll: the names change only when a script adds one.
		for k := range d.vals {
			d.names = append(d.names, k)
		}
		sort.Strings(d.names)
	}
	out := make([]sensors.Reading, 0, len(d.names))
	for _, k := range d.names {
		v := d.vals[k]
		if v.IsText {
			out = append(out, sensors.Text(d.spec.ID, k, v.Text, now))
		} else {
			out = append(out, sensors.Num(d.spec.ID, k, v.Num, d.units[k], now))
		}
	}
	return out, nil
}

// put sets a value, forgetting the sorted names when the metric is new.
func (d *Device) put(k string, v sensors.Value) {
	if _, ok := d.vals[k]; !ok {
		d.names = nil
	}
	d.vals[k] = v
}

// Set changes a value now, as a script step would (tests and the demo use it).
func (d *Device) Set(metric string, v sensors.Value) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance(d.now())
	d.set(metric, v)
}

// SetOutput energises or releases a sim.relay's output.
func (d *Device) SetOutput(ctx context.Context, on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail {
		return ErrNoAnswer
	}
	d.put("relay", sensors.Value{Num: b2f(on)})
	return nil
}

// Close implements sensors.Device; a relay returns to its safe state.
func (d *Device) Close() error {
	if d.kind == "sim.relay" {
		d.mu.Lock()
		d.put("relay", sensors.Value{Num: b2f(sensors.SafeOn(d.spec))})
		d.mu.Unlock()
	}
	return nil
}

// Relay wraps a sim.relay so that only relays are Actuators.
type Relay struct{ *Device }

// Set implements sensors.Actuator.
func (r Relay) Set(ctx context.Context, on bool) error { return r.SetOutput(ctx, on) }

func has(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func without(flags []string, f string) []string {
	out := flags[:0:0]
	for _, x := range flags {
		if x != f {
			out = append(out, x)
		}
	}
	return out
}

func clamp(v, lo, hi float64) float64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func round1(v float64) float64 { return float64(int(v*10+0.5)) / 10 }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

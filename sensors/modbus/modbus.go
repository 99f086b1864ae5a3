// Package modbus is the `modbus` device (CONTRACT.md §2): registers of any Modbus TCP or RTU
// device turned into readings, either from the config's `registers` list or from a built-in
// `profile` of a known device (profiles.go, each with its public source). A register the device
// refuses (an exception) or does not answer makes only its own reading an error; the device
// fails only when nothing was read. With a `relay` entry the device is also a relay, switched
// through the same bus as its reads.
//
// Transport, bus sharing and batching are drivers/modbus's. It must not import daemon/ or
// uplink/.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	mbdrv "github.com/rackwatch/rackwatch/drivers/modbus"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "modbus"

func init() {
	sensors.Register(sensors.Driver{
		Name:        Name,
		Class:       sensors.ClassOther,
		DeviceClass: DeviceClass,
		Options:     Options{},
		// Metric names come from the registers or the profile: any.
		New:   func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) { return New(spec) },
		Check: func(spec sensors.Spec) error { return CheckOptions(sensors.Opts[Options](spec)) },
	})
}

// Link are the keys that say how to reach a Modbus unit; the simulated twins take them too.
type Link struct {
	Port      string `yaml:"port"` // RTU over a serial port
	Baud      int    `yaml:"baud"`
	Parity    string `yaml:"parity"`    // none, even, odd
	StopBits  int    `yaml:"stop_bits"` // 1, 2
	Target    string `yaml:"target"`    // host:port of a Modbus TCP server or gateway
	Transport string `yaml:"transport"` // with target: tcp, rtu_over_tcp
	UnitID    int    `yaml:"unit_id"`
}

// Options are a modbus device's keys.
type Options struct {
	Link      `yaml:",inline"`
	Profile   string     `yaml:"profile"`
	WordOrder string     `yaml:"word_order"` // high_first, low_first: the device's default
	Registers []Register `yaml:"registers"`
	Relay     *Relay     `yaml:"relay"`
	SafeState string     `yaml:"safe_state"` // on, off: with a relay entry
}

// SafeOn implements sensors.SafeStater.
func (o Options) SafeOn() bool { return o.Relay != nil && o.SafeState == "on" }

// Register is one value of a generic modbus device.
type Register struct {
	Name      string  `yaml:"name"`
	Table     string  `yaml:"table"`
	Address   int     `yaml:"address"`
	Type      string  `yaml:"type"`
	Count     int     `yaml:"count"`
	WordOrder string  `yaml:"word_order"`
	Unit      string  `yaml:"unit"`
	Scale     float64 `yaml:"scale"`
	Offset    float64 `yaml:"offset"`
}

// Relay makes a modbus device switchable: a coil, or a holding register written with On or
// Off.
type Relay struct {
	Table   string `yaml:"table"`
	Address int    `yaml:"address"`
	On      *int   `yaml:"on"`
	Off     *int   `yaml:"off"`
}

// DeviceClass classes a modbus device by what it reads: its profile's class (a UPS, a
// meter, a generator controller), a relay when it has a relay entry, else other.
func DeviceClass(spec sensors.Spec) sensors.Class {
	o := sensors.Opts[Options](spec)
	if p, ok := profiles[o.Profile]; ok && p.class == sensors.ClassUPS {
		return p.class
	}
	if o.Relay != nil {
		return sensors.ClassRelay
	}
	if p, ok := profiles[o.Profile]; ok {
		return p.class
	}
	return sensors.ClassOther
}

// DefaultBaud is the RTU speed when baud is not given: what meters, UPSes and generator
// controllers ship with most often.
const DefaultBaud = 9600

// maxRequestTimeout bounds one request: a unit that stops answering holds its bus this long
// per poll at most, unless the device's own timeout is shorter.
const maxRequestTimeout = time.Second

// point is one value read from the device.
type point struct {
	name     string
	unit     string
	span     mbdrv.Span
	typ      mbdrv.Type
	lowFirst bool
	scale    float64
	offset   float64
	// sentinels: the top n raw values of the type mean "not available" or "sensor fault"
	// (DSE GenComm, APC's 0xFFFF), read as an error rather than a number.
	sentinels int
	// internal points feed a profile's derived readings and are not readings themselves.
	internal bool
}

// value is what one point read this poll.
type value struct {
	num  float64
	text string
	err  error
}

// Device is one modbus device. It implements sensors.Device and sensors.Actuator.
type Device struct {
	id      string
	unit    uint8
	bus     *mbdrv.Bus
	points  []point
	spans   []mbdrv.Span
	prof    *profile
	relay   *relayPoint
	log     *slog.Logger
	closeMu sync.Mutex
	closed  bool

	mu      sync.Mutex
	lastErr map[string]string // per point: what was logged last, so a lasting fault logs once
}

type relayPoint struct {
	table   mbdrv.Table
	addr    uint16
	on, off uint16
}

// Conn is the bus a device's link keys name.
func Conn(spec Link) mbdrv.Conn {
	if spec.Port != "" {
		baud := spec.Baud
		if baud == 0 {
			baud = DefaultBaud
		}
		return mbdrv.Conn{Mode: "rtu", Addr: spec.Port, Baud: baud, Parity: spec.Parity, StopBits: spec.StopBits}
	}
	if spec.Transport == "rtu_over_tcp" {
		baud := spec.Baud
		if baud == 0 {
			baud = DefaultBaud
		}
		return mbdrv.Conn{Mode: "rtuovertcp", Addr: spec.Target, Baud: baud}
	}
	return mbdrv.Conn{Mode: "tcp", Addr: spec.Target}
}

// New makes a device from its spec and takes its share of the bus.
func New(spec sensors.Spec) (*Device, error) {
	o := sensors.Opts[Options](spec)
	if err := CheckOptions(o); err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	points, prof, rp, err := compile(o)
	if err != nil {
		return nil, err
	}
	timeout := maxRequestTimeout
	if spec.Timeout > 0 && spec.Timeout < timeout {
		timeout = spec.Timeout
	}
	c := Conn(o.Link)
	bus, err := mbdrv.Open(c, timeout)
	if err != nil {
		return nil, err
	}
	unit := o.UnitID
	if unit == 0 {
		unit = 1
	}
	d := &Device{id: spec.ID, unit: uint8(unit), bus: bus, points: points, prof: prof, relay: rp,
		lastErr: map[string]string{},
		log:     slog.Default().With("device", spec.ID, "driver", Name, "bus", c.Mode+"://"+c.Addr, "unit_id", unit)}
	for _, p := range points {
		d.spans = append(d.spans, p.span)
	}
	if rp != nil {
		n := uint16(1)
		d.spans = append(d.spans, mbdrv.Span{Table: rp.table, Addr: rp.addr, Count: n})
	}
	return d, nil
}

func compile(spec Options) ([]point, *profile, *relayPoint, error) {
	var points []point
	var prof *profile
	if spec.Profile != "" {
		p, ok := profiles[spec.Profile]
		if !ok {
			return nil, nil, nil, fmt.Errorf("modbus: no profile %q", spec.Profile)
		}
		prof = p
		points = p.points
	}
	devLow := spec.WordOrder == "low_first"
	for _, r := range spec.Registers {
		table, _ := mbdrv.ParseTable(r.Table)
		typ, _ := mbdrv.ParseType(r.Type)
		if table.Bits() {
			typ = mbdrv.Uint16
		}
		n := typ.Registers(r.Count)
		if table.Bits() {
			n = 1
		}
		scale := r.Scale
		if scale == 0 {
			scale = 1
		}
		low := devLow
		if r.WordOrder != "" {
			low = r.WordOrder == "low_first"
		}
		points = append(points, point{name: r.Name, unit: r.Unit, span: mbdrv.Span{Table: table, Addr: uint16(r.Address), Count: uint16(n)},
			typ: typ, lowFirst: low, scale: scale, offset: r.Offset})
	}
	var rp *relayPoint
	if r := spec.Relay; r != nil {
		table, _ := mbdrv.ParseTable(r.Table)
		if r.Table == "" {
			table = mbdrv.Coil
		}
		rp = &relayPoint{table: table, addr: uint16(r.Address), on: 1, off: 0}
		if r.On != nil {
			rp.on = uint16(*r.On)
		}
		if r.Off != nil {
			rp.off = uint16(*r.Off)
		}
	}
	return points, prof, rp, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	res := d.bus.ReadAll(ctx, d.unit, d.spans)
	now := time.Now()
	vals := make(map[string]value, len(d.points))
	out := make([]sensors.Reading, 0, len(d.points)+8)
	answered := false
	var lastErr error
	for i, p := range d.points {
		v := d.decode(p, res[i])
		d.note(p.name, v.err)
		if v.err == nil || isException(v.err) || errors.Is(v.err, errNotAvailable) {
			answered = true
		}
		if v.err != nil {
			lastErr = v.err
		}
		vals[p.name] = v
		if p.internal {
			continue
		}
		switch {
		case v.err != nil:
			out = append(out, sensors.Failed(d.id, p.name, p.unit, now))
		case p.typ == mbdrv.String:
			out = append(out, sensors.Text(d.id, p.name, v.text, now))
		default:
			out = append(out, sensors.Num(d.id, p.name, v.num, p.unit, now))
		}
	}
	if d.prof != nil && d.prof.derive != nil {
		out = append(out, d.prof.derive(d.id, vals, now)...)
	}
	if d.relay != nil {
		r := res[len(d.points)]
		d.note("relay", r.Err)
		switch {
		case r.Err != nil:
			lastErr = r.Err
			out = append(out, sensors.Failed(d.id, "relay", "", now))
		default:
			answered = true
			on := 0.0
			if (len(r.Bits) > 0 && r.Bits[0]) || (len(r.Regs) > 0 && r.Regs[0] == d.relay.on) {
				on = 1
			}
			out = append(out, sensors.Num(d.id, "relay", on, "", now))
		}
	}
	if !answered && lastErr != nil {
		return out, fmt.Errorf("modbus %s: %w", d.id, lastErr)
	}
	return out, nil
}

var errNotAvailable = errors.New("not available (the device's sentinel value)")

func isException(err error) bool {
	var ex *mbdrv.Exception
	return errors.As(err, &ex)
}

func (d *Device) decode(p point, r mbdrv.Result) value {
	if r.Err != nil {
		return value{err: r.Err}
	}
	if p.span.Table.Bits() {
		if len(r.Bits) == 0 {
			return value{err: errors.New("no bits in the answer")}
		}
		if r.Bits[0] {
			return value{num: 1*p.scale + p.offset}
		}
		return value{num: p.offset}
	}
	num, text, err := mbdrv.Decode(r.Regs, p.typ, p.lowFirst)
	if err != nil {
		return value{err: err}
	}
	if p.sentinels > 0 && isSentinel(num, p.typ, p.sentinels) {
		return value{err: errNotAvailable}
	}
	if p.typ == mbdrv.String {
		return value{text: text}
	}
	return value{num: sensors.Round(num*p.scale+p.offset, 6)}
}

func isSentinel(v float64, t mbdrv.Type, n int) bool {
	var max float64
	switch t {
	case mbdrv.Uint16:
		max = math.MaxUint16
	case mbdrv.Int16:
		max = math.MaxInt16
	case mbdrv.Uint32:
		max = math.MaxUint32
	case mbdrv.Int32:
		max = math.MaxInt32
	default:
		return false
	}
	return v > max-float64(n)
}

// note logs a point's error when it starts or changes, and its recovery, so that a register a
// device lacks logs once, not at every poll.
func (d *Device) note(name string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	d.mu.Lock()
	prev := d.lastErr[name]
	if msg == "" {
		delete(d.lastErr, name)
	} else {
		d.lastErr[name] = msg
	}
	d.mu.Unlock()
	switch {
	case msg != "" && msg != prev:
		d.log.Warn("modbus read failed", "metric", name, "err", msg)
	case msg == "" && prev != "":
		d.log.Info("modbus read recovered", "metric", name)
	}
}

// Set implements sensors.Actuator for a device with a relay entry: writes the coil (FC05) or
// the holding register (FC06) through the device's bus.
func (d *Device) Set(ctx context.Context, on bool) error {
	if d.relay == nil {
		return fmt.Errorf("modbus %s: no relay entry", d.id)
	}
	var err error
	if d.relay.table == mbdrv.Coil {
		err = d.bus.WriteCoil(ctx, d.unit, d.relay.addr, on)
	} else {
		v := d.relay.off
		if on {
			v = d.relay.on
		}
		err = d.bus.WriteRegister(ctx, d.unit, d.relay.addr, v)
	}
	if err != nil {
		return fmt.Errorf("modbus %s: switch relay: %w", d.id, err)
	}
	return nil
}

// Close gives back the device's share of the bus.
func (d *Device) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.bus.Close()
}

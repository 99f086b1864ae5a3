// Package ina219 is the `ina219` device (CONTRACT.md §2): a TI INA219 shunt monitor on a DC
// feed, on /dev/i2c-N, read through drivers/ina219, giving `voltage` (V, the bus voltage on
// the load side of the shunt), `current` (A), `power` (W) and `energy` (Wh).
//
// Keys: bus ("1" for /dev/i2c-1; required), address (0x40–0x4F; default 0x40), shunt_ohms
// (required: every current and power value scales with it, so there is no guessing it),
// max_current (A; default what the shunt allows at 320 mV, e.g. 3.2 A for 0.1 Ω).
//
// energy is integrated here from power over time (trapezoids between good polls). It counts
// from 0 when the daemon starts, like a counter that resets (consumers treat it the way
// Prometheus treats a counter reset), and a gap longer than three poll intervals (failed polls,
// a stopped process) adds nothing rather than a guess.
//
// The bus is opened lazily (drivers/i2cbus), on the first poll and again after repeated
// failures, so a missing /dev/i2c-N or an unplugged chip is a failed poll (device state error,
// then stale), never a failed start. It is a copy of the sht3x folder, as every I²C chip is.
//
// It must not import daemon/ or uplink/.
package ina219

import (
	"context"
	"math"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/i2cbus"
	"github.com/rackwatch/rackwatch/drivers/ina219"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/i2cchip"
)

// Name is the driver name in configs.
const Name = "ina219"

var units = map[string]string{"voltage": "V", "current": "A", "power": "W", "energy": "Wh"}

// metrics in the order Poll returns them.
var metrics = []string{"voltage", "current", "power", "energy"}

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Class:    sensors.ClassPower,
		Options:  Options{},
		Required: []string{"bus", "shunt_ohms"},
		Metrics:  units,
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return New(spec)
		},
		// NewWithBus opens nothing: it checks the spec.
		Check: func(spec sensors.Spec) error { _, err := NewWithBus(spec, nil); return err },
	})
}

// Options are a ina219 device's keys.
type Options struct {
	Bus        string  `yaml:"bus"`     // "1" for /dev/i2c-1
	Address    int     `yaml:"address"` // 0: the chip's default
	ShuntOhms  float64 `yaml:"shunt_ohms"`
	MaxCurrent float64 `yaml:"max_current"` // A
}

// OpenBus opens the I²C bus a device sits on. Tests pass one that returns an
// i2ctest.Playback.
type OpenBus = i2cbus.Open

// HostBus opens /dev/i2c-<name> through periph.io's host drivers.
func HostBus(name string) OpenBus { return i2cbus.Host(name) }

// Device is one configured ina219.
type Device struct {
	chip i2cchip.Chip[*ina219.Dev]
	// maxGap is the longest time between two good polls that energy is integrated over.
	maxGap time.Duration

	// Updated only inside chip.Poll, whose lock guards them.
	energyWh  float64
	lastPower float64
	lastAt    time.Time // of the last good poll; zero before the first
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(sensors.Opts[Options](spec).Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	opts := sensors.Opts[Options](spec)
	ok := func(a uint16) bool { return a >= 0x40 && a <= 0x4F }
	addr, err := i2cchip.Address(opts.Address, 0x40, ok, "ina219", "an INA219 is at 0x40–0x4F")
	if err != nil {
		return nil, err
	}
	o := ina219.Opts{
		ShuntResistance: physic.ElectricResistance(math.Round(opts.ShuntOhms * float64(physic.Ohm))),
		MaxCurrent:      physic.ElectricCurrent(math.Round(opts.MaxCurrent * float64(physic.Ampere))),
	}
	// Check the shunt now: a calibration that cannot work is a config error, not a poll error.
	if _, err := ina219.Compute(o); err != nil {
		return nil, &sensors.KeyError{Key: "shunt_ohms", Err: err}
	}
	poll := spec.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	chip := func(_ context.Context, bus i2c.Bus) (*ina219.Dev, error) { return ina219.New(bus, addr, o) }
	c := i2cchip.Chip[*ina219.Dev]{ID: spec.ID, Bus: i2cbus.NewLazy(open, chip), Metrics: metrics, Units: units, Now: time.Now}
	return &Device{chip: c, maxGap: 3 * poll}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	// The chip's reads take no context, so a cancelled poll is refused before it starts.
	if err := ctx.Err(); err != nil {
		return d.chip.Failed(err)
	}
	return d.chip.Poll(ctx, func(dev *ina219.Dev) ([]sensors.Reading, error) {
		m, err := dev.Sense()
		if err != nil {
			return nil, err
		}
		id, now := d.chip.ID, d.chip.Now()
		p := float64(m.Power) / float64(physic.Watt)
		if dt := now.Sub(d.lastAt); !d.lastAt.IsZero() && dt > 0 && dt <= d.maxGap {
			d.energyWh += (d.lastPower + p) / 2 * dt.Hours()
		}
		d.lastPower, d.lastAt = p, now
		return []sensors.Reading{
			// Decimals: about the chip's resolution (4 mV, ~0.1 mA with a 0.1 Ω shunt).
			sensors.Num(id, "voltage", sensors.Round(float64(m.BusVoltage)/float64(physic.Volt), 3), units["voltage"], now),
			sensors.Num(id, "current", sensors.Round(float64(m.Current)/float64(physic.Ampere), 5), units["current"], now),
			sensors.Num(id, "power", sensors.Round(p, 4), units["power"], now),
			sensors.Num(id, "energy", sensors.Round(d.energyWh, 4), units["energy"], now),
		}, nil
	})
}

// Close implements sensors.Device.
func (d *Device) Close() error { return d.chip.Close() }

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
// The bus is opened lazily, on the first poll and again after repeated failures, so a missing
// /dev/i2c-N or an unplugged chip is a failed poll (device state error, then stale), never a
// failed start. It is a copy of the sht3x folder, as every I²C chip is.
//
// It must not import daemon/ or uplink/.
package ina219

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/host/v3"
	"periph.io/x/host/v3/sysfs"

	"github.com/rackwatch/rackwatch/drivers/ina219"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "ina219"

var units = map[string]string{"voltage": "V", "current": "A", "power": "W", "energy": "Wh"}

// metrics in the order Poll returns them.
var metrics = []string{"voltage", "current", "power", "energy"}

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Keys:     []string{"bus", "address", "shunt_ohms", "max_current"},
		Required: []string{"bus", "shunt_ohms"},
		Metrics:  units,
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return New(spec)
		},
	})
}

// reopenAfter consecutive failed polls close the bus; the next poll opens it again.
const reopenAfter = 5

// OpenBus opens the I²C bus a device sits on. Tests pass one that returns an
// i2ctest.Playback.
type OpenBus func() (i2c.BusCloser, error)

// HostBus opens /dev/i2c-<name> through periph.io's host drivers.
func HostBus(name string) OpenBus {
	return func() (i2c.BusCloser, error) {
		if _, err := host.Init(); err != nil {
			return nil, fmt.Errorf("init periph host drivers: %w", err)
		}
		b, err := i2creg.Open(name)
		if err == nil {
			return b, nil
		}
		// host.Init lists /dev/i2c-* once; a bus whose kernel module loaded later is opened
		// directly.
		if n, perr := strconv.Atoi(name); perr == nil {
			if sb, serr := sysfs.NewI2C(n); serr == nil {
				return sb, nil
			}
		}
		return nil, fmt.Errorf("open I²C bus %q: %w", name, err)
	}
}

// Device is one configured ina219.
type Device struct {
	id   string
	addr uint16
	opts ina219.Opts
	open OpenBus
	// maxGap is the longest time between two good polls that energy is integrated over.
	maxGap time.Duration
	now    func() time.Time

	mu     sync.Mutex
	bus    i2c.BusCloser
	dev    *ina219.Dev
	fails  int
	closed bool

	energyWh  float64
	lastPower float64
	lastAt    time.Time // of the last good poll; zero before the first
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(spec.Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	addr := uint16(0x40)
	if spec.Address != 0 {
		addr = uint16(spec.Address)
	}
	if addr < 0x40 || addr > 0x4F {
		return nil, fmt.Errorf("ina219: address %#x: an INA219 is at 0x40–0x4F", spec.Address)
	}
	o := ina219.Opts{
		ShuntResistance: physic.ElectricResistance(math.Round(spec.ShuntOhms * float64(physic.Ohm))),
		MaxCurrent:      physic.ElectricCurrent(math.Round(spec.MaxCurrent * float64(physic.Ampere))),
	}
	// Check the shunt now: a calibration that cannot work is a config error, not a poll error.
	if _, err := ina219.Compute(o); err != nil {
		return nil, err
	}
	poll := spec.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	return &Device{id: spec.ID, addr: addr, opts: o, open: open, maxGap: 3 * poll, now: time.Now}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	if err := d.connect(); err != nil {
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	m, err := d.dev.Sense()
	now := d.now()
	if err != nil {
		d.fails++
		if d.fails >= reopenAfter {
			d.disconnect()
		}
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	d.fails = 0
	p := float64(m.Power) / float64(physic.Watt)
	if dt := now.Sub(d.lastAt); !d.lastAt.IsZero() && dt > 0 && dt <= d.maxGap {
		d.energyWh += (d.lastPower + p) / 2 * dt.Hours()
	}
	d.lastPower, d.lastAt = p, now
	return []sensors.Reading{
		sensors.Num(d.id, "voltage", round(float64(m.BusVoltage)/float64(physic.Volt), 3), units["voltage"], now),
		sensors.Num(d.id, "current", round(float64(m.Current)/float64(physic.Ampere), 5), units["current"], now),
		sensors.Num(d.id, "power", round(p, 4), units["power"], now),
		sensors.Num(d.id, "energy", round(d.energyWh, 4), units["energy"], now),
	}, nil
}

// connect opens the bus and the sensor if they are not open. Called with mu held.
func (d *Device) connect() error {
	if d.closed {
		return errors.New("device closed")
	}
	if d.dev != nil {
		return nil
	}
	bus, err := d.open()
	if err != nil {
		return err
	}
	dev, err := ina219.New(bus, d.addr, d.opts)
	if err != nil {
		bus.Close()
		return err
	}
	d.bus, d.dev, d.fails = bus, dev, 0
	return nil
}

// disconnect closes the bus. Called with mu held.
func (d *Device) disconnect() {
	if d.bus != nil {
		d.bus.Close()
	}
	d.bus, d.dev, d.fails = nil, nil, 0
}

func (d *Device) failed() []sensors.Reading {
	now := d.now()
	out := make([]sensors.Reading, 0, len(metrics))
	for _, m := range metrics {
		out = append(out, sensors.Failed(d.id, m, units[m], now))
	}
	return out
}

// Close implements sensors.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.disconnect()
	d.closed = true
	return nil
}

// round keeps n decimals: about the chip's resolution (4 mV, ~0.1 mA with a 0.1 Ω shunt), and
// no float noise beyond it.
func round(v float64, n int) float64 {
	p := math.Pow10(n)
	return math.Round(v*p) / p
}

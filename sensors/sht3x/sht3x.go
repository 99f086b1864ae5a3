// Package sht3x is the `sht3x` device (CONTRACT.md §2): a Sensirion SHT3x inlet sensor on
// /dev/i2c-N, read through drivers/sht3x, giving `temperature` (°C) and `humidity` (%RH).
//
// Keys: bus ("1" for /dev/i2c-1; required), address (0x44 or 0x45; default 0x44).
//
// The bus is opened lazily, on the first poll and again after repeated failures, so a missing
// /dev/i2c-N or an unplugged sensor is a failed poll (device state error, then stale), never
// a failed start; a sensor plugged in later is found without a restart. The driver soft-resets
// the sensor after two failed measurements in a row; after five the bus itself is closed and
// reopened.
//
// This folder is the model for the other I²C chips (bme280, ina219): copy it to add one.
// It must not import daemon/ or uplink/.
package sht3x

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

	"github.com/rackwatch/rackwatch/drivers/sht3x"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "sht3x"

var units = map[string]string{"temperature": "°C", "humidity": "%RH"}

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Keys:     []string{"bus", "address"},
		Required: []string{"bus"},
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

// Device is one configured sht3x.
type Device struct {
	id   string
	addr uint16
	open OpenBus

	mu     sync.Mutex
	bus    i2c.BusCloser
	dev    *sht3x.Dev
	fails  int
	closed bool
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(spec.Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	addr := uint16(sht3x.AddrLow)
	if spec.Address != 0 {
		addr = uint16(spec.Address)
	}
	if addr != sht3x.AddrLow && addr != sht3x.AddrHigh {
		return nil, fmt.Errorf("sht3x: address %#x: an SHT3x is at 0x44 or 0x45", spec.Address)
	}
	return &Device{id: spec.ID, addr: addr, open: open}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.connect(); err != nil {
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	t, h, err := d.dev.Sense(ctx)
	now := time.Now()
	if err != nil {
		d.fails++
		if d.fails >= reopenAfter {
			d.disconnect()
		}
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	d.fails = 0
	return []sensors.Reading{
		sensors.Num(d.id, "temperature", round2(t.Celsius()), units["temperature"], now),
		sensors.Num(d.id, "humidity", round2(float64(h)/float64(physic.PercentRH)), units["humidity"], now),
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
	dev, err := sht3x.New(bus, d.addr)
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
	now := time.Now()
	return []sensors.Reading{
		sensors.Failed(d.id, "temperature", units["temperature"], now),
		sensors.Failed(d.id, "humidity", units["humidity"], now),
	}
}

// Close implements sensors.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.disconnect()
	d.closed = true
	return nil
}

// round2 keeps the sensor's resolution (0.01) and no float noise beyond it.
func round2(v float64) float64 { return math.Round(v*100) / 100 }

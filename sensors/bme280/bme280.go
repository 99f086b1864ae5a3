// Package bme280 is the `bme280` device (CONTRACT.md §2): a Bosch BME280 environment sensor
// on /dev/i2c-N, read through drivers/bme280, giving `temperature` (°C), `humidity` (%RH) and
// `pressure` (Pa).
//
// Keys: bus ("1" for /dev/i2c-1; required), address (0x76 or 0x77; default 0x76).
//
// The bus is opened lazily, on the first poll and again after repeated failures, so a missing
// /dev/i2c-N or an unplugged sensor is a failed poll (device state error, then stale), never
// a failed start; a sensor plugged in later is found without a restart. After five failed
// polls in a row the bus is closed, and the next poll opens it, resets the chip and reads its
// calibration again. It is a copy of the sht3x folder, as every I²C chip is.
//
// It must not import daemon/ or uplink/.
package bme280

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

	"github.com/rackwatch/rackwatch/drivers/bme280"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "bme280"

var units = map[string]string{"temperature": "°C", "humidity": "%RH", "pressure": "Pa"}

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

// Device is one configured bme280.
type Device struct {
	id   string
	addr uint16
	open OpenBus

	mu     sync.Mutex
	bus    i2c.BusCloser
	dev    *bme280.Dev
	fails  int
	closed bool
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(spec.Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	addr := uint16(bme280.AddrLow)
	if spec.Address != 0 {
		addr = uint16(spec.Address)
	}
	if addr != bme280.AddrLow && addr != bme280.AddrHigh {
		return nil, fmt.Errorf("bme280: address %#x: a BME280 is at 0x76 or 0x77", spec.Address)
	}
	return &Device{id: spec.ID, addr: addr, open: open}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.connect(ctx); err != nil {
		return d.failed(), fmt.Errorf("%s: %w", d.id, err)
	}
	m, err := d.dev.Sense(ctx)
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
		sensors.Num(d.id, "temperature", round2(m.Temperature.Celsius()), units["temperature"], now),
		sensors.Num(d.id, "humidity", round2(float64(m.Humidity)/float64(physic.PercentRH)), units["humidity"], now),
		sensors.Num(d.id, "pressure", round2(float64(m.Pressure)/float64(physic.Pascal)), units["pressure"], now),
	}, nil
}

// connect opens the bus and the sensor if they are not open. Called with mu held.
func (d *Device) connect(ctx context.Context) error {
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
	dev, err := bme280.New(ctx, bus, d.addr)
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
		sensors.Failed(d.id, "pressure", units["pressure"], now),
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

// round2 keeps 0.01 (°C, %RH, Pa): the chip's resolution, and no float noise beyond it.
func round2(v float64) float64 { return math.Round(v*100) / 100 }

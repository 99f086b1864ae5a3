// Package sht3x is the `sht3x` device (CONTRACT.md §2): a Sensirion SHT3x inlet sensor on
// /dev/i2c-N, read through drivers/sht3x, giving `temperature` (°C) and `humidity` (%RH).
//
// Keys: bus ("1" for /dev/i2c-1; required), address (0x44 or 0x45; default 0x44).
//
// The bus is opened lazily (drivers/i2cbus), on the first poll and again after repeated
// failures, so a missing /dev/i2c-N or an unplugged sensor is a failed poll (device state
// error, then stale), never a failed start; a sensor plugged in later is found without a
// restart. The driver soft-resets the sensor after two failed measurements in a row; after
// five the bus itself is closed and reopened.
//
// This folder is the model for the other I²C chips (bme280, ina219): copy it to add one, and
// keep the bus handling in drivers/i2cbus and the poll and address mechanics in
// sensors/i2cchip.
// It must not import daemon/ or uplink/.
package sht3x

import (
	"context"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/i2cbus"
	"github.com/rackwatch/rackwatch/drivers/sht3x"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/i2cchip"
)

// Name is the driver name in configs.
const Name = "sht3x"

var units = map[string]string{"temperature": "°C", "humidity": "%RH"}

// metrics in the order Poll returns them.
var metrics = []string{"temperature", "humidity"}

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Class:    sensors.ClassEnvironmental,
		Options:  Options{},
		Required: []string{"bus"},
		Metrics:  units,
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return New(spec)
		},
		// NewWithBus opens nothing: it checks the spec.
		Check: func(spec sensors.Spec) error { _, err := NewWithBus(spec, nil); return err },
	})
}

// reopenAfter consecutive failed polls close the bus; the next poll opens it again.
const reopenAfter = i2cbus.ReopenAfter

// Options are a sht3x device's keys.
type Options struct {
	Bus     string `yaml:"bus"`     // "1" for /dev/i2c-1
	Address int    `yaml:"address"` // 0: the chip's default
}

// OpenBus opens the I²C bus a device sits on. Tests pass one that returns an
// i2ctest.Playback.
type OpenBus = i2cbus.Open

// HostBus opens /dev/i2c-<name> through periph.io's host drivers.
func HostBus(name string) OpenBus { return i2cbus.Host(name) }

// Device is one configured sht3x.
type Device struct {
	chip i2cchip.Chip[*sht3x.Dev]
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(sensors.Opts[Options](spec).Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	ok := func(a uint16) bool { return a == sht3x.AddrLow || a == sht3x.AddrHigh }
	addr, err := i2cchip.Address(sensors.Opts[Options](spec).Address, sht3x.AddrLow, ok, "sht3x", "an SHT3x is at 0x44 or 0x45")
	if err != nil {
		return nil, err
	}
	chip := func(_ context.Context, bus i2c.Bus) (*sht3x.Dev, error) { return sht3x.New(bus, addr) }
	return &Device{chip: i2cchip.Chip[*sht3x.Dev]{ID: spec.ID, Bus: i2cbus.NewLazy(open, chip), Metrics: metrics, Units: units, Now: time.Now}}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	return d.chip.Poll(ctx, func(dev *sht3x.Dev) ([]sensors.Reading, error) {
		t, h, err := dev.Sense(ctx)
		if err != nil {
			return nil, err
		}
		id, now := d.chip.ID, d.chip.Now()
		return []sensors.Reading{
			sensors.Num(id, "temperature", sensors.Round(t.Celsius(), 2), units["temperature"], now),
			sensors.Num(id, "humidity", sensors.Round(float64(h)/float64(physic.PercentRH), 2), units["humidity"], now),
		}, nil
	})
}

// Close implements sensors.Device.
func (d *Device) Close() error { return d.chip.Close() }

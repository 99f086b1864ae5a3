// Package bme280 is the `bme280` device (CONTRACT.md §2): a Bosch BME280 environment sensor
// on /dev/i2c-N, read through drivers/bme280, giving `temperature` (°C), `humidity` (%RH) and
// `pressure` (Pa).
//
// Keys: bus ("1" for /dev/i2c-1; required), address (0x76 or 0x77; default 0x76).
//
// The bus is opened lazily (drivers/i2cbus), on the first poll and again after repeated
// failures, so a missing /dev/i2c-N or an unplugged sensor is a failed poll (device state
// error, then stale), never a failed start; a sensor plugged in later is found without a
// restart. After five failed polls in a row the bus is closed, and the next poll opens it,
// resets the chip and reads its calibration again. It is a copy of the sht3x folder, as every
// I²C chip is.
//
// It must not import daemon/ or uplink/.
package bme280

import (
	"context"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/bme280"
	"github.com/rackwatch/rackwatch/drivers/i2cbus"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/i2cchip"
)

// Name is the driver name in configs.
const Name = "bme280"

var units = map[string]string{"temperature": "°C", "humidity": "%RH", "pressure": "Pa"}

// metrics in the order Poll returns them.
var metrics = []string{"temperature", "humidity", "pressure"}

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

// Options are a bme280 device's keys.
type Options struct {
	Bus     string `yaml:"bus"`     // "1" for /dev/i2c-1
	Address int    `yaml:"address"` // 0: the chip's default
}

// OpenBus opens the I²C bus a device sits on. Tests pass one that returns an
// i2ctest.Playback.
type OpenBus = i2cbus.Open

// HostBus opens /dev/i2c-<name> through periph.io's host drivers.
func HostBus(name string) OpenBus { return i2cbus.Host(name) }

// Device is one configured bme280.
type Device struct {
	chip i2cchip.Chip[*bme280.Dev]
}

// New makes the device on the bus its spec names; nothing is opened until the first poll.
func New(spec sensors.Spec) (*Device, error) {
	return NewWithBus(spec, HostBus(sensors.Opts[Options](spec).Bus))
}

// NewWithBus makes the device on the bus open returns.
func NewWithBus(spec sensors.Spec, open OpenBus) (*Device, error) {
	ok := func(a uint16) bool { return a == bme280.AddrLow || a == bme280.AddrHigh }
	addr, err := i2cchip.Address(sensors.Opts[Options](spec).Address, bme280.AddrLow, ok, "bme280", "a BME280 is at 0x76 or 0x77")
	if err != nil {
		return nil, err
	}
	chip := func(ctx context.Context, bus i2c.Bus) (*bme280.Dev, error) { return bme280.New(ctx, bus, addr) }
	return &Device{chip: i2cchip.Chip[*bme280.Dev]{ID: spec.ID, Bus: i2cbus.NewLazy(open, chip), Metrics: metrics, Units: units, Now: time.Now}}, nil
}

// Poll implements sensors.Device.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	return d.chip.Poll(ctx, func(dev *bme280.Dev) ([]sensors.Reading, error) {
		m, err := dev.Sense(ctx)
		if err != nil {
			return nil, err
		}
		id, now := d.chip.ID, d.chip.Now()
		return []sensors.Reading{
			sensors.Num(id, "temperature", sensors.Round(m.Temperature.Celsius(), 2), units["temperature"], now),
			sensors.Num(id, "humidity", sensors.Round(float64(m.Humidity)/float64(physic.PercentRH), 2), units["humidity"], now),
			sensors.Num(id, "pressure", sensors.Round(float64(m.Pressure)/float64(physic.Pascal), 2), units["pressure"], now),
		}, nil
	})
}

// Close implements sensors.Device.
func (d *Device) Close() error { return d.chip.Close() }

// Package i2cchip is what every I²C chip device (sensors/sht3x, sensors/bme280,
// sensors/ina219) does the same way around its chip driver, above the bus handling of
// drivers/i2cbus: the address key (a default, and the addresses the chip can have), and the
// poll that turns any failure into every metric failed. What a chip reads and how it turns
// that into readings stays in the chip's own folder, which is still the one to copy.
//
// It must not import daemon/ or uplink/.
package i2cchip

import (
	"context"
	"fmt"
	"time"

	"github.com/rackwatch/rackwatch/drivers/i2cbus"
	"github.com/rackwatch/rackwatch/sensors"
)

// Address is the chip address that a device's address key asks for: def when the key is
// 0 (unset), and a KeyError naming the driver and where the chip can be (for example "an
// SHT3x is at 0x44 or 0x45") when ok refuses it.
func Address(key int, def uint16, ok func(uint16) bool, driver, where string) (uint16, error) {
	addr := def
	if key != 0 {
		addr = uint16(key)
	}
	if !ok(addr) {
		return 0, &sensors.KeyError{Key: "address", Err: fmt.Errorf("%s: address %#x: %s", driver, key, where)}
	}
	return addr, nil
}

// Chip is one configured chip device: its chip driver D behind a lazily opened bus, and the
// metrics a poll gives.
type Chip[D any] struct {
	ID      string
	Bus     *i2cbus.Lazy[D]
	Metrics []string          // in the order a poll returns them
	Units   map[string]string // by metric
	Now     func() time.Time  // time.Now; tests set a clock
}

// Poll calls read with the chip, under the bus's lock (state that read updates needs no lock
// of its own); read stamps its readings with Now after the chip has answered. When the bus or the chip cannot be opened, or
// read fails, the poll gives every metric failed and the error prefixed with the device id:
// a failed poll, never a value.
func (c *Chip[D]) Poll(ctx context.Context, read func(dev D) ([]sensors.Reading, error)) ([]sensors.Reading, error) {
	var out []sensors.Reading
	err := c.Bus.Do(ctx, func(dev D) error {
		rs, err := read(dev)
		out = rs
		return err
	})
	if err != nil {
		return c.Failed(err)
	}
	return out, nil
}

// Failed is a poll that failed with err: every metric failed, now.
func (c *Chip[D]) Failed(err error) ([]sensors.Reading, error) {
	return sensors.FailedAll(c.ID, c.Metrics, c.Units, c.Now()), fmt.Errorf("%s: %w", c.ID, err)
}

// Close closes the bus; every later poll fails.
func (c *Chip[D]) Close() error { return c.Bus.Close() }

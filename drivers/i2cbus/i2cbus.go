// Package i2cbus is what every I²C chip device (sensors/sht3x, sensors/bme280, sensors/ina219)
// does the same way around its chip driver: open /dev/i2c-N through periph.io's host drivers,
// and keep the bus and the chip open lazily, closing and reopening them after repeated
// failures, so a missing bus or an unplugged chip is a failed poll, never a failed start.
//
// It knows buses, not chips or readings: it must not import sensors/, daemon/ or uplink/.
package i2cbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
	"periph.io/x/host/v3/sysfs"
)

// Open opens the I²C bus a device sits on. Tests pass one that returns an i2ctest.Playback.
type Open func() (i2c.BusCloser, error)

// Host opens /dev/i2c-<name> through periph.io's host drivers.
func Host(name string) Open {
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

// ReopenAfter consecutive failed uses close the bus; the next use opens it again and makes
// the chip driver anew (which resets and re-reads the chip).
const ReopenAfter = 5

// Lazy is a chip driver D on a bus that is opened on first use, not when the device is made.
// The zero value is not usable; make one with NewLazy.
type Lazy[D any] struct {
	open Open
	chip func(ctx context.Context, bus i2c.Bus) (D, error)

	mu     sync.Mutex
	bus    i2c.BusCloser
	dev    D
	up     bool // bus and dev are open
	fails  int
	closed bool
}

// NewLazy returns a Lazy that opens the bus with open and makes the chip driver on it with
// chip; nothing is opened until the first Do.
func NewLazy[D any](open Open, chip func(ctx context.Context, bus i2c.Bus) (D, error)) *Lazy[D] {
	return &Lazy[D]{open: open, chip: chip}
}

// Do opens the bus and the chip if they are not open, then calls f with the chip. A failure
// to open is returned and does not count; an error from f counts, and ReopenAfter of them in
// a row close the bus. f runs with the Lazy's lock held, so state that f updates needs no
// lock of its own.
func (l *Lazy[D]) Do(ctx context.Context, f func(D) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.connect(ctx); err != nil {
		return err
	}
	if err := f(l.dev); err != nil {
		l.fails++
		if l.fails >= ReopenAfter {
			l.disconnect()
		}
		return err
	}
	l.fails = 0
	return nil
}

// connect opens the bus and the chip if they are not open. Called with mu held.
func (l *Lazy[D]) connect(ctx context.Context) error {
	if l.closed {
		return errors.New("device closed")
	}
	if l.up {
		return nil
	}
	bus, err := l.open()
	if err != nil {
		return err
	}
	dev, err := l.chip(ctx, bus)
	if err != nil {
		bus.Close()
		return err
	}
	l.bus, l.dev, l.up, l.fails = bus, dev, true, 0
	return nil
}

// disconnect closes the bus. Called with mu held.
func (l *Lazy[D]) disconnect() {
	if l.bus != nil {
		l.bus.Close()
	}
	var zero D
	l.bus, l.dev, l.up, l.fails = nil, zero, false, 0
}

// Close closes the bus; every later Do fails.
func (l *Lazy[D]) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.disconnect()
	l.closed = true
	return nil
}

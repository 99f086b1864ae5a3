// Package sht3x reads a Sensirion SHT30/SHT31/SHT35 temperature and humidity sensor on an I²C
// bus (periph.io/x/conn/v3/i2c.Bus), following the SHT3x-DIS datasheet (version 6, 2019):
//
//   - 4.3 / Table 9: single shot, high repeatability, clock stretching disabled (0x24 0x00);
//     without clock stretching the sensor NACKs a read until the measurement is done, so we
//     wait the maximum measurement duration of Table 4 (15 ms) before reading;
//   - 4.4: the readout is 6 bytes: temperature MSB, LSB, CRC, humidity MSB, LSB, CRC;
//   - 4.9: soft reset (0x30 0xA2), used after repeated errors to get a wedged sensor back;
//   - 4.10: heater disabled (0x30 0x66): a heated sensor reads warm and dry;
//   - 4.12: CRC-8, polynomial 0x31, init 0xFF, no final XOR, checked on every word: a word
//     with a wrong CRC is an error, never a value;
//   - 4.13: T = -45 + 175·S_T/65535 °C, RH = 100·S_RH/65535 %.
//
// It knows registers and bytes only: it must not import sensors/, daemon/ or uplink/.
package sht3x

import (
	"context"
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Addresses the sensor can have (ADDR pin low / high).
const (
	AddrLow  uint16 = 0x44
	AddrHigh uint16 = 0x45
)

// Commands (datasheet Table 9 and sections 4.9, 4.10).
var (
	cmdMeasureHigh = []byte{0x24, 0x00}
	cmdSoftReset   = []byte{0x30, 0xA2}
	cmdHeaterOff   = []byte{0x30, 0x66}
)

const (
	// measureWait is the maximum high-repeatability measurement duration (Table 4: 15 ms),
	// plus a millisecond for the host's timer slack.
	measureWait = 16 * time.Millisecond
	// resetWait is the soft reset time (Table 4: max 1.5 ms), rounded up.
	resetWait = 2 * time.Millisecond
	// resetAfter consecutive failed measurements trigger a soft reset before the next one.
	resetAfter = 2
)

// ErrCRC is returned when a word's checksum does not match: the bytes were corrupted on the
// bus, and the value must not be used.
var ErrCRC = errors.New("sht3x: CRC mismatch")

// Dev is one SHT3x. It is not safe for concurrent use; the sensor layer owns one per device.
type Dev struct {
	bus  i2c.Bus
	addr uint16
	// failures counts consecutive failed measurements.
	failures int
}

// New returns the sensor at addr on bus, with its heater switched off. It fails when the
// sensor does not acknowledge.
func New(bus i2c.Bus, addr uint16) (*Dev, error) {
	if addr != AddrLow && addr != AddrHigh {
		return nil, fmt.Errorf("sht3x: address %#x is not 0x44 or 0x45", addr)
	}
	d := &Dev{bus: bus, addr: addr}
	if err := d.bus.Tx(d.addr, cmdHeaterOff, nil); err != nil {
		return nil, fmt.Errorf("sht3x %#x: heater off: %w", addr, err)
	}
	return d, nil
}

// Sense makes one single-shot measurement. After repeated failures it soft-resets the sensor
// first.
func (d *Dev) Sense(ctx context.Context) (physic.Temperature, physic.RelativeHumidity, error) {
	if d.failures >= resetAfter {
		if err := d.reset(ctx); err != nil {
			d.failures++
			return 0, 0, err
		}
	}
	t, h, err := d.measure(ctx)
	if err != nil {
		d.failures++
		return 0, 0, err
	}
	d.failures = 0
	return t, h, nil
}

// Failures is the number of consecutive failed measurements.
func (d *Dev) Failures() int { return d.failures }

func (d *Dev) reset(ctx context.Context) error {
	if err := d.bus.Tx(d.addr, cmdSoftReset, nil); err != nil {
		return fmt.Errorf("sht3x %#x: soft reset: %w", d.addr, err)
	}
	if err := sleep(ctx, resetWait); err != nil {
		return err
	}
	if err := d.bus.Tx(d.addr, cmdHeaterOff, nil); err != nil {
		return fmt.Errorf("sht3x %#x: heater off after reset: %w", d.addr, err)
	}
	return nil
}

func (d *Dev) measure(ctx context.Context) (physic.Temperature, physic.RelativeHumidity, error) {
	if err := d.bus.Tx(d.addr, cmdMeasureHigh, nil); err != nil {
		return 0, 0, fmt.Errorf("sht3x %#x: start measurement: %w", d.addr, err)
	}
	if err := sleep(ctx, measureWait); err != nil {
		return 0, 0, err
	}
	var b [6]byte
	if err := d.bus.Tx(d.addr, nil, b[:]); err != nil {
		return 0, 0, fmt.Errorf("sht3x %#x: read measurement: %w", d.addr, err)
	}
	t, h, err := Decode(b[:])
	if err != nil {
		return 0, 0, fmt.Errorf("sht3x %#x: %w", d.addr, err)
	}
	return t, h, nil
}

// Decode checks and converts a 6-byte measurement readout (datasheet 4.4, 4.12, 4.13).
func Decode(b []byte) (physic.Temperature, physic.RelativeHumidity, error) {
	if len(b) != 6 {
		return 0, 0, fmt.Errorf("sht3x: readout is %d bytes, want 6", len(b))
	}
	if c := CRC8(b[0:2]); c != b[2] {
		return 0, 0, fmt.Errorf("%w: temperature word %02x%02x has CRC %#02x, computed %#02x", ErrCRC, b[0], b[1], b[2], c)
	}
	if c := CRC8(b[3:5]); c != b[5] {
		return 0, 0, fmt.Errorf("%w: humidity word %02x%02x has CRC %#02x, computed %#02x", ErrCRC, b[3], b[4], b[5], c)
	}
	st := int64(b[0])<<8 | int64(b[1])
	srh := int64(b[3])<<8 | int64(b[4])
	// Integer arithmetic in the units' own resolution keeps the conversion exact to the
	// nanokelvin and the 0.00001 %RH, with no float rounding to argue about in tests.
	t := physic.ZeroCelsius - 45*physic.Celsius + physic.Temperature(175*st*int64(physic.Celsius)/65535)
	h := physic.RelativeHumidity(100 * srh * int64(physic.PercentRH) / 65535)
	return t, h, nil
}

// CRC8 is the datasheet's checksum (4.12): polynomial 0x31 (x⁸+x⁵+x⁴+1), init 0xFF, no
// reflection, no final XOR. CRC8([]byte{0xBE, 0xEF}) is 0x92.
func CRC8(data []byte) byte {
	crc := byte(0xFF)
	for _, b := range data {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sht3x: waiting for the sensor: %w", ctx.Err())
	}
}

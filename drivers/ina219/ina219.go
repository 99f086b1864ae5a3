// Package ina219 reads a Texas Instruments INA219 current and power monitor on an I²C bus
// (periph.io/x/conn/v3/i2c.Bus), following the INA219 datasheet (SBOS448G):
//
//   - 8.5.1 / 8.6.2.1 configuration register (00h): 32 V bus range, 12-bit single-sample
//     conversions of shunt and bus voltage, continuous; the PGA range is the smallest of
//     ±40/80/160/320 mV that holds max_current × shunt_ohms, for the best resolution;
//   - 8.5.1 calibration (05h): Current_LSB = max_current / 2¹⁵,
//     Cal = trunc(0.04096 / (Current_LSB × R_shunt)), Power_LSB = 20 × Current_LSB. Bit 0 of
//     the register is void, so the Cal written is even, and the LSBs used to scale the
//     registers are computed back from the Cal actually written (0.04096 / (Cal × R_shunt)):
//     that is the arithmetic the chip does, so the scaling is exact;
//   - 8.6.3.1 shunt voltage (01h): signed, 10 µV per bit;
//   - 8.6.3.2 bus voltage (02h): bits 15–3 × 4 mV; bit 0 OVF, the math overflow flag: current
//     or power out of range, so this measurement is an error, never a value;
//   - 8.6.3.3 / 8.6.3.4 power (03h) and current (04h), scaled by Power_LSB and Current_LSB.
//
// The calibration register is read back on every measurement: a brown-out resets the chip to
// Cal = 0, after which it silently reports 0 A and 0 W; we notice, reprogram it and report an
// error for that one measurement.
//
// Values are periph.io/x/conn/v3/physic units. It knows registers and bytes only: it must not
// import sensors/, daemon/ or uplink/.
package ina219

import (
	"errors"
	"fmt"
	"math"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Registers (datasheet 8.6, Table 2).
const (
	regConfig      = 0x00
	regShunt       = 0x01
	regBus         = 0x02
	regPower       = 0x03
	regCurrent     = 0x04
	regCalibration = 0x05
)

const (
	cfgBRNG32V    = 1 << 13
	cfgADC12bit   = 0b0011
	cfgContinuous = 0b111 // shunt and bus, continuous
	busOVF        = 1 << 0

	// calCoeff is the datasheet's 0.04096: an internal fixed value that scales the calibration.
	calCoeff = 0.04096
)

// pgaRanges are the full-scale shunt voltages of PG = 00, 01, 10, 11.
var pgaRanges = [4]physic.ElectricPotential{40 * physic.MilliVolt, 80 * physic.MilliVolt, 160 * physic.MilliVolt, 320 * physic.MilliVolt}

// ErrOverflow is the math overflow flag: current or power out of the range the calibration
// allows. The reading must not be used.
var ErrOverflow = errors.New("ina219: math overflow flag set (current or power out of range: check max_current and shunt_ohms)")

// Opts describe the shunt.
type Opts struct {
	// ShuntResistance is the shunt resistor's value; required.
	ShuntResistance physic.ElectricResistance
	// MaxCurrent is the largest current expected; 0 means what the shunt allows at the widest
	// PGA range, 320 mV / ShuntResistance.
	MaxCurrent physic.ElectricCurrent
}

// Settings are the register values and scales computed from Opts.
type Settings struct {
	Config      uint16
	Calibration uint16
	CurrentLSB  float64 // amperes per bit of the current register
	PowerLSB    float64 // watts per bit of the power register
}

// Compute derives the configuration and calibration from the shunt (datasheet 8.5.1).
func Compute(o Opts) (Settings, error) {
	if o.ShuntResistance <= 0 {
		return Settings{}, fmt.Errorf("ina219: shunt resistance must be positive, got %v", o.ShuntResistance)
	}
	r := float64(o.ShuntResistance) / float64(physic.Ohm)
	maxI := float64(o.MaxCurrent) / float64(physic.Ampere)
	if o.MaxCurrent == 0 {
		maxI = 0.32 / r
	}
	if maxI <= 0 {
		return Settings{}, fmt.Errorf("ina219: max current must be positive, got %v", o.MaxCurrent)
	}
	vShunt := physic.ElectricPotential(maxI * r * float64(physic.Volt))
	pg := -1
	for i, fs := range pgaRanges {
		if vShunt <= fs {
			pg = i
			break
		}
	}
	if pg < 0 {
		return Settings{}, fmt.Errorf("ina219: %.3g A through %.3g Ω drops %v, beyond the 320 mV the chip measures: use a smaller shunt", maxI, r, vShunt)
	}
	currentLSB := maxI / (1 << 15)
	// The tiny epsilon keeps a value the datasheet means to be exact (4096, 20480) from
	// truncating to one less through float rounding.
	cal := math.Trunc(calCoeff/(currentLSB*r) + 1e-9)
	cal = float64(uint32(cal) &^ 1) // bit 0 is void
	if cal < 2 || cal > 0xFFFE {
		return Settings{}, fmt.Errorf("ina219: calibration %v is outside the register (max_current %.3g A, shunt %.3g Ω do not fit)", cal, maxI, r)
	}
	lsb := calCoeff / (cal * r)
	return Settings{
		Config:      cfgBRNG32V | uint16(pg)<<11 | cfgADC12bit<<7 | cfgADC12bit<<3 | cfgContinuous,
		Calibration: uint16(cal),
		CurrentLSB:  lsb,
		PowerLSB:    20 * lsb,
	}, nil
}

// Measurement is one reading of the four result registers.
type Measurement struct {
	BusVoltage   physic.ElectricPotential
	ShuntVoltage physic.ElectricPotential
	Current      physic.ElectricCurrent
	Power        physic.Power
}

// Dev is one INA219. It is not safe for concurrent use; the sensor layer owns one per device.
type Dev struct {
	bus  i2c.Bus
	addr uint16
	set  Settings
}

// New programs the chip at addr (0x40–0x4F) for the shunt described by o.
func New(bus i2c.Bus, addr uint16, o Opts) (*Dev, error) {
	if addr < 0x40 || addr > 0x4F {
		return nil, fmt.Errorf("ina219: address %#x is not in 0x40–0x4F", addr)
	}
	s, err := Compute(o)
	if err != nil {
		return nil, err
	}
	d := &Dev{bus: bus, addr: addr, set: s}
	if err := d.program(); err != nil {
		return nil, err
	}
	return d, nil
}

// Settings returns the register values in use.
func (d *Dev) Settings() Settings { return d.set }

func (d *Dev) program() error {
	if err := d.write(regConfig, d.set.Config); err != nil {
		return fmt.Errorf("ina219 %#x: write configuration: %w", d.addr, err)
	}
	if err := d.write(regCalibration, d.set.Calibration); err != nil {
		return fmt.Errorf("ina219 %#x: write calibration: %w", d.addr, err)
	}
	return nil
}

// Sense reads the latest conversion.
func (d *Dev) Sense() (Measurement, error) {
	cal, err := d.read(regCalibration)
	if err != nil {
		return Measurement{}, fmt.Errorf("ina219 %#x: read calibration: %w", d.addr, err)
	}
	if cal != d.set.Calibration {
		if err := d.program(); err != nil {
			return Measurement{}, err
		}
		return Measurement{}, fmt.Errorf("ina219 %#x: calibration was %#04x, not %#04x (chip reset?): reprogrammed", d.addr, cal, d.set.Calibration)
	}
	bus, err := d.read(regBus)
	if err != nil {
		return Measurement{}, fmt.Errorf("ina219 %#x: read bus voltage: %w", d.addr, err)
	}
	if bus&busOVF != 0 {
		return Measurement{}, fmt.Errorf("ina219 %#x: %w", d.addr, ErrOverflow)
	}
	shunt, err := d.read(regShunt)
	if err != nil {
		return Measurement{}, fmt.Errorf("ina219 %#x: read shunt voltage: %w", d.addr, err)
	}
	current, err := d.read(regCurrent)
	if err != nil {
		return Measurement{}, fmt.Errorf("ina219 %#x: read current: %w", d.addr, err)
	}
	power, err := d.read(regPower)
	if err != nil {
		return Measurement{}, fmt.Errorf("ina219 %#x: read power: %w", d.addr, err)
	}
	return d.set.Scale(bus, shunt, current, power), nil
}

// Scale turns raw register contents into a measurement (datasheet 8.6.3).
func (s Settings) Scale(bus, shunt, current, power uint16) Measurement {
	return Measurement{
		BusVoltage:   physic.ElectricPotential(bus>>3) * 4 * physic.MilliVolt,
		ShuntVoltage: physic.ElectricPotential(int16(shunt)) * 10 * physic.MicroVolt,
		Current:      physic.ElectricCurrent(math.Round(float64(int16(current)) * s.CurrentLSB * float64(physic.Ampere))),
		Power:        physic.Power(math.Round(float64(power) * s.PowerLSB * float64(physic.Watt))),
	}
}

func (d *Dev) read(reg byte) (uint16, error) {
	var b [2]byte
	if err := d.bus.Tx(d.addr, []byte{reg}, b[:]); err != nil {
		return 0, err
	}
	return uint16(b[0])<<8 | uint16(b[1]), nil
}

func (d *Dev) write(reg byte, v uint16) error {
	return d.bus.Tx(d.addr, []byte{reg, byte(v >> 8), byte(v)}, nil)
}

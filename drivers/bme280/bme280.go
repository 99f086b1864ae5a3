// Package bme280 reads a Bosch BME280 temperature, pressure and humidity sensor on an I²C bus
// (periph.io/x/conn/v3/i2c.Bus), following the BME280 datasheet (BST-BME280-DS002):
//
//   - 5.4.1 chip id (0xD0 = 0x60) checked before anything else, so a BMP280 (0x58, no humidity)
//     or another chip at the address is refused rather than misread;
//   - 5.4.2 soft reset (0xE0 ← 0xB6), then 5.4.4 status im_update cleared before the
//     calibration is read;
//   - 4.2.2 / Table 16 trimming parameters: 0x88–0xA1 and 0xE1–0xE7, including the 12-bit
//     dig_H4 and dig_H5 that share register 0xE5;
//   - 5.4.3 ctrl_hum (0xF2) written before 5.4.5 ctrl_meas (0xF4), because ctrl_hum only takes
//     effect on the next ctrl_meas write; oversampling ×1 on all three, 5.4.6 config filter off:
//     the "weather monitoring" setting of 3.5.1, right for a value read every few seconds;
//   - 3.3.3 forced mode: one measurement per Sense, the chip sleeps in between (no self-heating);
//     we wait the maximum measurement time of 9.1 (Appendix B) and then poll status.measuring;
//   - 5.4.7–5.4.9 burst read of 0xF7–0xFE in one transaction, so the three values belong to
//     the same measurement (the shadowing of 4.1);
//   - 4.2.3 compensation formulas, the integer versions (32-bit temperature and humidity,
//     64-bit pressure): exact, so the datasheet's worked values are exact test vectors.
//
// It knows registers and bytes only: it must not import sensors/, daemon/ or uplink/.
package bme280

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Addresses the chip can have (SDO to GND / VDDIO).
const (
	AddrLow  uint16 = 0x76
	AddrHigh uint16 = 0x77
)

// Registers (datasheet Table 18).
const (
	regCalib1   = 0x88 // 0x88–0xA1, 26 bytes
	regChipID   = 0xD0
	regReset    = 0xE0
	regCalib2   = 0xE1 // 0xE1–0xE7, 7 bytes
	regCtrlHum  = 0xF2
	regStatus   = 0xF3
	regCtrlMeas = 0xF4
	regConfig   = 0xF5
	regData     = 0xF7 // 0xF7–0xFE, 8 bytes

	chipID    = 0x60
	resetWord = 0xB6

	statusMeasuring = 1 << 3
	statusImUpdate  = 1 << 0

	osrsX1     = 1
	modeForced = 1
	ctrlHum    = osrsX1                             // osrs_h ×1
	ctrlMeas   = osrsX1<<5 | osrsX1<<2 | modeForced // osrs_t ×1, osrs_p ×1, forced
	config     = 0                                  // t_sb unused in forced mode, filter off, no SPI 3-wire
)

const (
	// startupWait is the start-up time after a reset (Table 1: 2 ms).
	startupWait = 2 * time.Millisecond
	// measureWait is the maximum measurement time with ×1 oversampling on all three
	// (9.1: 1.25 + 2.3 + 2.3 + 0.575 + 2.3 + 0.575 = 9.3 ms), rounded up.
	measureWait = 10 * time.Millisecond
	// pollWait is how long to wait between reads of status when the chip is still busy, and
	// pollTries how often, before giving up on a measurement.
	pollWait  = 2 * time.Millisecond
	pollTries = 10
)

// Calibration holds the chip's trimming parameters (datasheet Table 16).
type Calibration struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1                             uint8
	H2                             int16
	H3                             uint8
	H4, H5                         int16
	H6                             int8
}

// ParseCalibration decodes the two calibration blocks: 26 bytes from 0x88 and 7 bytes from
// 0xE1 (Table 16).
func ParseCalibration(b1, b2 []byte) (Calibration, error) {
	if len(b1) != 26 || len(b2) != 7 {
		return Calibration{}, fmt.Errorf("bme280: calibration blocks are %d and %d bytes, want 26 and 7", len(b1), len(b2))
	}
	le := binary.LittleEndian
	s16 := func(i int) int16 { return int16(le.Uint16(b1[i:])) }
	c := Calibration{
		T1: le.Uint16(b1[0:]), T2: s16(2), T3: s16(4),
		P1: le.Uint16(b1[6:]), P2: s16(8), P3: s16(10), P4: s16(12), P5: s16(14),
		P6: s16(16), P7: s16(18), P8: s16(20), P9: s16(22),
		H1: b1[25], // 0xA1; 0xA0 is unused
		H2: int16(le.Uint16(b2[0:])),
		H3: b2[2],
		// dig_H4 is 0xE4[7:0] / 0xE5[3:0], dig_H5 is 0xE6[7:0] / 0xE5[7:4]: signed 12-bit, the
		// sign carried by the signed high byte.
		H4: int16(int8(b2[3]))<<4 | int16(b2[4]&0x0F),
		H5: int16(int8(b2[5]))<<4 | int16(b2[4]>>4),
		H6: int8(b2[6]),
	}
	// An erased or absent chip reads all zeros or all ones; dig_T1 and dig_P1 are never
	// either on a real part, and dig_P1 = 0 would divide by zero below.
	if c.T1 == 0 || c.P1 == 0 || c.T1 == 0xFFFF || c.P1 == 0xFFFF {
		return Calibration{}, fmt.Errorf("bme280: calibration looks blank (dig_T1=%d, dig_P1=%d)", c.T1, c.P1)
	}
	return c, nil
}

// Raw is one uncompensated measurement.
type Raw struct {
	T, P int32 // 20-bit
	H    int32 // 16-bit
}

// Skipped values: what the chip reports for a measurement that did not run (5.4.7–5.4.9).
const (
	skippedTP = 0x80000
	skippedH  = 0x8000
)

// ParseData decodes the 8 data bytes from 0xF7.
func ParseData(b []byte) (Raw, error) {
	if len(b) != 8 {
		return Raw{}, fmt.Errorf("bme280: data block is %d bytes, want 8", len(b))
	}
	r := Raw{
		P: int32(b[0])<<12 | int32(b[1])<<4 | int32(b[2])>>4,
		T: int32(b[3])<<12 | int32(b[4])<<4 | int32(b[5])>>4,
		H: int32(b[6])<<8 | int32(b[7]),
	}
	if r.T == skippedTP || r.P == skippedTP || r.H == skippedH {
		return Raw{}, fmt.Errorf("bme280: measurement skipped (raw T=%#x P=%#x H=%#x): the chip was reset or not configured", r.T, r.P, r.H)
	}
	return r, nil
}

// Measurement is one compensated reading.
type Measurement struct {
	Temperature physic.Temperature
	Pressure    physic.Pressure
	Humidity    physic.RelativeHumidity
}

// Compensate applies the datasheet's integer formulas (4.2.3) to a raw measurement.
func (c *Calibration) Compensate(r Raw) (Measurement, error) {
	t100, tFine := c.temperature(r.T)
	pQ8, err := c.pressure(r.P, tFine)
	if err != nil {
		return Measurement{}, err
	}
	hQ10 := c.humidity(r.H, tFine)
	// Outside the chip's operating range (datasheet Table 1: -40…85 °C, 300…1100 hPa) a value
	// is not a measurement but a garbled read or a broken part: say so instead of reporting it.
	if t100 < -4000 || t100 > 8500 {
		return Measurement{}, fmt.Errorf("bme280: temperature %.2f °C is outside -40…85 °C: bad read", float64(t100)/100)
	}
	if pa := pQ8 / 256; pa < 30000 || pa > 110000 {
		return Measurement{}, fmt.Errorf("bme280: pressure %d Pa is outside 300…1100 hPa: bad read", pa)
	}
	return Measurement{
		// T is in 0.01 °C, p in Q24.8 Pa, h in Q22.10 %RH.
		Temperature: physic.ZeroCelsius + physic.Temperature(t100)*10*physic.MilliCelsius,
		Pressure:    physic.Pressure(int64(pQ8) * int64(physic.Pascal) / 256),
		Humidity:    physic.RelativeHumidity(int64(hQ10) * int64(physic.PercentRH) / 1024),
	}, nil
}

// temperature is BME280_compensate_T_int32: returns T in 0.01 °C and t_fine.
func (c *Calibration) temperature(adcT int32) (int32, int32) {
	t1, t2, t3 := int32(c.T1), int32(c.T2), int32(c.T3)
	var1 := ((adcT>>3 - t1<<1) * t2) >> 11
	var2 := (((adcT>>4 - t1) * (adcT>>4 - t1)) >> 12 * t3) >> 14
	tFine := var1 + var2
	return (tFine*5 + 128) >> 8, tFine
}

// pressure is BME280_compensate_P_int64: returns p in Pa as Q24.8.
func (c *Calibration) pressure(adcP, tFine int32) (uint32, error) {
	var1 := int64(tFine) - 128000
	var2 := var1 * var1 * int64(c.P6)
	var2 += (var1 * int64(c.P5)) << 17
	var2 += int64(c.P4) << 35
	var1 = (var1*var1*int64(c.P3))>>8 + (var1*int64(c.P2))<<12
	var1 = ((int64(1)<<47 + var1) * int64(c.P1)) >> 33
	if var1 == 0 {
		// The datasheet returns 0 here to avoid a division by zero; 0 Pa is a value, and a
		// wrong one: report it as the error it is.
		return 0, errors.New("bme280: pressure compensation divides by zero (bad calibration)")
	}
	p := int64(1048576 - adcP)
	p = ((p<<31 - var2) * 3125) / var1
	var1 = (int64(c.P9) * (p >> 13) * (p >> 13)) >> 25
	var2 = (int64(c.P8) * p) >> 19
	p = (p+var1+var2)>>8 + int64(c.P7)<<4
	return uint32(p), nil
}

// humidity is bme280_compensate_H_int32: returns %RH as Q22.10.
func (c *Calibration) humidity(adcH, tFine int32) uint32 {
	h1, h2, h3 := int32(c.H1), int32(c.H2), int32(c.H3)
	h4, h5, h6 := int32(c.H4), int32(c.H5), int32(c.H6)
	v := tFine - 76800
	v = ((((adcH << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) *
		(((((((v*h6)>>10)*(((v*h3)>>11)+32768))>>10)+2097152)*h2 + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4
	if v < 0 {
		v = 0
	}
	if v > 419430400 {
		v = 419430400
	}
	return uint32(v >> 12)
}

// Dev is one BME280. It is not safe for concurrent use; the sensor layer owns one per device.
type Dev struct {
	bus  i2c.Bus
	addr uint16
	cal  Calibration
}

// New checks the chip id, resets the chip, reads its calibration and configures it. It fails
// when the chip does not answer or is not a BME280.
func New(ctx context.Context, bus i2c.Bus, addr uint16) (*Dev, error) {
	if addr != AddrLow && addr != AddrHigh {
		return nil, fmt.Errorf("bme280: address %#x is not 0x76 or 0x77", addr)
	}
	d := &Dev{bus: bus, addr: addr}
	var id [1]byte
	if err := d.bus.Tx(addr, []byte{regChipID}, id[:]); err != nil {
		return nil, fmt.Errorf("bme280 %#x: read chip id: %w", addr, err)
	}
	if id[0] != chipID {
		return nil, fmt.Errorf("bme280 %#x: chip id is %#02x, want %#02x (0x58 is a BMP280, which has no humidity)", addr, id[0], chipID)
	}
	if err := d.bus.Tx(addr, []byte{regReset, resetWord}, nil); err != nil {
		return nil, fmt.Errorf("bme280 %#x: reset: %w", addr, err)
	}
	if err := sleep(ctx, startupWait); err != nil {
		return nil, err
	}
	if err := d.waitStatus(ctx, statusImUpdate, "calibration copy"); err != nil {
		return nil, err
	}
	var b1 [26]byte
	var b2 [7]byte
	if err := d.bus.Tx(addr, []byte{regCalib1}, b1[:]); err != nil {
		return nil, fmt.Errorf("bme280 %#x: read calibration 0x88: %w", addr, err)
	}
	if err := d.bus.Tx(addr, []byte{regCalib2}, b2[:]); err != nil {
		return nil, fmt.Errorf("bme280 %#x: read calibration 0xE1: %w", addr, err)
	}
	cal, err := ParseCalibration(b1[:], b2[:])
	if err != nil {
		return nil, fmt.Errorf("bme280 %#x: %w", addr, err)
	}
	d.cal = cal
	// config is only writable in sleep mode, which is where the chip is after reset.
	if err := d.bus.Tx(addr, []byte{regConfig, config}, nil); err != nil {
		return nil, fmt.Errorf("bme280 %#x: write config: %w", addr, err)
	}
	return d, nil
}

// Calibration returns the chip's trimming parameters.
func (d *Dev) Calibration() Calibration { return d.cal }

// Sense runs one forced-mode measurement.
func (d *Dev) Sense(ctx context.Context) (Measurement, error) {
	// ctrl_hum and ctrl_meas in one transaction, in that order (register/value pairs, 6.2.1).
	// Writing ctrl_hum every time also restores it if the chip was reset by a brown-out.
	if err := d.bus.Tx(d.addr, []byte{regCtrlHum, ctrlHum, regCtrlMeas, ctrlMeas}, nil); err != nil {
		return Measurement{}, fmt.Errorf("bme280 %#x: start forced measurement: %w", d.addr, err)
	}
	if err := sleep(ctx, measureWait); err != nil {
		return Measurement{}, err
	}
	if err := d.waitStatus(ctx, statusMeasuring, "measurement"); err != nil {
		return Measurement{}, err
	}
	var b [8]byte
	if err := d.bus.Tx(d.addr, []byte{regData}, b[:]); err != nil {
		return Measurement{}, fmt.Errorf("bme280 %#x: read data: %w", d.addr, err)
	}
	raw, err := ParseData(b[:])
	if err != nil {
		return Measurement{}, fmt.Errorf("bme280 %#x: %w", d.addr, err)
	}
	m, err := d.cal.Compensate(raw)
	if err != nil {
		return Measurement{}, fmt.Errorf("bme280 %#x: %w", d.addr, err)
	}
	return m, nil
}

// waitStatus reads the status register until bit is clear.
func (d *Dev) waitStatus(ctx context.Context, bit byte, what string) error {
	var st [1]byte
	for range pollTries {
		if err := d.bus.Tx(d.addr, []byte{regStatus}, st[:]); err != nil {
			return fmt.Errorf("bme280 %#x: read status: %w", d.addr, err)
		}
		if st[0]&bit == 0 {
			return nil
		}
		if err := sleep(ctx, pollWait); err != nil {
			return err
		}
	}
	return fmt.Errorf("bme280 %#x: %s not finished after %d status reads (status %#02x)", d.addr, what, pollTries, st[0])
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bme280: waiting for the chip: %w", ctx.Err())
	}
}

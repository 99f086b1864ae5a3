package ina219

import (
	"bufio"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

func ohms(r float64) physic.ElectricResistance {
	return physic.ElectricResistance(r * float64(physic.Ohm))
}
func amps(a float64) physic.ElectricCurrent {
	return physic.ElectricCurrent(a * float64(physic.Ampere))
}

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r, max   float64
		config   uint16
		cal      uint16
		lsb      float64
		wantFail bool
	}{
		// Datasheet Table 3: Current_LSB 1 mA, Cal 20480; 65.5 mV full scale needs PG /2.
		{"datasheet", 0.002, 32.768, 0x299F, 20480, 1e-3, false},
		// Default max current 3.2 A: Cal = trunc(4194.304) = 4194, PG /8: the power-on config.
		{"default max", 0.1, 0, 0x399F, 4194, 0.04096 / (4194 * 0.1), false},
		// 1 A through 0.1 Ω is 100 mV: PG /4. Cal = trunc(13421.77) = 13421, bit 0 cleared.
		{"1A", 0.1, 1, 0x319F, 13420, 0.04096 / (13420 * 0.1), false},
		// 10 mA through 0.1 Ω is 1 mV: PG /1.
		{"10mA", 0.1, 0.01, 0x219F, 0, 0, true}, // Cal 1342177 does not fit 16 bits
		{"too much current", 0.01, 40, 0, 0, 0, true},
		{"no shunt", 0, 1, 0, 0, 0, true},
		{"negative current", 0.1, -1, 0, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compute(Opts{ShuntResistance: ohms(tc.r), MaxCurrent: amps(tc.max)})
			if tc.wantFail {
				if err == nil {
					t.Fatalf("accepted: %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Config != tc.config || s.Calibration != tc.cal {
				t.Errorf("config %#04x cal %d, want %#04x %d", s.Config, s.Calibration, tc.config, tc.cal)
			}
			if math.Abs(s.CurrentLSB-tc.lsb) > 1e-12 || math.Abs(s.PowerLSB-20*tc.lsb) > 1e-12 {
				t.Errorf("LSBs %g A, %g W; want %g, %g", s.CurrentLSB, s.PowerLSB, tc.lsb, 20*tc.lsb)
			}
		})
	}
}

type regCase struct {
	name                       string
	r, max                     float64
	config, cal                uint16
	bus, shunt, current, power uint16
	busV, shuntMV, amps, watts float64
}

func loadCases(t testing.TB) []regCase {
	t.Helper()
	f, err := os.Open("testdata/registers.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []regCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var fs []string
		for _, x := range strings.Fields(line) {
			if x != "|" {
				fs = append(fs, x)
			}
		}
		if len(fs) != 13 {
			t.Fatalf("%q: %d fields", line, len(fs))
		}
		fl := func(i int) float64 {
			v, err := strconv.ParseFloat(fs[i], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return v
		}
		hx := func(i int) uint16 {
			v, err := strconv.ParseUint(fs[i], 16, 16)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return uint16(v)
		}
		out = append(out, regCase{fs[0], fl(1), fl(2), hx(3), hx(4), hx(5), hx(6), hx(7), hx(8), fl(9), fl(10), fl(11), fl(12)})
	}
	return out
}

func be(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// TestSensePlayback programs the chip and reads each case of testdata/registers.txt through
// the exact register transactions.
func TestSensePlayback(t *testing.T) {
	cases := loadCases(t)
	if len(cases) < 3 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: []i2ctest.IO{
				{Addr: 0x40, W: append([]byte{0x00}, be(c.config)...)},
				{Addr: 0x40, W: append([]byte{0x05}, be(c.cal)...)},
				{Addr: 0x40, W: []byte{0x05}, R: be(c.cal)},
				{Addr: 0x40, W: []byte{0x02}, R: be(c.bus)},
				{Addr: 0x40, W: []byte{0x01}, R: be(c.shunt)},
				{Addr: 0x40, W: []byte{0x04}, R: be(c.current)},
				{Addr: 0x40, W: []byte{0x03}, R: be(c.power)},
			}, DontPanic: true}
			d, err := New(bus, 0x40, Opts{ShuntResistance: ohms(c.r), MaxCurrent: amps(c.max)})
			if err != nil {
				t.Fatal(err)
			}
			m, err := d.Sense()
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want, tol float64) {
				if math.Abs(got-want) > tol {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("bus voltage V", float64(m.BusVoltage)/float64(physic.Volt), c.busV, 1e-9)
			check("shunt voltage mV", float64(m.ShuntVoltage)/float64(physic.MilliVolt), c.shuntMV, 1e-9)
			check("current A", float64(m.Current)/float64(physic.Ampere), c.amps, 1e-5)
			check("power W", float64(m.Power)/float64(physic.Watt), c.watts, 1e-5)
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOverflowIsError(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x41, W: []byte{0x00, 0x29, 0x9F}},
		{Addr: 0x41, W: []byte{0x05, 0x50, 0x00}},
		{Addr: 0x41, W: []byte{0x05}, R: []byte{0x50, 0x00}},
		{Addr: 0x41, W: []byte{0x02}, R: []byte{0x5D, 0x9B}}, // CNVR and OVF set
	}, DontPanic: true}
	d, err := New(bus, 0x41, Opts{ShuntResistance: ohms(0.002), MaxCurrent: amps(32.768)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.Sense()
	if !errors.Is(err, ErrOverflow) {
		t.Fatalf("err = %v, want ErrOverflow", err)
	}
	if m != (Measurement{}) {
		t.Fatalf("a value came with the overflow: %+v", m)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCalibrationLost: after a brown-out the chip's Cal is 0 and it reports 0 A. The driver
// notices, reprograms, reports an error for that measurement, and reads normally next time.
func TestCalibrationLost(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x00, 0x29, 0x9F}},
		{Addr: 0x40, W: []byte{0x05, 0x50, 0x00}},
		{Addr: 0x40, W: []byte{0x05}, R: []byte{0x00, 0x00}}, // lost
		{Addr: 0x40, W: []byte{0x00, 0x29, 0x9F}},
		{Addr: 0x40, W: []byte{0x05, 0x50, 0x00}},
		{Addr: 0x40, W: []byte{0x05}, R: []byte{0x50, 0x00}},
		{Addr: 0x40, W: []byte{0x02}, R: be(0x5D98)},
		{Addr: 0x40, W: []byte{0x01}, R: be(0x07D0)},
		{Addr: 0x40, W: []byte{0x04}, R: be(0x2710)},
		{Addr: 0x40, W: []byte{0x03}, R: be(0x1766)},
	}, DontPanic: true}
	d, err := New(bus, 0x40, Opts{ShuntResistance: ohms(0.002), MaxCurrent: amps(32.768)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sense(); err == nil {
		t.Fatal("lost calibration not reported")
	}
	m, err := d.Sense()
	if err != nil {
		t.Fatal(err)
	}
	if m.Current != 10*physic.Ampere {
		t.Fatalf("current %v", m.Current)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewErrors(t *testing.T) {
	o := Opts{ShuntResistance: ohms(0.1)}
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x50, o); err == nil {
		t.Error("address 0x50 accepted")
	}
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x40, o); err == nil {
		t.Error("a chip that does not answer was accepted")
	}
}

// FuzzScale: any register contents scale without a panic, within the registers' ranges.
func FuzzScale(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add(c.bus, c.shunt, c.current, c.power)
	}
	s, err := Compute(Opts{ShuntResistance: ohms(0.1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, bus, shunt, current, power uint16) {
		m := s.Scale(bus, shunt, current, power)
		if m.BusVoltage < 0 || m.BusVoltage > 32760*physic.MilliVolt {
			t.Fatalf("bus voltage %v", m.BusVoltage)
		}
		if m.ShuntVoltage < -327680*physic.MicroVolt || m.ShuntVoltage > 327670*physic.MicroVolt {
			t.Fatalf("shunt voltage %v", m.ShuntVoltage)
		}
		if m.Power < 0 {
			t.Fatalf("power %v", m.Power)
		}
	})
}

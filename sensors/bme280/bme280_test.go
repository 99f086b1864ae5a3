package bme280

import (
	"context"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/rackwatch/rackwatch/drivers/i2cbus/i2cbustest"
	"github.com/rackwatch/rackwatch/sensors"
)

// The capture in drivers/bme280/testdata/capture-0x76.txt.
var (
	calib1 = i2cbustest.Hex("106e6c6632005d95b8d5d00b771e9dfff9ffac260ad8bd10004b")
	calib2 = i2cbustest.Hex("6e01001305001e")
	data   = i2cbustest.Hex("4a52c08096c07a76")
)

func startOps(addr uint16, id byte) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xD0}, R: []byte{id}},
		{Addr: addr, W: []byte{0xE0, 0xB6}},
		{Addr: addr, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: addr, W: []byte{0x88}, R: calib1},
		{Addr: addr, W: []byte{0xE1}, R: calib2},
		{Addr: addr, W: []byte{0xF5, 0x00}},
	}
}

func senseOps(addr uint16, d []byte) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xF2, 0x01, 0xF4, 0x25}},
		{Addr: addr, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: addr, W: []byte{0xF7}, R: d},
	}
}

func byMetric(t *testing.T, rs []sensors.Reading) map[string]sensors.Reading {
	t.Helper()
	m := map[string]sensors.Reading{}
	for _, r := range rs {
		m[r.Metric] = r
		if r.Unit != units[r.Metric] {
			t.Errorf("%s unit %q", r.Metric, r.Unit)
		}
	}
	if len(m) != 3 {
		t.Fatalf("readings %+v", rs)
	}
	return m
}

func TestPoll(t *testing.T) {
	ops := append(startOps(0x77, 0x60), senseOps(0x77, data)...)
	// A skipped measurement (chip reset behind our back): an error, never a value.
	ops = append(ops, senseOps(0x77, i2cbustest.Hex("8000008000008000"))...)
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	bs := &i2cbustest.Buses{List: []*i2ctest.Playback{bus}}
	d, err := NewWithBus(sensors.Spec{ID: "inlet-b", Driver: Name, Options: Options{Bus: "1", Address: 0x77}}, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := byMetric(t, rs)
	for metric, want := range map[string]float64{"temperature": 23.72, "humidity": 65.31, "pressure": 100942.7} {
		if r := m[metric]; r.Value != want || r.Quality != sensors.Good || r.Device != "inlet-b" {
			t.Errorf("%s: %+v, want %v", metric, r, want)
		}
	}
	rs, err = d.Poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "skipped") {
		t.Fatalf("err = %v", err)
	}
	for _, r := range byMetric(t, rs) {
		if r.Quality != sensors.Error {
			t.Errorf("%+v", r)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWrongChipThenRight: a BMP280 at the address (no humidity) is refused with a poll error;
// the next poll tries again from the start.
func TestWrongChipThenRight(t *testing.T) {
	wrong := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x58}}}, DontPanic: true}
	right := &i2ctest.Playback{Ops: append(startOps(0x76, 0x60), senseOps(0x76, data)...), DontPanic: true}
	bs := &i2cbustest.Buses{List: []*i2ctest.Playback{wrong, right}}
	d, err := NewWithBus(sensors.Spec{ID: "inlet-b", Options: Options{Bus: "1"}}, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "chip id") {
		t.Fatalf("err = %v", err)
	}
	rs, err := d.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if byMetric(t, rs)["temperature"].Value != 23.72 {
		t.Fatalf("%+v", rs)
	}
	for _, b := range bs.List {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpecErrors(t *testing.T) {
	if _, err := New(sensors.Spec{ID: "x", Options: Options{Bus: "1", Address: 0x44}}); err == nil {
		t.Fatal("address 0x44 accepted")
	}
	d, err := New(sensors.Spec{ID: "x", Options: Options{Bus: "99"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Poll(context.Background()); err == nil {
		t.Fatal("poll of /dev/i2c-99 succeeded")
	}
	d.Close()
}

func TestRegistered(t *testing.T) {
	drv, ok := sensors.Lookup(Name)
	if !ok || drv.New == nil || drv.Metrics["pressure"] != "Pa" {
		t.Fatalf("%+v", drv)
	}
}

package sht3x

import (
	"context"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/rackwatch/rackwatch/drivers/i2cbus/i2cbustest"
	"github.com/rackwatch/rackwatch/sensors"
)

func byMetric(t *testing.T, rs []sensors.Reading) map[string]sensors.Reading {
	t.Helper()
	m := map[string]sensors.Reading{}
	for _, r := range rs {
		m[r.Metric] = r
	}
	if len(m) != 2 || m["temperature"].Unit != "°C" || m["humidity"].Unit != "%RH" {
		t.Fatalf("readings %+v", rs)
	}
	return m
}

func TestPoll(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x45, W: []byte{0x30, 0x66}},
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: i2cbustest.Hex("5f5cfc6b8541")},
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: i2cbustest.Hex("5f5dfc6b8541")}, // corrupted: CRC mismatch
	}, DontPanic: true}
	bs := &i2cbustest.Buses{List: []*i2ctest.Playback{bus}}
	d, err := NewWithBus(sensors.Spec{ID: "inlet-a", Driver: Name, Options: Options{Bus: "1", Address: 0x45}}, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := byMetric(t, rs)
	if r := m["temperature"]; r.Value != 20.19 || r.Quality != sensors.Good || r.Device != "inlet-a" {
		t.Errorf("temperature %+v", r)
	}
	if r := m["humidity"]; r.Value != 42 || r.Quality != sensors.Good {
		t.Errorf("humidity %+v", r)
	}

	// A CRC mismatch is an error reading, never a value.
	rs, err = d.Poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("err = %v, want a CRC error", err)
	}
	for _, r := range byMetric(t, rs) {
		if r.Quality != sensors.Error || r.JSONValue() != nil {
			t.Errorf("after a CRC error: %+v", r)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Poll(context.Background()); err == nil {
		t.Fatal("poll after Close succeeded")
	}
}

// TestMissingBusThenPresent: no /dev/i2c-N is a poll error, and the bus is tried again on the
// next poll, so a sensor that appears later is read without a restart.
func TestMissingBusThenPresent(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0x30, 0x66}},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
		{Addr: 0x44, R: i2cbustest.Hex("6666938000a2")},
	}, DontPanic: true}
	bs := &i2cbustest.Buses{}
	d, err := NewWithBus(sensors.Spec{ID: "inlet-a", Options: Options{Bus: "7"}}, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Poll(context.Background())
	if err == nil || !strings.Contains(err.Error(), "inlet-a") {
		t.Fatalf("err = %v", err)
	}
	for _, r := range byMetric(t, rs) {
		if r.Quality != sensors.Error {
			t.Errorf("%+v", r)
		}
	}
	bs.List = append(bs.List, nil, bus) // the second open finds the bus
	rs, err = d.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if byMetric(t, rs)["temperature"].Value != 25 {
		t.Fatalf("%+v", rs)
	}
	if bs.Opens != 2 {
		t.Fatalf("opens = %d", bs.Opens)
	}
}

// TestReopenAfterRepeatedErrors: five failed polls in a row close the bus; the next poll opens
// it again and re-initialises the sensor.
func TestReopenAfterRepeatedErrors(t *testing.T) {
	ops := []i2ctest.IO{{Addr: 0x44, W: []byte{0x30, 0x66}}}
	bad := i2cbustest.Hex("ffffffffffff")
	for i := range reopenAfter {
		if i >= 2 { // the driver soft-resets before each try after two failures
			ops = append(ops, i2ctest.IO{Addr: 0x44, W: []byte{0x30, 0xA2}}, i2ctest.IO{Addr: 0x44, W: []byte{0x30, 0x66}})
		}
		ops = append(ops, i2ctest.IO{Addr: 0x44, W: []byte{0x24, 0x00}}, i2ctest.IO{Addr: 0x44, R: bad})
	}
	first := &i2ctest.Playback{Ops: ops, DontPanic: true}
	second := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0x30, 0x66}},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
		{Addr: 0x44, R: i2cbustest.Hex("6666938000a2")},
	}, DontPanic: true}
	bs := &i2cbustest.Buses{List: []*i2ctest.Playback{first, second}}
	d, err := NewWithBus(sensors.Spec{ID: "x", Options: Options{Bus: "1"}}, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	for i := range reopenAfter {
		if _, err := d.Poll(context.Background()); err == nil {
			t.Fatalf("poll %d succeeded", i)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bs.Opens != 2 {
		t.Fatalf("opens = %d", bs.Opens)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSpecErrors(t *testing.T) {
	if _, err := New(sensors.Spec{ID: "x", Options: Options{Bus: "1", Address: 0x76}}); err == nil {
		t.Fatal("address 0x76 accepted")
	}
	// A bus that does not exist on this machine: made, and its polls fail.
	d, err := New(sensors.Spec{ID: "x", Options: Options{Bus: "99"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Poll(context.Background()); err == nil {
		t.Fatal("poll of /dev/i2c-99 succeeded")
	}
}

func TestRegistered(t *testing.T) {
	drv, ok := sensors.Lookup(Name)
	if !ok || drv.New == nil || drv.Metrics["temperature"] != "°C" || drv.Metrics["humidity"] != "%RH" {
		t.Fatalf("%+v", drv)
	}
	dev, err := sensors.New(sensors.Spec{ID: "inlet-a", Driver: Name, Options: Options{Bus: "99", Address: 0x44}}, sensors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
}

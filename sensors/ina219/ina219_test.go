package ina219

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/rackwatch/rackwatch/drivers/i2cbus/i2cbustest"
	"github.com/rackwatch/rackwatch/sensors"
)

func be(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// Datasheet SBOS448G Table 3: 2 mΩ, Current_LSB 1 mA (max 32.768 A), 11.98 V, 10 A, 119.8 W.
var table3 = sensors.Spec{ID: "feed-a", Driver: Name, Poll: time.Second, Options: Options{Bus: "1", Address: 0x40, ShuntOhms: 0.002, MaxCurrent: 32.768}}

func program() []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x00, 0x29, 0x9F}},
		{Addr: 0x40, W: []byte{0x05, 0x50, 0x00}},
	}
}

func sense(bus, shunt, current, power uint16) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x05}, R: be(0x5000)},
		{Addr: 0x40, W: []byte{0x02}, R: be(bus)},
		{Addr: 0x40, W: []byte{0x01}, R: be(shunt)},
		{Addr: 0x40, W: []byte{0x04}, R: be(current)},
		{Addr: 0x40, W: []byte{0x03}, R: be(power)},
	}
}

func values(t *testing.T, rs []sensors.Reading, q sensors.Quality) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, r := range rs {
		if r.Unit != units[r.Metric] || r.Quality != q || r.Device != "feed-a" {
			t.Errorf("reading %+v", r)
		}
		m[r.Metric] = r.Value
	}
	if len(m) != 4 {
		t.Fatalf("readings %+v", rs)
	}
	return m
}

// TestPollAndEnergy reads the datasheet's example three times on a controlled clock: energy
// is the trapezoid sum of power over the good polls, and a gap longer than three poll
// intervals adds nothing.
func TestPollAndEnergy(t *testing.T) {
	var ops []i2ctest.IO
	ops = append(ops, program()...)
	ops = append(ops, sense(0x5D98, 0x07D0, 0x2710, 0x1766)...) // 119.8 W
	ops = append(ops, sense(0x5D98, 0x07D0, 0x2710, 0x1766)...) // 119.8 W, 1 s later
	ops = append(ops, sense(0x5D98, 0x03E8, 0x1388, 0x0BB3)...) // 59.9 W, 1 s later
	ops = append(ops, sense(0x5D98, 0x03E8, 0x1388, 0x0BB3)...) // after 10 s: a gap
	ops = append(ops, sense(0x5D9B, 0, 0, 0)[:2]...)            // overflow flag: nothing more is read
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	bs := &i2cbustest.Buses{List: []*i2ctest.Playback{bus}}
	d, err := NewWithBus(table3, bs.Open)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.chip.Now = func() time.Time { return clock }
	ctx := context.Background()

	poll := func() map[string]float64 {
		t.Helper()
		rs, err := d.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return values(t, rs, sensors.Good)
	}
	v := poll()
	want := map[string]float64{"voltage": 11.98, "current": 10, "power": 119.8, "energy": 0}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
	clock = clock.Add(time.Second)
	if e := poll()["energy"]; e != math.Round(119.8/3600*1e4)/1e4 {
		t.Errorf("energy after 1 s at 119.8 W = %v", e)
	}
	clock = clock.Add(time.Second)
	v = poll()
	if v["current"] != 5 || v["power"] != 59.9 {
		t.Errorf("%+v", v)
	}
	wantWh := (119.8 + (119.8+59.9)/2) / 3600
	if e := v["energy"]; math.Abs(e-wantWh) > 1e-4 {
		t.Errorf("energy = %v, want %v", e, wantWh)
	}
	clock = clock.Add(10 * time.Second)
	if e := poll()["energy"]; math.Abs(e-wantWh) > 1e-4 {
		t.Errorf("energy after a gap = %v, want still %v", e, wantWh)
	}

	rs, err := d.Poll(ctx)
	if err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("err = %v, want the overflow", err)
	}
	values(t, rs, sensors.Error)
	for _, r := range rs {
		if r.JSONValue() != nil {
			t.Errorf("overflow gave a value: %+v", r)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSpecErrors(t *testing.T) {
	for _, o := range []Options{
		{Bus: "1", Address: 0x50, ShuntOhms: 0.1},
		{Bus: "1"}, // no shunt
		{Bus: "1", ShuntOhms: 0.01, MaxCurrent: 40}, // 400 mV across the shunt
	} {
		s := sensors.Spec{ID: "feed-a", Options: o}
		if _, err := New(s); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	d, err := New(sensors.Spec{ID: "feed-a", Options: Options{Bus: "99", ShuntOhms: 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Poll(context.Background())
	if err == nil {
		t.Fatal("poll of /dev/i2c-99 succeeded")
	}
	values(t, rs, sensors.Error)
	d.Close()
}

func TestRegistered(t *testing.T) {
	drv, ok := sensors.Lookup(Name)
	if !ok || drv.New == nil || drv.Metrics["energy"] != "Wh" || len(drv.Required) != 2 {
		t.Fatalf("%+v", drv)
	}
}

package sht3x

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/i2cbus/i2cbustest"
)

func TestCRC8(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want byte
	}{
		{[]byte{0xBE, 0xEF}, 0x92}, // datasheet 4.12, Table 20
		{[]byte{0x00, 0x00}, 0x81},
		{[]byte{0xFF, 0xFF}, 0xAC},
	} {
		if got := CRC8(tc.in); got != tc.want {
			t.Errorf("CRC8(% x) = %#02x, want %#02x", tc.in, got, tc.want)
		}
	}
}

// TestDecodeGolden runs every readout in testdata/readouts.txt.
func TestDecodeGolden(t *testing.T) {
	f, err := os.Open("testdata/readouts.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n++
		fields := strings.Fields(line)
		b, err := hex.DecodeString(fields[0])
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		temp, rh, err := Decode(b)
		if fields[1] == "crc" {
			if !errors.Is(err, ErrCRC) {
				t.Errorf("%s: got %v %v err=%v, want a CRC error", fields[0], temp, rh, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", fields[0], err)
			continue
		}
		wantT, _ := strconv.ParseFloat(fields[1], 64)
		wantH, _ := strconv.ParseFloat(fields[2], 64)
		if got := temp.Celsius(); math.Abs(got-wantT) > 0.00001 {
			t.Errorf("%s: temperature %v °C, want %v", fields[0], got, wantT)
		}
		if got := float64(rh) / float64(physic.PercentRH); math.Abs(got-wantH) > 0.00001 {
			t.Errorf("%s: humidity %v %%RH, want %v", fields[0], got, wantH)
		}
	}
	if n < 5 {
		t.Fatalf("only %d readouts in testdata", n)
	}
}

func TestDecodeLength(t *testing.T) {
	for _, n := range []int{0, 3, 5, 7} {
		if _, _, err := Decode(make([]byte, n)); err == nil {
			t.Errorf("Decode of %d bytes: no error", n)
		}
	}
}

// TestSensePlayback checks the exact bus transactions of start-up and one measurement.
func TestSensePlayback(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0x30, 0x66}},             // heater off
		{Addr: 0x44, W: []byte{0x24, 0x00}},             // single shot, high repeatability, no stretching
		{Addr: 0x44, R: i2cbustest.Hex("5f5cfc6b8541")}, // readout after the wait
	}, DontPanic: true}
	d, err := New(bus, 0x44)
	if err != nil {
		t.Fatal(err)
	}
	temp, rh, err := d.Sense(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := temp.Celsius(); math.Abs(got-20.18807) > 0.00001 {
		t.Errorf("temperature %v", got)
	}
	if got := float64(rh) / float64(physic.PercentRH); math.Abs(got-42.00046) > 0.00001 {
		t.Errorf("humidity %v", got)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptCRCThenReset: a corrupted readout is an error and no value; after two failures in
// a row the next measurement soft-resets the sensor first, and a good readout resets the count.
func TestCorruptCRCThenReset(t *testing.T) {
	bad := i2cbustest.Hex("6667938000a2")
	good := i2cbustest.Hex("6666938000a2")
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x45, W: []byte{0x30, 0x66}},
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: bad},
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: bad},
		{Addr: 0x45, W: []byte{0x30, 0xA2}}, // soft reset
		{Addr: 0x45, W: []byte{0x30, 0x66}}, // heater off again
		{Addr: 0x45, W: []byte{0x24, 0x00}},
		{Addr: 0x45, R: good},
		{Addr: 0x45, W: []byte{0x24, 0x00}}, // no reset: the count went back to 0
		{Addr: 0x45, R: good},
	}, DontPanic: true}
	d, err := New(bus, 0x45)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		temp, rh, err := d.Sense(ctx)
		if !errors.Is(err, ErrCRC) {
			t.Fatalf("measurement %d: err = %v, want ErrCRC", i, err)
		}
		if temp != 0 || rh != 0 {
			t.Fatalf("measurement %d: a value came with the error: %v %v", i, temp, rh)
		}
	}
	if d.Failures() != 2 {
		t.Fatalf("failures = %d", d.Failures())
	}
	for i := range 2 {
		temp, _, err := d.Sense(ctx)
		if err != nil {
			t.Fatalf("after reset %d: %v", i, err)
		}
		if temp.Celsius() != 25 {
			t.Fatalf("temperature %v", temp)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x40); err == nil {
		t.Error("address 0x40 accepted")
	}
	// Nothing acknowledges: the playback has no transaction to give.
	if _, err := New(&i2ctest.Playback{DontPanic: true}, 0x44); err == nil {
		t.Error("New without an answering sensor succeeded")
	}
}

func TestSenseCancelled(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0x30, 0x66}},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
	}, DontPanic: true}
	d, err := New(bus, 0x44)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := d.Sense(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// FuzzDecode: any 6 bytes from the bus give a value in the sensor's range or an error, never
// a panic, and never a value whose CRC does not match.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"6666938000a2", "000081000081", "ffffacffffac", "6667938000a2", "ffffffffffff"} {
		f.Add(i2cbustest.Hex(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		temp, rh, err := Decode(b)
		if err != nil {
			return
		}
		if CRC8(b[0:2]) != b[2] || CRC8(b[3:5]) != b[5] {
			t.Fatalf("% x accepted with a bad CRC", b)
		}
		if c := temp.Celsius(); c < -45 || c > 130 {
			t.Fatalf("% x: temperature %v out of range", b, c)
		}
		if rh < 0 || rh > 100*physic.PercentRH {
			t.Fatalf("% x: humidity %v out of range", b, rh)
		}
	})
}

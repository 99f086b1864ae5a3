package i2cbus

import (
	"context"
	"errors"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// opener hands out fresh playbacks, or an error while missing is set, counting the opens
// and the closes of what it handed out.
type opener struct {
	missing bool
	opens   int
	buses   []*bus
}

// bus is a playback with no operations that remembers being closed.
type bus struct {
	*i2ctest.Playback
	closes int
}

func (b *bus) Close() error {
	b.closes++
	return b.Playback.Close()
}

func (o *opener) open() (i2c.BusCloser, error) {
	o.opens++
	if o.missing {
		return nil, errors.New("no such bus")
	}
	b := &bus{Playback: &i2ctest.Playback{DontPanic: true}}
	o.buses = append(o.buses, b)
	return b, nil
}

// chip is a stand-in chip driver: the bus it was made on and a serial number.
type chip struct {
	bus i2c.Bus
	n   int
}

func TestLazy(t *testing.T) {
	o := &opener{missing: true}
	made := 0
	var failChip bool
	l := NewLazy(o.open, func(_ context.Context, bus i2c.Bus) (*chip, error) {
		if failChip {
			return nil, errors.New("no ack")
		}
		made++
		return &chip{bus: bus, n: made}, nil
	})
	if o.opens != 0 {
		t.Fatalf("opened %d times before the first use", o.opens)
	}
	ctx := context.Background()
	ok := func(c *chip) error { return nil }
	bad := func(c *chip) error { return errors.New("bad crc") }

	// A missing bus fails each use and is tried again each time.
	for range 2 {
		if err := l.Do(ctx, ok); err == nil {
			t.Fatal("use of a missing bus succeeded")
		}
	}
	if o.opens != 2 {
		t.Fatalf("opens = %d, want 2", o.opens)
	}

	// A chip that does not answer closes the bus it was tried on.
	o.missing, failChip = false, true
	if err := l.Do(ctx, ok); err == nil {
		t.Fatal("use with a failing chip succeeded")
	}
	if len(o.buses) != 1 || !closed(o.buses[0]) {
		t.Fatalf("bus of a failed chip not closed: %d buses", len(o.buses))
	}

	// Then it answers: one open serves many uses, and a good use resets the failure count.
	failChip = false
	var first *chip
	if err := l.Do(ctx, func(c *chip) error { first = c; return nil }); err != nil {
		t.Fatal(err)
	}
	for range ReopenAfter - 1 {
		if err := l.Do(ctx, bad); err == nil {
			t.Fatal("bad use succeeded")
		}
	}
	if err := l.Do(ctx, func(c *chip) error {
		if c != first {
			t.Errorf("chip made again after %d failures", ReopenAfter-1)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if o.opens != 4 || made != 1 {
		t.Fatalf("opens = %d, chips = %d, want 4, 1", o.opens, made)
	}

	// ReopenAfter failures in a row close the bus; the next use opens a new one.
	for range ReopenAfter {
		if err := l.Do(ctx, bad); err == nil {
			t.Fatal("bad use succeeded")
		}
	}
	if !closed(o.buses[1]) {
		t.Fatalf("bus not closed after %d failures", ReopenAfter)
	}
	if err := l.Do(ctx, func(c *chip) error {
		if c == first || c.bus != i2c.Bus(o.buses[2]) {
			t.Errorf("chip %d on the old bus after a reopen", c.n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if o.opens != 5 || made != 2 {
		t.Fatalf("opens = %d, chips = %d, want 5, 2", o.opens, made)
	}

	// Close closes the bus, and later uses fail without opening anything.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !closed(o.buses[2]) {
		t.Fatal("Close left the bus open")
	}
	if err := l.Do(ctx, ok); err == nil {
		t.Fatal("use after Close succeeded")
	}
	if o.opens != 5 {
		t.Fatalf("opens = %d after Close, want 5", o.opens)
	}
}

func closed(b *bus) bool { return b.closes == 1 }

func TestHostMissingBus(t *testing.T) {
	if _, err := Host("99")(); err == nil {
		t.Fatal("opened /dev/i2c-99")
	}
}

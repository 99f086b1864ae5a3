package relay

import (
	"context"
	"fmt"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/rackwatch/rackwatch/sensors"
)

func level(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

func polled(t *testing.T, r *Relay) float64 {
	t.Helper()
	rs, err := r.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Metric != "relay" || rs[0].Quality != sensors.Good {
		t.Fatalf("%+v", rs)
	}
	return rs[0].Value
}

// TestSafeStateAtStartCrashAndStop: for each wiring, the relay is in its safe state when made,
// switches on Set, is back in its safe state when a new process makes it again after a crash
// (the old one dropped without Close), and at a clean Close.
func TestSafeStateAtStartCrashAndStop(t *testing.T) {
	for _, tc := range []struct {
		active, safe string
		safeLevel    gpio.Level // the line level of the safe state
	}{
		{"high", "off", gpio.Low},
		{"high", "on", gpio.High},
		{"low", "off", gpio.High},
		{"low", "on", gpio.Low},
		{"", "", gpio.Low}, // defaults: active high, safe off
	} {
		t.Run(fmt.Sprintf("active=%s,safe=%s", tc.active, tc.safe), func(t *testing.T) {
			// The line starts at the opposite of safe, as a previous run might have left it.
			pin := &gpiotest.Pin{N: "GPIO27", Num: 27, L: !tc.safeLevel}
			spec := sensors.Spec{ID: "genset", Driver: Name, Options: Options{Pin: "GPIO27", Active: tc.active, SafeState: tc.safe}}
			r, err := NewWithPin(spec, pin)
			if err != nil {
				t.Fatal(err)
			}
			if level(pin) != tc.safeLevel {
				t.Fatalf("at start the line is %v, want %v", level(pin), tc.safeLevel)
			}
			safe := tc.safe == "on"
			if got := polled(t, r); got != b2f(safe) {
				t.Fatalf("at start relay = %v", got)
			}

			// Switch away from safe.
			if err := r.Set(context.Background(), !safe); err != nil {
				t.Fatal(err)
			}
			if level(pin) == tc.safeLevel || polled(t, r) != b2f(!safe) || r.On() != !safe {
				t.Fatalf("after Set(%v) the line is %v", !safe, level(pin))
			}

			// Crash: r is dropped without Close; a new process makes the relay again.
			r2, err := NewWithPin(spec, pin)
			if err != nil {
				t.Fatal(err)
			}
			if level(pin) != tc.safeLevel || polled(t, r2) != b2f(safe) {
				t.Fatalf("after the restart the line is %v, want %v", level(pin), tc.safeLevel)
			}

			// Clean stop from the non-safe state.
			if err := r2.Set(context.Background(), !safe); err != nil {
				t.Fatal(err)
			}
			if err := r2.Close(); err != nil {
				t.Fatal(err)
			}
			if level(pin) != tc.safeLevel {
				t.Fatalf("after Close the line is %v, want %v", level(pin), tc.safeLevel)
			}
			if err := r2.Set(context.Background(), !safe); err == nil {
				t.Fatal("Set after Close succeeded")
			}
			if level(pin) != tc.safeLevel {
				t.Fatal("Set after Close moved the line")
			}
			if _, err := r2.Poll(context.Background()); err == nil {
				t.Fatal("Poll after Close succeeded")
			}
		})
	}
}

func TestSpecErrors(t *testing.T) {
	for _, o := range []Options{
		{Pin: "GPIO27", Active: "sideways"},
		{Pin: "GPIO27", SafeState: "maybe"},
	} {
		s := sensors.Spec{ID: "r", Options: o}
		if _, err := NewWithPin(s, &gpiotest.Pin{}); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	// A line that cannot be driven: the safe state cannot be applied, so no relay.
	if _, err := NewWithPin(sensors.Spec{ID: "r", Options: Options{Pin: "x"}}, gpio.INVALID); err == nil {
		t.Error("an undrivable line was accepted")
	}
	// No such line on this machine.
	if _, err := New(sensors.Spec{ID: "r", Options: Options{Pin: "GPIO_NO_SUCH_LINE_999"}}); err == nil {
		t.Error("a missing line was accepted")
	}
}

func TestCancelledSet(t *testing.T) {
	pin := &gpiotest.Pin{N: "GPIO23"}
	r, err := NewWithPin(sensors.Spec{ID: "crac2", Options: Options{Pin: "GPIO23"}}, pin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Set(ctx, true); err == nil || level(pin) != gpio.Low {
		t.Fatalf("cancelled Set: err %v, line %v", err, level(pin))
	}
}

func TestRegistered(t *testing.T) {
	drv, ok := sensors.Lookup(Name)
	if !ok || drv.New == nil || len(drv.Required) != 1 {
		t.Fatalf("%+v", drv)
	}
	var _ sensors.Actuator = (*Relay)(nil)
}

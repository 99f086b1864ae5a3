package contact

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
)

// recorder collects what Watch emits, with when.
type recorder struct {
	mu  sync.Mutex
	got []float64
	at  []time.Time
}

func (r *recorder) emit(rs []sensors.Reading) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range rs {
		r.got = append(r.got, x.Value)
		r.at = append(r.at, time.Now())
	}
}

func (r *recorder) values() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.got...)
}

func (r *recorder) time(i int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[i]
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// watch starts Watch on c and stops it at the end of the test.
func watch(t *testing.T, c *Contact) *recorder {
	t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, rec.emit) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	})
	return rec
}

func newPin() *gpiotest.Pin {
	// Unbuffered: each edge is handed to Watch before the test goes on.
	return &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level)}
}

func polled(t *testing.T, c *Contact) float64 {
	t.Helper()
	rs, err := c.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Metric != "contact" || rs[0].Quality != sensors.Good || rs[0].Device != "door" {
		t.Fatalf("%+v", rs)
	}
	return rs[0].Value
}

// TestBounceIsOneChange is the "done when": a contact that bounces for less than its
// debounce produces one change, not several; a glitch that ends where it started produces
// none. Every emission is recorded, and a last clean change proves nothing else came. The
// debounce is long (300 ms) so that the test, not the code, never stalls between two bounces
// for longer than a debounce on a loaded machine.
func TestBounceIsOneChange(t *testing.T) {
	for _, active := range []string{"high", "low"} {
		t.Run("active="+active, func(t *testing.T) {
			pin := newPin()
			c, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO17", Active: active, Debounce: 300 * time.Millisecond}}, pin)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Edges() {
				t.Fatal("edge detection not used")
			}
			on, off := gpio.High, gpio.Low
			if active == "low" {
				on, off = gpio.Low, gpio.High
			}
			// The bias holds the open contact inactive.
			if polled(t, c) != 0 {
				t.Fatal("open contact reads active")
			}
			rec := watch(t, c)

			// A glitch: active for a moment, back to inactive, within the debounce. Let it
			// settle (no edge for a whole debounce, and then some) before going on.
			pin.EdgesChan <- on
			pin.EdgesChan <- off
			testpeer.Eventually(t, 10*time.Second, "the glitch to settle", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return time.Since(c.lastEdge) > c.debounce+50*time.Millisecond
			})
			// The contact closes and bounces, settling active.
			for range 4 {
				pin.EdgesChan <- on
				pin.EdgesChan <- off
			}
			pin.EdgesChan <- on
			lastEdge := time.Now()
			testpeer.Eventually(t, 10*time.Second, "the change to active", func() bool { return len(rec.values()) >= 1 })
			latency := rec.time(0).Sub(lastEdge)
			t.Logf("change emitted %v after the last edge (debounce %v)", latency, c.debounce)
			if latency > c.debounce+2*time.Second {
				t.Errorf("emitted %v after the last edge", latency)
			}
			if polled(t, c) != 1 {
				t.Error("Poll disagrees with the emitted change")
			}

			// The contact opens cleanly.
			pin.EdgesChan <- off
			testpeer.Eventually(t, 10*time.Second, "the change to inactive", func() bool { return len(rec.values()) >= 2 })
			if got := rec.values(); !equal(got, []float64{1, 0}) {
				t.Fatalf("emitted %v, want exactly [1 0]", got)
			}
		})
	}
}

// TestLatency measures edge → emitted change over a few changes. The bound is
// debounce + 10 ms; the assertion leaves room for a loaded CI machine and the race detector,
// the log shows the real figure.
func TestLatency(t *testing.T) {
	pin := newPin()
	c, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO17", Debounce: 20 * time.Millisecond}}, pin)
	if err != nil {
		t.Fatal(err)
	}
	rec := watch(t, c)
	var lat []time.Duration
	level := gpio.High
	for i := range 10 {
		pin.EdgesChan <- level
		sent := time.Now()
		testpeer.Eventually(t, 10*time.Second, "a change", func() bool { return len(rec.values()) > i })
		lat = append(lat, rec.time(i).Sub(sent))
		level = !level
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("debounce 20ms: latency min %v, median %v, max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > c.debounce+time.Second {
		t.Errorf("median latency %v", lat[len(lat)/2])
	}
	if got := rec.values(); !equal(got, []float64{1, 0, 1, 0, 1, 0, 1, 0, 1, 0}) {
		t.Fatalf("emitted %v", got)
	}
}

// TestPollCatchesMissedEdge: the line changes without an edge event (the kernel dropped it);
// the periodic Poll still reports the new state, with or without a running Watch, and a level
// that does not hold for the debounce is not believed.
func TestPollCatchesMissedEdge(t *testing.T) {
	for _, watching := range []bool{false, true} {
		pin := newPin()
		c, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO17", Debounce: 30 * time.Millisecond}}, pin)
		if err != nil {
			t.Fatal(err)
		}
		var rec *recorder
		if watching {
			rec = watch(t, c)
		}
		pin.Out(gpio.High) // no edge
		if polled(t, c) != 1 {
			t.Fatalf("watching=%v: missed edge not caught by Poll", watching)
		}
		pin.Out(gpio.Low)
		if polled(t, c) != 0 {
			t.Fatalf("watching=%v: second missed edge not caught", watching)
		}
		if rec != nil && len(rec.values()) != 0 {
			t.Fatalf("Watch emitted %v without edges", rec.values())
		}
	}
}

// TestSampledLine: a line that cannot report edges is sampled by Watch.
func TestSampledLine(t *testing.T) {
	pin := &gpiotest.Pin{N: "GPIO22"} // no EdgesChan: In with edges fails
	c, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO22", Debounce: 20 * time.Millisecond}}, pin)
	if err != nil {
		t.Fatal(err)
	}
	if c.Edges() {
		t.Fatal("edges claimed on a line without them")
	}
	rec := watch(t, c)
	pin.Out(gpio.High)
	testpeer.Eventually(t, 10*time.Second, "the sampled change", func() bool { return len(rec.values()) == 1 })
	pin.Out(gpio.Low)
	testpeer.Eventually(t, 10*time.Second, "the second sampled change", func() bool { return len(rec.values()) == 2 })
	if got := rec.values(); !equal(got, []float64{1, 0}) {
		t.Fatalf("emitted %v", got)
	}
}

func TestSpecErrors(t *testing.T) {
	for _, o := range []Options{
		{Pin: "GPIO17", Active: "sideways"},
		{Pin: "GPIO17", Debounce: -time.Millisecond},
	} {
		s := sensors.Spec{ID: "door", Options: o}
		if _, err := NewWithPin(s, newPin()); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if _, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "x"}}, gpio.INVALID); err == nil {
		t.Error("an unusable line was accepted")
	}
	if _, err := New(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO_NO_SUCH_LINE_999"}}); err == nil {
		t.Error("a missing line was accepted")
	}
	c, err := NewWithPin(sensors.Spec{ID: "door", Options: Options{Pin: "GPIO17"}}, newPin())
	if err != nil {
		t.Fatal(err)
	}
	if c.debounce != DefaultDebounce {
		t.Errorf("debounce %v", c.debounce)
	}
	c.Close()
	if _, err := c.Poll(context.Background()); err == nil {
		t.Error("Poll after Close succeeded")
	}
	if err := c.Watch(context.Background(), func([]sensors.Reading) {}); err == nil {
		t.Error("Watch after Close succeeded")
	}
}

func TestRegistered(t *testing.T) {
	drv, ok := sensors.Lookup(Name)
	if !ok || drv.New == nil {
		t.Fatalf("%+v", drv)
	}
	var _ sensors.Watcher = (*Contact)(nil)
}

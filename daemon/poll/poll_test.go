package poll

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

type flaky struct {
	mu   sync.Mutex
	fail bool
	n    int
}

func (f *flaky) Poll(ctx context.Context) ([]sensors.Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.fail {
		return nil, errors.New("no answer")
	}
	return []sensors.Reading{sensors.Num("d", "temperature", 21, "°C", time.Now())}, nil
}
func (f *flaky) Close() error { return nil }

func (f *flaky) set(fail bool) { f.mu.Lock(); f.fail = fail; f.mu.Unlock() }

type collector struct {
	mu  sync.Mutex
	res []Result
}

func (c *collector) sink(r Result) { c.mu.Lock(); c.res = append(c.res, r); c.mu.Unlock() }
func (c *collector) last() (Result, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.res) == 0 {
		return Result{}, 0
	}
	return c.res[len(c.res)-1], len(c.res)
}

func waitState(t *testing.T, c *collector, want sensors.DeviceState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, _ := c.last(); r.State == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	r, _ := c.last()
	t.Fatalf("state %q never came; last %+v", want, r)
}

func TestStatesOkErrorStaleOk(t *testing.T) {
	dev := &flaky{}
	c := &collector{}
	p := &Poller{Spec: sensors.Spec{ID: "d", Poll: 20 * time.Millisecond}, Dev: dev, Sink: c.sink}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitState(t, c, sensors.DeviceOK)
	dev.set(true)
	waitState(t, c, sensors.DeviceError)
	waitState(t, c, sensors.DeviceStale) // three intervals without a good poll
	dev.set(false)
	waitState(t, c, sensors.DeviceOK)
	cancel()
	<-done
}

func TestBackoffWhileFailing(t *testing.T) {
	dev := &flaky{fail: true}
	c := &collector{}
	p := &Poller{Spec: sensors.Spec{ID: "d", Poll: 10 * time.Millisecond}, Dev: dev, Sink: c.sink, MaxGap: 80 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	dev.mu.Lock()
	n := dev.n
	dev.mu.Unlock()
	// Without backoff 80 polls would fit in 800 ms; with it, about 10 (80 ms apart) plus the ramp.
	if n > 30 || n < 3 {
		t.Fatalf("%d polls of a failing device in 800 ms", n)
	}
}

type slow struct{}

func (slow) Poll(ctx context.Context) ([]sensors.Reading, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (slow) Close() error { return nil }

func TestTimeoutIsAnError(t *testing.T) {
	c := &collector{}
	p := &Poller{Spec: sensors.Spec{ID: "d", Poll: 50 * time.Millisecond, Timeout: 10 * time.Millisecond}, Dev: slow{}, Sink: c.sink}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitState(t, c, sensors.DeviceError)
	r, _ := c.last()
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Fatalf("err %v", r.Err)
	}
	cancel()
	<-done
}

// TestSinkOrderAndStuckSinks: one device's results reach its sink in order, and devices whose
// sinks are stuck (more of them than the shared sink goroutines) do not hold up another
// device's results for longer than sinkWait.
func TestSinkOrderAndStuckSinks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stuck := make(chan struct{})
	for range sinkWorkers + 1 {
		p := &Poller{Spec: sensors.Spec{ID: "stuck", Poll: 5 * time.Millisecond}, Dev: &flaky{}, Sink: func(Result) { <-stuck }}
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx) }()
	}
	var mu sync.Mutex
	var got []time.Time
	p := &Poller{Spec: sensors.Spec{ID: "d", Poll: 5 * time.Millisecond}, Dev: &flaky{}, Sink: func(r Result) {
		mu.Lock()
		got = append(got, r.At)
		mu.Unlock()
	}}
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	time.Sleep(time.Second)
	mu.Lock()
	n := len(got)
	for i := 1; i < len(got); i++ {
		if got[i].Before(got[i-1]) {
			t.Errorf("result %d (%v) before result %d (%v)", i, got[i], i-1, got[i-1])
		}
	}
	mu.Unlock()
	// 200 polls fit in a second; with every shared goroutine stuck, each result waits
	// sinkWait (100 ms) before the poller runs its sink itself: about 10.
	if n < 5 {
		t.Errorf("%d results in a second while other devices' sinks were stuck", n)
	}
	close(stuck)
	cancel()
	wg.Wait()
	sinks.mu.Lock()
	defer sinks.mu.Unlock()
	if sinks.users != 0 {
		t.Errorf("%d pollers still hold the sink goroutines after they all stopped", sinks.users)
	}
}

// Package poll runs one poller per device: it calls the device's Poll every interval with a
// deadline, backs off exponentially while the device fails, and decides the device's state
// (ok, error, stale after three intervals without a good poll). It hands every outcome to a
// sink and knows nothing of what the sink does with it.
package poll

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

// Result is one poll's outcome, or readings a device pushed on its own (Pushed).
type Result struct {
	Device   string
	State    sensors.DeviceState
	Readings []sensors.Reading
	Err      error
	At       time.Time
	Took     time.Duration
	Pushed   bool
}

// Sink receives results. The poller waits for it to return, so one device's results arrive in
// order; it runs on one of a few goroutines shared by all pollers (see sinks.go) and must not
// block long.
type Sink func(Result)

// Poller polls one device.
type Poller struct {
	Spec   sensors.Spec
	Dev    sensors.Device
	Sink   Sink
	Log    *slog.Logger
	Now    func() time.Time
	MaxGap time.Duration // the longest backoff between polls of a failing device (default 8 intervals, at most 1 min, at least 1 interval)
}

// StaleAfter is how many poll intervals without a good poll make a device stale.
const StaleAfter = 3

// Run polls until ctx ends. A Watcher device is also watched in a goroutine Run owns.
func (p *Poller) Run(ctx context.Context) {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	interval := p.Spec.Poll
	if interval <= 0 {
		interval = 5 * time.Second
	}
	timeout := p.Spec.Timeout
	if timeout <= 0 || timeout > interval {
		timeout = min(interval, 5*time.Second)
	}
	maxGap := p.MaxGap
	if maxGap == 0 {
		maxGap = min(8*interval, time.Minute)
	}
	maxGap = max(maxGap, interval)

	done := make(chan struct{})
	if w, ok := p.Dev.(sensors.Watcher); ok {
		go func() {
			defer close(done)
			for {
				err := w.Watch(ctx, func(rs []sensors.Reading) {
					p.Sink(Result{Device: p.Spec.ID, State: sensors.DeviceOK, Readings: rs, At: p.Now(), Pushed: true})
				})
				if ctx.Err() != nil {
					return
				}
				p.Log.Warn("watch ended, restarting", "device", p.Spec.ID, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(interval):
				}
			}
		}()
	} else {
		close(done)
	}
	defer func() { <-done }()

	jobs, release := acquireSinks()
	defer release()
	sink := newDeliverer(p.Sink, jobs)
	// One timer for every wait between polls: a poller allocates nothing while it waits.
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()

	start := p.Now()
	lastGood := time.Time{}
	failures := 0
	var state sensors.DeviceState
	for {
		t0 := p.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		rs, err := p.Dev.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && pctx.Err() != nil && errors.Is(pctx.Err(), context.DeadlineExceeded) && len(rs) == 0 {
			err = context.DeadlineExceeded
		}
		now := p.Now()
		res := Result{Device: p.Spec.ID, Readings: rs, Err: err, At: now, Took: now.Sub(t0)}
		if err == nil {
			lastGood = now
			failures = 0
			res.State = sensors.DeviceOK
		} else {
			failures++
			ref := lastGood
			if ref.IsZero() {
				ref = start
			}
			if now.Sub(ref) >= StaleAfter*interval {
				res.State = sensors.DeviceStale
			} else {
				res.State = sensors.DeviceError
			}
		}
		if res.State != state {
			if err != nil {
				p.Log.Warn("device "+string(res.State), "device", p.Spec.ID, "err", err)
			} else if state != "" {
				p.Log.Info("device ok again", "device", p.Spec.ID)
			}
			state = res.State
		}
		sink.deliver(res)

		wait := interval
		if failures > 1 {
			// Back off while failing: 2, 4, 8 … intervals up to MaxGap. A stale device is
			// still marked stale on time by the check below.
			wait = interval << min(failures-1, 16)
			if wait > maxGap || wait <= 0 {
				wait = maxGap
			}
		}
		next := t0.Add(wait)
		for {
			d := next.Sub(p.Now())
			staleAt := time.Time{}
			if state == sensors.DeviceError {
				ref := lastGood
				if ref.IsZero() {
					ref = start
				}
				staleAt = ref.Add(StaleAfter * interval)
				if s := staleAt.Sub(p.Now()); s < d {
					d = s
				}
			}
			if d <= 0 {
				if !staleAt.IsZero() && !p.Now().Before(staleAt) && p.Now().Before(next) {
					state = sensors.DeviceStale
					p.Log.Warn("device stale", "device", p.Spec.ID)
					sink.deliver(Result{Device: p.Spec.ID, State: sensors.DeviceStale, Err: res.Err, At: p.Now()})
					continue
				}
				break
			}
			wake.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-wake.C:
			}
		}
	}
}

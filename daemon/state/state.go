// Package state keeps what the site knows now: each device's state and latest readings, and a
// bounded in-memory history per numeric metric for the page's charts and /api/v1/history.
// It must not import the site's other parts.
package state

import (
	"os"
	"sort"
	"sync"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

// Device is what the store knows of one device.
type Device struct {
	ID       string
	Driver   string
	State    sensors.DeviceState
	LastSeen time.Time // last successful poll
	LastErr  string
	Readings map[string]sensors.Reading
}

type key struct{ device, metric string }

// Store is safe for concurrent use.
type Store struct {
	mu      sync.RWMutex
	order   []string
	devices map[string]*Device
	history map[key]*Ring
	window  time.Duration
	prefill time.Duration // benchPrefillEnv; 0 normally
}

// benchPrefillEnv, a duration, makes every ring start with that much synthetic history before
// its first real point (one point a slot), so that a benchmark can measure a daemon that has a
// day of history behind it without running it for a day. It is not an operator setting and
// is left out of the documentation on purpose.
const benchPrefillEnv = "RACKWATCH_BENCH_PREFILL_HISTORY"

// New makes a store keeping window (24 h) of history.
func New(window time.Duration) *Store {
	s := &Store{devices: map[string]*Device{}, history: map[key]*Ring{}, window: window}
	if d, err := time.ParseDuration(os.Getenv(benchPrefillEnv)); err == nil && d > 0 {
		s.prefill = min(d, window)
	}
	return s
}

// AddDevice declares a device, in config order, before its first poll. Its state is stale
// until a poll succeeds ("no data yet", which NUT calls WAIT).
func (s *Store) AddDevice(id, driver string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.devices[id]; ok {
		return
	}
	s.order = append(s.order, id)
	s.devices[id] = &Device{ID: id, Driver: driver, State: sensors.DeviceStale, Readings: map[string]sensors.Reading{}}
}

// State returns a device's state without copying its readings (the ingest path asks it for
// every poll).
func (s *Store) State(id string) sensors.DeviceState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d, ok := s.devices[id]; ok {
		return d.State
	}
	return ""
}

// Update records a poll's outcome: the readings replace the device's and those the poll did
// not refresh turn stale (on a failed poll, all of them); the device state is the one the
// poller decided (ok, error, or stale after three missed intervals).
func (s *Store) Update(id string, devState sensors.DeviceState, rs []sensors.Reading, pollErr error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[id]
	if !ok {
		d = &Device{ID: id, Readings: map[string]sensors.Reading{}}
		s.devices[id] = d
		s.order = append(s.order, id)
	}
	d.State = devState
	if pollErr != nil {
		d.LastErr = pollErr.Error()
	} else if devState == sensors.DeviceOK {
		d.LastErr = ""
	}
	if devState == sensors.DeviceOK && pollErr == nil {
		d.LastSeen = now
	}
	for _, r := range rs {
		d.Readings[r.Metric] = r
		if !r.IsText && r.Quality == sensors.Good {
			s.ring(id, r.Metric).Add(r.TS, r.Value)
		}
	}
	// Readings this poll did not refresh turn stale. A device that returns all its metrics
	// (the usual case) refreshed them all: no set of names needs building then.
	if len(d.Readings) > len(rs) {
		fresh := make(map[string]bool, len(rs))
		for _, r := range rs {
			fresh[r.Metric] = true
		}
		for m, r := range d.Readings {
			if !fresh[m] && r.Quality == sensors.Good {
				r.Quality = sensors.Stale
				d.Readings[m] = r
			}
		}
	}
}

// Push records readings that a device reported on its own (an edge, a trap) without a poll.
func (s *Store) Push(id string, rs []sensors.Reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[id]
	if !ok {
		return
	}
	for _, r := range rs {
		d.Readings[r.Metric] = r
		if !r.IsText && r.Quality == sensors.Good {
			s.ring(id, r.Metric).Add(r.TS, r.Value)
		}
	}
}

func (s *Store) ring(id, metric string) *Ring {
	k := key{id, metric}
	r := s.history[k]
	if r == nil {
		r = NewRing(s.window)
		s.history[k] = r
		if s.prefill > 0 {
			r.fill(time.Now().Add(-s.prefill), s.prefill)
		}
	}
	return r
}

// Devices returns a copy of every device, in config order.
func (s *Store) Devices() []Device {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Device, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.copyOf(s.devices[id]))
	}
	return out
}

// Device returns a copy of one device.
func (s *Store) Device(id string) (Device, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.devices[id]
	if !ok {
		return Device{}, false
	}
	return s.copyOf(d), true
}

// Reading returns one latest reading.
func (s *Store) Reading(id, metric string) (sensors.Reading, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.devices[id]
	if !ok {
		return sensors.Reading{}, false
	}
	r, ok := d.Readings[metric]
	return r, ok
}

func (s *Store) copyOf(d *Device) Device {
	c := *d
	c.Readings = make(map[string]sensors.Reading, len(d.Readings))
	for k, v := range d.Readings {
		c.Readings[k] = v
	}
	return c
}

// Metrics lists the metrics of a device, sorted.
func (d Device) Metrics() []string {
	ms := make([]string, 0, len(d.Readings))
	for m := range d.Readings {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return ms
}

// History returns the points of one metric since a time, oldest first.
func (s *Store) History(id, metric string, since time.Time) []Point {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.history[key{id, metric}]
	if r == nil {
		return nil
	}
	return r.Since(since)
}

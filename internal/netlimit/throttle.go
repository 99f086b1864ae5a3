package netlimit

import (
	"sync"
	"time"
)

// Throttle slows password guessing: after Free failures for a key (an address, or an address
// and a user name) the key is locked for Base, doubling with each further failure up to Max.
// A key is forgotten Forget after its last failure; OK forgets it at once.
type Throttle struct {
	Free   int
	Base   time.Duration
	Max    time.Duration
	Forget time.Duration

	mu  sync.Mutex
	m   map[string]*strikes
	now func() time.Time
}

type strikes struct {
	fails int
	last  time.Time
	until time.Time
}

// MaxKeys bounds the keys a Throttle remembers.
const MaxKeys = 10000

// NewThrottle makes a throttle with free failures, then 30 s doubling up to 15 min, failures
// forgotten after an hour. A nil now is time.Now.
func NewThrottle(free int, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{Free: free, Base: 30 * time.Second, Max: 15 * time.Minute, Forget: time.Hour, m: map[string]*strikes{}, now: now}
}

// Wait is how long key must still wait before it may try again (0: it may).
func (l *Throttle) Wait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.m[key]
	if !ok {
		return 0
	}
	now := l.now()
	if now.Sub(s.last) >= l.Forget {
		delete(l.m, key)
		return 0
	}
	if now.Before(s.until) {
		return s.until.Sub(now)
	}
	return 0
}

// Fail counts a failure of key.
func (l *Throttle) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.m) >= MaxKeys {
		for k, s := range l.m {
			if now.Sub(s.last) >= l.Forget || now.After(s.until) {
				delete(l.m, k)
			}
		}
		if len(l.m) >= MaxKeys {
			// Under a flood of distinct keys, keep the table bounded; the per-key locks of
			// the flood are lost, not the memory of the appliance.
			clear(l.m)
		}
	}
	s, ok := l.m[key]
	if !ok || now.Sub(s.last) >= l.Forget {
		s = &strikes{}
		l.m[key] = s
	}
	s.fails++
	s.last = now
	if s.fails >= l.Free {
		d := l.Base << min(s.fails-l.Free, 20)
		if d > l.Max || d <= 0 {
			d = l.Max
		}
		s.until = now.Add(d)
	}
}

// OK forgets key's failures.
func (l *Throttle) OK(key string) {
	l.mu.Lock()
	delete(l.m, key)
	l.mu.Unlock()
}

// Len is the number of keys remembered.
func (l *Throttle) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

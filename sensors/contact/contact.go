// Package contact is the `contact` device (CONTRACT.md §2): a dry contact on a GPIO line (a
// door switch, a leak detector, a smoke detector's relay output), giving the reading `contact`
// (1 = active).
//
// Keys: pin (required; the line's name, e.g. GPIO17), active (high, the default, or low: the
// level that means active), debounce (how long the level must hold before it counts; default
// 50ms). The line is biased so that an open, disconnected input reads inactive (pull-down for
// active high, pull-up for active low), where the line can be biased.
//
// A change is reported two ways. Watch (sensors.Watcher) waits on the line's edges and emits
// the new state once the level has held for debounce after the last edge, that is within
// debounce plus scheduling latency of the contact settling; a contact that bounces for less
// than debounce gives one change, not several, and a glitch that returns to where it started
// gives none. Poll re-reads the line at the poll interval, so an edge the kernel dropped is
// still caught: a level that differs from the known state, with no edge being settled, is
// confirmed by reading it again after debounce. A line that cannot detect edges is sampled
// every 5 ms by Watch instead.
//
// It must not import daemon/ or uplink/.
package contact

import (
	"context"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	rwgpio "github.com/rackwatch/rackwatch/drivers/gpio"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "contact"

const (
	// DefaultDebounce applies when the spec sets none: long enough for a reed or micro switch
	// to stop bouncing (typically a few ms), short against an alarm's urgency.
	DefaultDebounce = 50 * time.Millisecond
	// idleWait bounds one wait for an edge while nothing happens, so Watch notices its
	// context ending.
	idleWait = 250 * time.Millisecond
	// sampleEvery is the sampling period of a line that cannot detect edges.
	sampleEvery = 5 * time.Millisecond
	// settleMargin is how long after the debounce of the last edge Poll still leaves the
	// change to Watch.
	settleMargin = 20 * time.Millisecond
)

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Class:    sensors.ClassContact,
		Options:  Options{},
		Required: []string{"pin"},
		Metrics:  map[string]string{"contact": ""},
		Check:    Check,
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return New(spec)
		},
	})
}

// Options are a contact device's keys; the simulated contact takes them too.
type Options struct {
	Pin      string        `yaml:"pin"`      // the line's name, e.g. GPIO17
	Active   string        `yaml:"active"`   // high (default) or low
	Debounce time.Duration `yaml:"debounce"` // default DefaultDebounce
}

// Contact is one contact input. It implements sensors.Device and sensors.Watcher.
type Contact struct {
	id       string
	pin      gpio.PinIO
	pol      rwgpio.Polarity
	debounce time.Duration
	edges    bool // the line reports edges; otherwise Watch samples it

	mu       sync.Mutex
	active   bool      // the debounced state
	lastEdge time.Time // the last edge Watch saw
	watching bool
	closed   bool
}

// New opens the line the spec names.
func New(spec sensors.Spec) (*Contact, error) {
	o := sensors.Opts[Options](spec)
	if _, _, err := parse(o); err != nil {
		return nil, err
	}
	pin, err := rwgpio.Open(o.Pin)
	if err != nil {
		return nil, fmt.Errorf("contact: %w", err)
	}
	return NewWithPin(spec, pin)
}

// NewWithPin reads pin (a gpiotest.Pin in tests, with its EdgesChan set for edges).
func NewWithPin(spec sensors.Spec, pin gpio.PinIO) (*Contact, error) {
	o := sensors.Opts[Options](spec)
	pol, debounce, err := parse(o)
	if err != nil {
		return nil, err
	}
	c := &Contact{id: spec.ID, pin: pin, pol: pol, debounce: debounce, edges: true}
	// Not every line can be biased, and not every line can detect edges: fall back step by
	// step rather than refuse a contact that can still be read.
	if err := pin.In(pol.Pull(), gpio.BothEdges); err != nil {
		if err2 := pin.In(gpio.PullNoChange, gpio.BothEdges); err2 != nil {
			if err3 := pin.In(gpio.PullNoChange, gpio.NoEdge); err3 != nil {
				return nil, fmt.Errorf("contact %s: configure %s as an input: %w", spec.ID, o.Pin, err)
			}
			c.edges = false
		}
	}
	c.active = pol.On(pin.Read())
	return c, nil
}

// Check reports why spec cannot read a contact (active, debounce).
func Check(spec sensors.Spec) error { return CheckOptions(sensors.Opts[Options](spec)) }

// CheckOptions is Check on the keys themselves; the simulated contact shares it.
func CheckOptions(o Options) error {
	_, _, err := parse(o)
	return err
}

func parse(o Options) (rwgpio.Polarity, time.Duration, error) {
	pol, err := rwgpio.ParsePolarity(o.Active)
	if err != nil {
		return pol, 0, &sensors.KeyError{Key: "active", Err: fmt.Errorf("contact: %w", err)}
	}
	d := o.Debounce
	switch {
	case d < 0:
		return pol, 0, &sensors.KeyError{Key: "debounce", Err: fmt.Errorf("contact: debounce %v is negative", d)}
	case d == 0:
		d = DefaultDebounce
	}
	return pol, d, nil
}

// Edges reports whether the line detects edges (else Watch samples it).
func (c *Contact) Edges() bool { return c.edges }

// Watch implements sensors.Watcher: it emits each debounced change until ctx ends.
func (c *Contact) Watch(ctx context.Context, emit func([]sensors.Reading)) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("contact %s: closed", c.id)
	case c.watching:
		c.mu.Unlock()
		return fmt.Errorf("contact %s: already watched", c.id)
	}
	c.watching = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.watching = false
		c.mu.Unlock()
	}()
	if !c.edges {
		return c.sample(ctx, emit)
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if c.isClosed() {
			return fmt.Errorf("contact %s: closed", c.id)
		}
		if !c.pin.WaitForEdge(idleWait) {
			continue
		}
		c.markEdge(time.Now())
		// Settle: the level counts once no edge came for a whole debounce.
		for c.pin.WaitForEdge(c.debounce) {
			c.markEdge(time.Now())
			if ctx.Err() != nil {
				return nil
			}
		}
		if r, changed := c.commit(c.pin.Read()); changed {
			emit([]sensors.Reading{r})
		}
	}
}

// sample is Watch for a line without edge detection.
func (c *Contact) sample(ctx context.Context, emit func([]sensors.Reading)) error {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	raw, since := c.pin.Read(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if c.isClosed() {
			return fmt.Errorf("contact %s: closed", c.id)
		}
		l, now := c.pin.Read(), time.Now()
		if l != raw {
			raw, since = l, now
			c.markEdge(now)
			continue
		}
		if now.Sub(since) >= c.debounce {
			if r, changed := c.commit(l); changed {
				emit([]sensors.Reading{r})
			}
		}
	}
}

// Poll implements sensors.Device: the debounced state, catching a change Watch missed.
func (c *Contact) Poll(ctx context.Context) ([]sensors.Reading, error) {
	if c.isClosed() {
		return []sensors.Reading{sensors.Failed(c.id, "contact", "", time.Now())}, fmt.Errorf("contact %s: closed", c.id)
	}
	l := c.pin.Read()
	c.mu.Lock()
	settling := c.watching && time.Since(c.lastEdge) < c.debounce+settleMargin
	differs := c.pol.On(l) != c.active
	c.mu.Unlock()
	if differs && !settling {
		// An edge was missed (or nobody watches): believe the new level only if it holds for
		// a debounce.
		t := time.NewTimer(c.debounce)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return []sensors.Reading{sensors.Failed(c.id, "contact", "", time.Now())}, fmt.Errorf("contact %s: confirm a change: %w", c.id, ctx.Err())
		}
		if l2 := c.pin.Read(); l2 == l {
			c.commit(l2)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return []sensors.Reading{c.reading(time.Now())}, nil
}

// commit makes level the debounced state; it reports the reading if that is a change.
func (c *Contact) commit(l gpio.Level) (sensors.Reading, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.pol.On(l)
	if a == c.active {
		return sensors.Reading{}, false
	}
	c.active = a
	return c.reading(time.Now()), true
}

// reading is the current state. Called with mu held.
func (c *Contact) reading(now time.Time) sensors.Reading {
	v := 0.0
	if c.active {
		v = 1
	}
	return sensors.Num(c.id, "contact", v, "", now)
}

func (c *Contact) markEdge(t time.Time) {
	c.mu.Lock()
	c.lastEdge = t
	c.mu.Unlock()
}

func (c *Contact) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close implements sensors.Device. It interrupts a pending wait for an edge; Watch returns
// once its context ends or it sees the device closed.
func (c *Contact) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if err := c.pin.Halt(); err != nil {
		return fmt.Errorf("contact %s: halt: %w", c.id, err)
	}
	return nil
}

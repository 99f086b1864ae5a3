// Package notify sends incident events out to where ITOps already looks: SNMP traps and
// informs, syslog, webhooks and e-mail (CONTRACT.md §7). Each target has its own durable
// queue in the site's bbolt database, written inside the incident's own transaction (StageTx),
// so an event is never lost between the incident's commit and its queue; one goroutine per
// target sends the queue in order, deletes what was delivered and retries the rest with capped
// backoff, so a dead target never holds up another.
//
// It knows incidents only as the small Event it sends, and must not import the site's wiring
// (daemon/site) nor the config package (which imports it to check the notify section).
package notify

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/incident"
)

// Event is one incident event as sent: the R/incidents payload (CONTRACT.md §4).
type Event struct {
	ID        string `json:"id"`
	Event     string `json:"event"`    // opened | escalated | acknowledged | resolved
	Severity  string `json:"severity"` // an incident.Severity; a string, as uplink.Incident has it
	Rule      string `json:"rule"`
	Device    string `json:"device"`
	Metric    string `json:"metric"`
	Value     any    `json:"value"`
	Threshold any    `json:"threshold"`
	OpenedAt  string `json:"opened_at"`
	TS        string `json:"ts"`
	By        string `json:"by,omitempty"`
	Note      string `json:"note,omitempty"`
	Flaps     int    `json:"flaps,omitempty"`
}

func (e Event) critical() bool { return incident.Severity(e.Severity) == incident.Critical }

// Event names.
const (
	Opened       = "opened"
	Escalated    = "escalated"
	Acknowledged = "acknowledged"
	Resolved     = "resolved"
)

// Message is what a target is given: the event and what it needs to say where it came from.
type Message struct {
	Event
	Site, Node string
	Enterprise int
	PageURL    string
	// Repeat counts the reminders of a still-open critical incident (0: the event itself).
	Repeat int
}

// Key is the incident's key, stable over its life: <site>/<node>/<incident id>.
func (m Message) Key() string { return m.Site + "/" + m.Node + "/" + m.ID }

// Firing is "resolved" for a resolved incident, "firing" otherwise.
func (m Message) Firing() string {
	if m.Event.Event == Resolved {
		return "resolved"
	}
	return "firing"
}

// sender delivers one message to one target; an error means try again later.
type sender interface {
	Send(ctx context.Context, m Message) error
	Close() error
}

// Options are what a Notifier needs besides its config.
type Options struct {
	Site, Node string
	Log        *slog.Logger
	Now        func() time.Time
	// MinBackoff is the first retry's wait (default 1s); it doubles up to the target's
	// retry_max.
	MinBackoff time.Duration
}

// Stats are a target's counters.
type Stats struct {
	Target                string
	Sent, Failed, Dropped uint64
	// AuditSent and AuditFailed count audit records (audit: true).
	AuditSent, AuditFailed uint64
	Queued                 int
	QueuedBytes            int64
	LastError              string
}

// Notifier owns the targets' queues and senders.
type Notifier struct {
	cfg     Config
	opt     Options
	db      *bolt.DB
	targets map[string]*target
	order   []string
	wakeT   chan struct{} // the timers' goroutine
	mu      sync.Mutex    // guards pendTx and pend
	pendTx  *bolt.Tx
	pend    map[*target]*delta
	wg      sync.WaitGroup
}

type target struct {
	cfg     Target
	bucket  []byte
	send    sender
	wake    chan struct{}
	mu      sync.Mutex // guards the counters below
	queued  int
	bytes   int64
	sent    uint64
	failed  uint64
	dropped uint64
	lastErr string

	auditSent, auditFailed uint64
}

var bTimers = []byte("notify-timers")

func queueBucket(name string) []byte { return []byte("notify:" + name) }

// New makes the notifier of cfg (defaults applied and checked) on db; nothing is sent before
// Start.
func New(db *bolt.DB, cfg Config, opt Options) (*Notifier, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MinBackoff == 0 {
		opt.MinBackoff = time.Second
	}
	n := &Notifier{cfg: cfg, opt: opt, db: db, targets: map[string]*target{}, wakeT: make(chan struct{}, 1)}
	for _, tc := range cfg.Targets {
		s, err := newSender(tc, cfg, opt)
		if err != nil {
			n.closeSenders()
			return nil, fmt.Errorf("notify target %s: %w", tc.Name, err)
		}
		n.targets[tc.Name] = &target{cfg: tc, bucket: queueBucket(tc.Name), send: s, wake: make(chan struct{}, 1)}
		n.order = append(n.order, tc.Name)
	}
	return n, nil
}

// Close closes the senders of a notifier that was never started.
func (n *Notifier) Close() { n.closeSenders() }

func (n *Notifier) closeSenders() {
	for _, t := range n.targets {
		t.send.Close()
	}
}

// Start creates the queues, counts what they hold from before, and runs one goroutine per
// target and one for the escalation and repeat timers until ctx ends. Wait waits for them.
func (n *Notifier) Start(ctx context.Context) error {
	err := n.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bTimers); err != nil {
			return err
		}
		// The queue of a target the config no longer has would never be sent.
		var gone [][]byte
		tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if t, ok := strings.CutPrefix(string(name), "notify:"); ok && n.targets[t] == nil {
				gone = append(gone, bytes.Clone(name))
			}
			return nil
		})
		for _, name := range gone {
			n.opt.Log.Warn("notify: queue of a target no longer configured deleted", "target", strings.TrimPrefix(string(name), "notify:"),
				"events", tx.Bucket(name).Stats().KeyN)
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		for _, t := range n.targets {
			b, err := tx.CreateBucketIfNotExists(t.bucket)
			if err != nil {
				return err
			}
			t.queued, t.bytes = 0, 0
			b.ForEach(func(k, v []byte) error {
				t.queued++
				t.bytes += int64(len(v))
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("notify queues: %w", err)
	}
	for _, name := range n.order {
		t := n.targets[name]
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.run(ctx, t) }()
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.timers(ctx) }()
	return nil
}

// Wait waits for the goroutines Start started, then closes the senders.
func (n *Notifier) Wait() {
	n.wg.Wait()
	n.closeSenders()
}

// Stats are the targets' counters, in config order.
func (n *Notifier) Stats() []Stats {
	out := make([]Stats, 0, len(n.order))
	for _, name := range n.order {
		t := n.targets[name]
		t.mu.Lock()
		out = append(out, Stats{Target: name, Sent: t.sent, Failed: t.failed, Dropped: t.dropped, Queued: t.queued, QueuedBytes: t.bytes, LastError: t.lastErr,
			AuditSent: t.auditSent, AuditFailed: t.auditFailed})
		t.mu.Unlock()
	}
	return out
}

// entry is one queued message. Sev is kept first so that the bound can pick the oldest
// warning without decoding.
type entry struct {
	Event  Event `json:"e"`
	Repeat int   `json:"r,omitempty"`
}

const (
	sevCritical = 'c'
	sevOther    = 'w'
)

func encodeEntry(e entry) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	sev := byte(sevOther)
	if e.Event.critical() {
		sev = sevCritical
	}
	return append([]byte{sev}, b...), nil
}

func decodeEntry(v []byte) (entry, error) {
	var e entry
	if len(v) < 2 {
		return e, errors.New("short queue entry")
	}
	err := json.Unmarshal(v[1:], &e)
	return e, err
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// match reports whether a route takes an event of this incident.
func (r Route) match(e Event) bool {
	return (r.Severity == "" || r.Severity == incident.Severity(e.Severity)) && (r.Device == "" || r.Device == e.Device) &&
		(r.Rule == "" || r.Rule == e.Rule)
}

// Targets are the names of the targets the routes give an event, in config order.
func (n *Notifier) Targets(e Event) []string {
	set := map[string]bool{}
	for _, r := range n.cfg.Routes {
		if r.match(e) {
			for _, t := range r.Targets {
				set[t] = true
			}
		}
	}
	var out []string
	for _, name := range n.order {
		if set[name] {
			out = append(out, name)
		}
	}
	return out
}

// StageTx queues e for every target a route gives it, inside tx (the incident's own write
// transaction), and keeps the escalation and repeat timers it starts or ends. The targets'
// goroutines are woken once tx has committed.
func (n *Notifier) StageTx(tx *bolt.Tx, e Event) error {
	names := n.Targets(e)
	tb := tx.Bucket(bTimers)
	if tb == nil {
		var err error
		if tb, err = tx.CreateBucketIfNotExists(bTimers); err != nil {
			return err
		}
	}
	// Targets an escalation reached hear the rest of the incident's life as well.
	if v := tb.Get(escalatedKey(e.ID)); v != nil {
		var more []string
		json.Unmarshal(v, &more)
		for _, m := range more {
			if !slices.Contains(names, m) {
				names = append(names, m)
			}
		}
	}
	// Recorded first: an enqueue that has to drop the event itself records that.
	if err := n.record(tx, e.ID, e.Event, Queued, names...); err != nil {
		return err
	}
	for _, name := range names {
		if err := n.enqueue(tx, n.targets[name], entry{Event: e}); err != nil {
			return err
		}
	}
	if err := n.keepTimers(tb, e); err != nil {
		return err
	}
	tx.OnCommit(func() {
		for _, name := range names {
			poke(n.targets[name].wake)
		}
		poke(n.wakeT)
	})
	return nil
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// enqueue appends one entry to t's queue, making room within the bounds by dropping the
// oldest non-critical entries. A critical entry is never dropped: when only criticals are
// left, the queue grows past its bound (the incident store's storm limit bounds how many
// criticals can come); a warning that finds no room is dropped itself.
func (n *Notifier) enqueue(tx *bolt.Tx, t *target, e entry) error {
	if t == nil {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(t.bucket)
	if err != nil {
		return err
	}
	v, err := encodeEntry(e)
	if err != nil {
		return err
	}
	queued, size := n.counts(tx, t)
	var dropped int
	var droppedBytes int64
	c := b.Cursor()
	for k, old := c.First(); k != nil && (queued+1 > t.cfg.QueueMax || size+int64(len(v)) > t.cfg.QueueMaxBytes); {
		if old[0] == sevCritical {
			k, old = c.Next()
			continue
		}
		sz := int64(len(old))
		if de, err := decodeEntry(old); err == nil {
			if err := n.record(tx, de.Event.ID, de.Event.Event, Dropped, t.cfg.Name); err != nil {
				return err
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
		queued--
		size -= sz
		dropped++
		droppedBytes += sz
		k, old = c.Seek(k)
	}
	if (queued+1 > t.cfg.QueueMax || size+int64(len(v)) > t.cfg.QueueMaxBytes) && v[0] != sevCritical {
		dropped++
		n.countOnCommit(tx, t, -dropped+1, -droppedBytes, dropped)
		if err := n.record(tx, e.Event.ID, e.Event.Event, Dropped, t.cfg.Name); err != nil {
			return err
		}
		n.opt.Log.Warn("notify queue full of critical events: warning dropped", "target", t.cfg.Name, "id", e.Event.ID, "event", e.Event.Event)
		return nil
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), v); err != nil {
		return err
	}
	if dropped > 0 {
		n.opt.Log.Warn("notify queue full: oldest warnings dropped", "target", t.cfg.Name, "dropped", dropped)
	}
	n.countOnCommit(tx, t, 1-dropped, int64(len(v))-droppedBytes, dropped)
	return nil
}

func (n *Notifier) countOnCommit(tx *bolt.Tx, t *target, dq int, db int64, dropped int) {
	n.mu.Lock()
	if n.pendTx != tx {
		// bbolt runs one write transaction at a time: what another one left here was rolled
		// back.
		n.pendTx, n.pend = tx, map[*target]*delta{}
		tx.OnCommit(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			for t, d := range n.pend {
				t.mu.Lock()
				t.queued += d.queued
				t.bytes += d.bytes
				t.dropped += uint64(d.dropped)
				t.mu.Unlock()
			}
			n.pendTx, n.pend = nil, nil
		})
	}
	d := n.pend[t]
	if d == nil {
		d = &delta{}
		n.pend[t] = d
	}
	d.queued += dq
	d.bytes += db
	d.dropped += dropped
	n.mu.Unlock()
}

// delta is what a write transaction not yet committed changes in a queue's counters.
type delta struct {
	queued, dropped int
	bytes           int64
}

// counts are t's queue length and size as the running transaction sees them.
func (n *Notifier) counts(tx *bolt.Tx, t *target) (int, int64) {
	t.mu.Lock()
	q, b := t.queued, t.bytes
	t.mu.Unlock()
	n.mu.Lock()
	if n.pendTx == tx {
		if d := n.pend[t]; d != nil {
			q += d.queued
			b += d.bytes
		}
	}
	n.mu.Unlock()
	return q, b
}

// run sends t's queue, oldest first, until ctx ends.
func (n *Notifier) run(ctx context.Context, t *target) {
	backoff := time.Duration(0)
	for {
		k, e, ok, err := n.first(t)
		if err != nil {
			n.opt.Log.Error("notify queue unreadable", "target", t.cfg.Name, "err", err)
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
				continue
			}
		}
		if e != nil {
			sctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
			err = t.send.Send(sctx, n.message(*e))
			cancel()
			if ctx.Err() != nil {
				return
			}
		} else {
			err = nil // an unreadable entry is dropped, not retried for ever
		}
		if err != nil {
			t.mu.Lock()
			t.failed++
			t.lastErr = err.Error()
			t.mu.Unlock()
			backoff = min(max(backoff*2, n.opt.MinBackoff), t.cfg.RetryMax)
			n.opt.Log.Warn("notify: not delivered, will retry", "target", t.cfg.Name, "id", e.Event.ID, "event", e.Event.Event, "in", backoff, "err", err)
			timer := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		backoff = 0
		if err := n.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(t.bucket)
			if b == nil {
				return nil
			}
			v := b.Get(k)
			if v == nil {
				return nil
			}
			sz := int64(len(v))
			if err := b.Delete(k); err != nil {
				return err
			}
			if e != nil {
				if err := n.record(tx, e.Event.ID, e.Event.Event, Delivered, t.cfg.Name); err != nil {
					return err
				}
			}
			tx.OnCommit(func() {
				t.mu.Lock()
				t.queued--
				t.bytes -= sz
				if e != nil {
					t.sent++
					t.lastErr = ""
				}
				t.mu.Unlock()
			})
			return nil
		}); err != nil {
			n.opt.Log.Error("notify: delivered event not removed from the queue", "target", t.cfg.Name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// first is the oldest entry of t's queue (e nil when it cannot be read).
func (n *Notifier) first(t *target) (k []byte, e *entry, ok bool, err error) {
	err = n.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(t.bucket)
		if b == nil {
			return nil
		}
		key, v := b.Cursor().First()
		if key == nil {
			return nil
		}
		ok = true
		k = bytes.Clone(key)
		de, derr := decodeEntry(v)
		if derr != nil {
			return derr
		}
		e = &de
		return nil
	})
	return k, e, ok, err
}

func (n *Notifier) message(e entry) Message {
	return Message{Event: e.Event, Site: n.opt.Site, Node: n.opt.Node, Enterprise: n.cfg.Enterprise, PageURL: n.cfg.PageURL, Repeat: e.Repeat}
}

// Test sends a test event to one target now, outside its queue, and says how it went.
func (n *Notifier) Test(ctx context.Context, name string) error {
	t := n.targets[name]
	if t == nil {
		return fmt.Errorf("no notify target %q", name)
	}
	now := n.opt.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	e := Event{ID: n.opt.Node + "-test", Event: Opened, Severity: string(incident.Warning), Rule: "notify-test", Device: "rackwatch",
		Metric: "test", Value: 1, Threshold: nil, OpenedAt: now, TS: now, Note: "test notification from rackwatch -test-notify"}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	return t.send.Send(ctx, n.message(entry{Event: e}))
}

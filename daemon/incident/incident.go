// Package incident keeps the site's incidents in bbolt: one open incident per key (a rule, a
// policy condition, a trap), opened, escalated, acknowledged, resolved, with flapping
// suppression and a retention bound. Every event is written in the incident's own transaction
// either straight into the durable MQTT queue (a Stager, one commit for both) or into an
// outbox it leaves only once it has been handed on, so a crash can duplicate an event but
// never lose one.
//
// It must not import the site's other parts.
package incident

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Incident states.
const (
	Open         = "open"
	Acknowledged = "acknowledged"
	Resolved     = "resolved"
)

// Event names (CONTRACT.md §4).
const (
	Opened      = "opened"
	Escalated   = "escalated"
	AckedEvent  = "acknowledged"
	ResolvedEvt = "resolved"
)

// Incident is one incident.
type Incident struct {
	ID          string     `json:"id"`
	Key         string     `json:"key"`
	Rule        string     `json:"rule"`
	Device      string     `json:"device"`
	Metric      string     `json:"metric"`
	Severity    string     `json:"severity"`
	State       string     `json:"state"`
	Source      string     `json:"source"` // rule, power, cooling, trap, uplink, system
	Summary     string     `json:"summary"`
	Value       any        `json:"value"`
	Threshold   any        `json:"threshold"`
	OpenedAt    time.Time  `json:"opened_at"`
	EscalatedAt *time.Time `json:"escalated_at,omitempty"`
	AckedAt     *time.Time `json:"acknowledged_at,omitempty"`
	AckedBy     string     `json:"acknowledged_by,omitempty"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
	Flaps       int        `json:"flaps,omitempty"`
	// ClearAt, when set, is when a flapping incident resolves if it stays clear.
	ClearAt *time.Time `json:"clear_at,omitempty"`
}

// IsOpen reports whether the incident still needs attention or resolution.
func (i Incident) IsOpen() bool { return i.State != Resolved }

// Event is one change of an incident, as published.
type Event struct {
	Seq      uint64    `json:"-"` // outbox position
	Event    string    `json:"event"`
	By       string    `json:"by,omitempty"`
	TS       time.Time `json:"ts"`
	Incident Incident  `json:"incident"`
}

// Raise asks for an incident on Key at Severity.
type Raise struct {
	Key, Rule, Device, Metric string
	Severity                  string // warning, critical
	Source, Summary           string
	Value, Threshold          any
}

// Options bound the history and set flapping suppression.
type Options struct {
	Node        string // prefix of incident ids
	Retention   time.Duration
	MaxResolved int
	FlapCount   int
	FlapWindow  time.Duration
	Log         *slog.Logger
}

var (
	bIncidents = []byte("incidents")
	bOutbox    = []byte("incident-outbox")
	bMeta      = []byte("incident-meta")
	kNextID    = []byte("next-id")
)

// ErrNotFound is returned for an unknown incident id.
var ErrNotFound = errors.New("no such incident")

// ErrResolved is returned when acknowledging a resolved incident.
var ErrResolved = errors.New("incident already resolved")

// Manager owns the incidents. It is safe for concurrent use.
type Manager struct {
	db      *bolt.DB
	opt     Options
	mu      sync.Mutex
	open    map[string]*Incident // by key
	opens   map[string][]time.Time
	publish func(Event) error
	stage   Stager
	// resolved counts the resolved incidents stored, so that a resolve can keep MaxResolved
	// in its own commit; lastPrune is when retention last ran (PruneEvery).
	resolved  int
	lastPrune time.Time
	changes   atomic.Uint64
}

// Changes rises with every change to the stored incidents, so that a reader can tell whether
// what it derived from them (the KPIs) is still current without reading them again.
func (m *Manager) Changes() uint64 { return m.changes.Load() }

// PruneEvery is how often Tick applies the retention bound (and at the first Tick). Retention
// is counted in days: checking it more often would only cost reads.
const PruneEvery = time.Hour

// Stager puts an event into a durable queue inside the incident's own write transaction (the
// uplink's queue lives in the same database), so that one commit, one fsync, holds both the
// incident and its message and no outbox entry is needed. after runs once that transaction
// has committed. When it fails, the event goes through the outbox and the publisher instead.
type Stager func(tx *bolt.Tx, e Event) (after func(), err error)

// New loads the open incidents from db. It writes only to create its buckets in a new
// database.
func New(db *bolt.DB, opt Options) (*Manager, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.FlapCount == 0 {
		opt.FlapCount = 5
	}
	if opt.FlapWindow == 0 {
		opt.FlapWindow = 10 * time.Minute
	}
	m := &Manager{db: db, opt: opt, open: map[string]*Incident{}, opens: map[string][]time.Time{}}
	if err := createBuckets(db, bIncidents, bOutbox, bMeta); err != nil {
		return nil, fmt.Errorf("incident store: %w", err)
	}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bIncidents).ForEach(func(k, v []byte) error {
			var in Incident
			if err := json.Unmarshal(v, &in); err != nil {
				opt.Log.Error("incident store: unreadable record skipped", "key", string(k), "err", err)
				return nil
			}
			if in.IsOpen() {
				c := in
				m.open[in.Key] = &c
			} else {
				m.resolved++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("incident store: %w", err)
	}
	return m, nil
}

// createBuckets creates the buckets that are missing, in one commit, and commits nothing when
// none is: a restart or a reload costs the flash no write.
func createBuckets(db *bolt.DB, names ...[]byte) error {
	missing := false
	db.View(func(tx *bolt.Tx) error {
		for _, n := range names {
			if tx.Bucket(n) == nil {
				missing = true
			}
		}
		return nil
	})
	if !missing {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, n := range names {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetPublisher sets where events go (the uplink) and hands on whatever the outbox still
// holds from before a crash.
func (m *Manager) SetPublisher(p func(Event) error) error {
	m.mu.Lock()
	m.publish = p
	m.mu.Unlock()
	return m.Flush()
}

// SetStager sets the stager used for every later event (nil: outbox and publisher only).
func (m *Manager) SetStager(st Stager) {
	m.mu.Lock()
	m.stage = st
	m.mu.Unlock()
}

// Flush hands on the outbox, oldest first, stopping at the first failure.
func (m *Manager) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flushLocked()
}

func (m *Manager) flushLocked() error {
	if m.publish == nil {
		return nil
	}
	var evs []Event
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return nil
			}
			e.Seq = binary.BigEndian.Uint64(k)
			evs = append(evs, e)
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, e := range evs {
		if err := m.publish(e); err != nil {
			return fmt.Errorf("hand on incident event: %w", err)
		}
		if err := m.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bOutbox).Delete(u64(e.Seq))
		}); err != nil {
			return err
		}
	}
	return nil
}

// Pending is how many events wait in the outbox.
func (m *Manager) Pending() int {
	n := 0
	m.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bOutbox).Stats().KeyN
		return nil
	})
	return n
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// commit stores the incident and the event in one transaction, then hands events on: staged
// in that same transaction when a stager is set, through the outbox otherwise.
func (m *Manager) commit(in *Incident, event, by string, now time.Time) (Event, error) {
	e := Event{Event: event, By: by, TS: now, Incident: *in}
	var after func()
	trimmed := 0
	err := m.db.Update(func(tx *bolt.Tx) error {
		after, trimmed = nil, 0
		if in.ID == "" {
			meta := tx.Bucket(bMeta)
			var n uint64 = 1
			if v := meta.Get(kNextID); v != nil {
				n = binary.BigEndian.Uint64(v)
			}
			if err := meta.Put(kNextID, u64(n+1)); err != nil {
				return err
			}
			in.ID = fmt.Sprintf("%s-%d", m.opt.Node, n)
			e.Incident.ID = in.ID
		}
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bIncidents).Put(idKey(in.ID), b); err != nil {
			return err
		}
		if event == ResolvedEvt && m.opt.MaxResolved > 0 && m.resolved+1 > m.opt.MaxResolved {
			// The bound holds at every resolve, not only at the hourly prune, and costs
			// no commit of its own.
			if trimmed, err = trimResolved(tx.Bucket(bIncidents), m.resolved+1-m.opt.MaxResolved, idKey(in.ID)); err != nil {
				return err
			}
		}
		if m.stage != nil {
			a, err := m.stage(tx, e)
			if err == nil {
				after = a
				return nil
			}
			m.opt.Log.Warn("incident event not staged, kept in the outbox", "id", in.ID, "err", err)
		}
		ob := tx.Bucket(bOutbox)
		seq, _ := ob.NextSequence()
		eb, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return ob.Put(u64(seq), eb)
	})
	if err != nil {
		return e, fmt.Errorf("incident store: %w", err)
	}
	m.changes.Add(1)
	if event == ResolvedEvt {
		m.resolved += 1 - trimmed
	}
	if after != nil {
		after()
		return e, nil
	}
	if err := m.flushLocked(); err != nil {
		m.opt.Log.Warn("incident event kept in the outbox", "err", err)
	}
	return e, nil
}

// idKey sorts incidents by number: "rack12-42" is stored under its number, zero-padded.
func idKey(id string) []byte {
	i := strings.LastIndexByte(id, '-')
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return []byte(id)
	}
	return []byte(fmt.Sprintf("%020d", n))
}

// Raise opens an incident on r.Key, or escalates the open one, and returns the event (Event
// empty when nothing changed).
func (m *Manager) Raise(r Raise, now time.Time) (Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in, ok := m.open[r.Key]; ok {
		changed := false
		if in.ClearAt != nil {
			// It came back while waiting out a flap: one more flap, still the same incident.
			in.ClearAt = nil
			in.Flaps++
			changed = true
		}
		in.Value = r.Value
		if sevRank(r.Severity) > sevRank(in.Severity) {
			in.Severity = r.Severity
			in.Threshold = r.Threshold
			in.Summary = r.Summary
			t := now
			in.EscalatedAt = &t
			return m.commit(in, Escalated, "", now)
		}
		if changed {
			return Event{}, m.save(in)
		}
		return Event{}, nil
	}
	m.opens[r.Key] = append(pruneBefore(m.opens[r.Key], now.Add(-m.opt.FlapWindow)), now)
	in := &Incident{Key: r.Key, Rule: r.Rule, Device: r.Device, Metric: r.Metric, Severity: r.Severity,
		State: Open, Source: r.Source, Summary: r.Summary, Value: r.Value, Threshold: r.Threshold, OpenedAt: now}
	if in.Rule == "" {
		in.Rule = r.Key
	}
	m.open[r.Key] = in
	return m.commit(in, Opened, "", now)
}

func pruneBefore(ts []time.Time, t time.Time) []time.Time {
	out := ts[:0]
	for _, x := range ts {
		if !x.Before(t) {
			out = append(out, x)
		}
	}
	return out
}

func (m *Manager) save(in *Incident) error {
	defer m.changes.Add(1)
	return m.db.Update(func(tx *bolt.Tx) error {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		return tx.Bucket(bIncidents).Put(idKey(in.ID), b)
	})
}

// Resolve closes the open incident on key, if any. A key that flapped more than FlapCount
// times within FlapWindow stays open, counting flaps, until it has stayed clear for a whole
// FlapWindow (Tick resolves it then).
func (m *Manager) Resolve(key string, value any, now time.Time) (Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in, ok := m.open[key]
	if !ok {
		return Event{}, nil
	}
	in.Value = value
	recent := pruneBefore(m.opens[key], now.Add(-m.opt.FlapWindow))
	m.opens[key] = recent
	if len(recent) > m.opt.FlapCount || in.Flaps > 0 {
		t := now.Add(m.opt.FlapWindow)
		if in.ClearAt == nil {
			in.ClearAt = &t
			if in.Flaps == 0 {
				in.Flaps = len(recent)
			}
		}
		return Event{}, m.save(in)
	}
	return m.resolveLocked(in, now)
}

func (m *Manager) resolveLocked(in *Incident, now time.Time) (Event, error) {
	t := now
	in.ResolvedAt = &t
	in.State = Resolved
	in.ClearAt = nil
	delete(m.open, in.Key)
	return m.commit(in, ResolvedEvt, "", now)
}

// Ack acknowledges an open incident.
func (m *Manager) Ack(id, by string, now time.Time) (Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range m.open {
		if in.ID == id {
			if in.State == Acknowledged {
				return Event{}, nil
			}
			t := now
			in.AckedAt, in.AckedBy, in.State = &t, by, Acknowledged
			return m.commit(in, AckedEvent, by, now)
		}
	}
	if _, err := m.Get(id); err == nil {
		return Event{}, ErrResolved
	}
	return Event{}, ErrNotFound
}

// Tick resolves flapping incidents that stayed clear, and applies the retention bound every
// PruneEvery. It writes only when an incident resolves or a record expires.
func (m *Manager) Tick(now time.Time) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var evs []Event
	for _, in := range m.open {
		if in.ClearAt != nil && !now.Before(*in.ClearAt) {
			e, err := m.resolveLocked(in, now)
			if err != nil {
				m.opt.Log.Error("flapping incident not resolved", "id", in.ID, "err", err)
				continue
			}
			evs = append(evs, e)
		}
	}
	if m.lastPrune.IsZero() || now.Sub(m.lastPrune) >= PruneEvery || now.Before(m.lastPrune) {
		m.lastPrune = now
		if err := m.prune(now); err != nil {
			m.opt.Log.Error("incident retention not applied", "err", err)
		}
	}
	return evs
}

// NextClear is when the earliest flapping incident resolves if it stays clear (zero: none
// waits), so that a caller need not tick faster than needed.
func (m *Manager) NextClear() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for _, in := range m.open {
		if in.ClearAt != nil && (next.IsZero() || in.ClearAt.Before(next)) {
			next = *in.ClearAt
		}
	}
	return next
}

// prune deletes the resolved incidents older than Retention and the oldest beyond
// MaxResolved. It looks in a read transaction first and commits only when there is something
// to delete; keys are collected before any is deleted (bbolt leaves a bucket modified during
// ForEach undefined).
func (m *Manager) prune(now time.Time) error {
	cutoff := now.Add(-m.opt.Retention)
	var expired, resolved [][]byte
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bIncidents).ForEach(func(k, v []byte) error {
			var in Incident
			if json.Unmarshal(v, &in) != nil || in.IsOpen() {
				return nil
			}
			k = append([]byte(nil), k...)
			resolved = append(resolved, k)
			if m.opt.Retention > 0 && in.ResolvedAt != nil && in.ResolvedAt.Before(cutoff) {
				expired = append(expired, k)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	m.resolved = len(resolved)
	del := map[string]bool{}
	for _, k := range expired {
		del[string(k)] = true
	}
	if m.opt.MaxResolved > 0 && len(resolved) > m.opt.MaxResolved {
		for _, k := range resolved[:len(resolved)-m.opt.MaxResolved] {
			del[string(k)] = true
		}
	}
	if len(del) == 0 {
		return nil
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bIncidents)
		for k := range del {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	m.changes.Add(1)
	if err != nil {
		return err
	}
	m.resolved -= len(del)
	return nil
}

// trimResolved deletes the n oldest resolved incidents in b other than keep (the one being
// resolved) and returns how many went.
func trimResolved(b *bolt.Bucket, n int, keep []byte) (int, error) {
	var old [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(old) < n; k, v = c.Next() {
		if string(k) == string(keep) {
			continue
		}
		var in Incident
		if json.Unmarshal(v, &in) == nil && !in.IsOpen() {
			old = append(old, append([]byte(nil), k...))
		}
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}

// OpenKeys returns the key and severity of each open incident (to seed the rules).
func (m *Manager) OpenKeys() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, in := range m.open {
		out[k] = in.Severity
	}
	return out
}

// IsOpen reports whether an incident is open on key.
func (m *Manager) IsOpen(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.open[key]
	return ok
}

// OpenIncidents returns the open incidents, newest first.
func (m *Manager) OpenIncidents() []Incident {
	m.mu.Lock()
	out := make([]Incident, 0, len(m.open))
	for _, in := range m.open {
		out = append(out, *in)
	}
	m.mu.Unlock()
	sortNewest(out)
	return out
}

func sortNewest(in []Incident) {
	sort.Slice(in, func(i, j int) bool {
		if !in[i].OpenedAt.Equal(in[j].OpenedAt) {
			return in[i].OpenedAt.After(in[j].OpenedAt)
		}
		return string(idKey(in[i].ID)) > string(idKey(in[j].ID))
	})
}

// All returns every stored incident, newest first, at most limit (0: all).
func (m *Manager) All(limit int) []Incident {
	var out []Incident
	m.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bIncidents).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var in Incident
			if json.Unmarshal(v, &in) == nil {
				out = append(out, in)
			}
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out
}

// Get returns one incident.
func (m *Manager) Get(id string) (Incident, error) {
	var in Incident
	err := m.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bIncidents).Get(idKey(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &in)
	})
	return in, err
}

func sevRank(s string) int {
	switch s {
	case "critical":
		return 2
	case "warning":
		return 1
	}
	return 0
}

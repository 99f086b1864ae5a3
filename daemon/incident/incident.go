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
	"bytes"
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

// Severity is how urgent an incident is: a warning, or a critical one (CONTRACT.md §4).
type Severity string

const (
	Warning  Severity = "warning"
	Critical Severity = "critical"
)

// Valid reports whether s is one of the severities.
func (s Severity) Valid() bool { return s == Warning || s == Critical }

// Rank orders severities: 2 for critical, 1 for warning, 0 for anything else.
func (s Severity) Rank() int {
	switch s {
	case Critical:
		return 2
	case Warning:
		return 1
	}
	return 0
}

// Incident is one incident.
type Incident struct {
	ID          string     `json:"id"`
	Key         string     `json:"key"`
	Rule        string     `json:"rule"`
	Device      string     `json:"device"`
	Metric      string     `json:"metric"`
	Severity    Severity   `json:"severity"`
	State       string     `json:"state"`
	Source      string     `json:"source"` // rule, power, cooling, trap, uplink, system, config
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
	// Sent says, per notify target, where the incident's latest event stands there (queued,
	// delivered, dropped). The site fills it in for the page and the API; it is not stored.
	Sent map[string]string `json:"sent,omitempty"`
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
	Severity                  Severity
	Source, Summary           string
	Value, Threshold          any
}

// Options bound the history and set flapping and storm suppression.
type Options struct {
	Node        string // prefix of incident ids
	Retention   time.Duration
	MaxResolved int
	FlapCount   int
	FlapWindow  time.Duration
	// StormLimit is how many incidents one source (Raise.Source: rule, trap, system, uplink,
	// power, cooling) may open in StormWindow; past it, the source's one storm incident
	// counts the rest (default DefaultStormLimit a minute).
	StormLimit  int
	StormWindow time.Duration
	Log         *slog.Logger
}

// DefaultStormLimit is Options.StormLimit's default.
const DefaultStormLimit = 30

// RuleStorm is the rule of a storm incident; its key is "storm:<source>".
const RuleStorm = "incident-storm"

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
	audit   func(tx *bolt.Tx, e Event) error
	// recent opens and storms, by source
	recent map[string][]time.Time
	storms map[string]*storm
	// prune's schedule
	resolvedSince bool
	nextPrune     time.Time
	changes       atomic.Uint64
	// nextID is the number the next new incident gets (stored under kNextID by every commit
	// that has not stored it yet).
	nextID uint64
	join   Joiner
	// joined counts writes handed to join and not yet committed: prune waits for them.
	joined int
}

// Joiner may take a write into a larger transaction (the writes of one moment committed
// together). It returns false when it did not (the caller commits fn alone); when it did, it
// calls done with that transaction's outcome once committed or failed, and fn must take no
// lock of the caller's, since it runs later, inside the transaction.
type Joiner func(fn func(*bolt.Tx) error, done func(error)) bool

// storm is what a source's storm incident has counted since it opened.
type storm struct {
	suppressed int
	last       time.Time
	dirty      bool // Value changed in memory, not yet saved
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
	if opt.StormLimit == 0 {
		opt.StormLimit = DefaultStormLimit
	}
	if opt.StormWindow == 0 {
		opt.StormWindow = time.Minute
	}
	m := &Manager{db: db, opt: opt, open: map[string]*Incident{}, opens: map[string][]time.Time{},
		recent: map[string][]time.Time{}, storms: map[string]*storm{}}
	if err := createBuckets(db, bIncidents, bRecent, bOutbox, bMeta); err != nil {
		return nil, fmt.Errorf("incident store: %w", err)
	}
	m.nextID = 1
	err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get(kNextID); len(v) == 8 {
			m.nextID = binary.BigEndian.Uint64(v)
		}
		eachIncident(tx, func(k, v []byte) bool {
			var in Incident
			if err := json.Unmarshal(v, &in); err != nil {
				opt.Log.Error("incident store: unreadable record skipped", "key", string(k), "err", err)
				return true
			}
			if in.IsOpen() {
				c := in
				m.open[in.Key] = &c
				if in.Rule == RuleStorm {
					// Counted on from where it was; quiet since it was last stored.
					n, _ := in.Value.(float64)
					last := in.OpenedAt
					if in.EscalatedAt != nil {
						last = *in.EscalatedAt
					}
					m.storms[in.Key] = &storm{suppressed: int(n), last: last}
				}
			}
			return true
		})
		return nil
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

// SetJoiner sets j, offered every later write of an event or a saved incident.
func (m *Manager) SetJoiner(j Joiner) {
	m.mu.Lock()
	m.join = j
	m.mu.Unlock()
}

// write commits fn, alone or joined to a larger transaction, and runs done (with m.mu held)
// once it is committed; it returns fn's error only when it committed fn alone.
func (m *Manager) write(fn func(*bolt.Tx) error, done func()) error {
	if m.join != nil {
		m.joined++
		if m.join(fn, func(err error) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.joined--
			if err != nil {
				m.opt.Log.Error("incident store", "err", err)
				return
			}
			done()
		}) {
			return nil
		}
		m.joined--
	}
	if err := m.db.Update(fn); err != nil {
		return err
	}
	done()
	return nil
}

// SetAudit sets f, called inside the transaction of every later event: an event whose
// record cannot be written is not stored either.
func (m *Manager) SetAudit(f func(tx *bolt.Tx, e Event) error) {
	m.mu.Lock()
	m.audit = f
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
	if in.ID == "" {
		in.ID = fmt.Sprintf("%s-%d", m.opt.Node, m.nextID)
		m.nextID++
	}
	e := Event{Event: event, By: by, TS: now, Incident: *in}
	b, err := json.Marshal(in)
	if err != nil {
		return e, fmt.Errorf("incident store: %w", err)
	}
	eb, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("incident store: %w", err)
	}
	// What the transaction needs is taken now: it may run later, without m.mu.
	next, audit, stage, log := m.nextID, m.audit, m.stage, m.opt.Log
	var after func()
	fn := func(tx *bolt.Tx) error {
		after = nil
		if err := putNextID(tx, next); err != nil {
			return err
		}
		if err := putIncident(tx, idKey(in.ID), b); err != nil {
			return err
		}
		if audit != nil {
			if err := audit(tx, e); err != nil {
				return err
			}
		}
		if stage != nil {
			a, err := stage(tx, e)
			if err == nil {
				after = a
				return nil
			}
			log.Warn("incident event not staged, kept in the outbox", "id", e.Incident.ID, "err", err)
		}
		ob := tx.Bucket(bOutbox)
		seq, _ := ob.NextSequence()
		return ob.Put(u64(seq), eb)
	}
	err = m.write(fn, func() {
		m.changes.Add(1)
		if after != nil {
			after()
			return
		}
		if err := m.flushLocked(); err != nil {
			m.opt.Log.Warn("incident event kept in the outbox", "err", err)
		}
	})
	if err != nil {
		return e, fmt.Errorf("incident store: %w", err)
	}
	return e, nil
}

// putNextID stores next as the next incident number unless a later one is stored: a commit
// that failed leaves it to the next one.
func putNextID(tx *bolt.Tx, next uint64) error {
	meta := tx.Bucket(bMeta)
	if v := meta.Get(kNextID); len(v) == 8 && binary.BigEndian.Uint64(v) >= next {
		return nil
	}
	return meta.Put(kNextID, u64(next))
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
		if r.Severity.Rank() > in.Severity.Rank() {
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
	if m.suppress(r, now) {
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

// suppress reports whether a new incident of r's source is one too many this window, and
// if so counts it in the source's storm incident instead. Critical incidents of the rack's
// own making (rules, policies, device checks, the uplink) are bounded by the config and
// always open; a critical trap that is suppressed makes the storm critical, so no critical
// condition goes unseen.
func (m *Manager) suppress(r Raise, now time.Time) bool {
	src := r.Source
	if strings.HasPrefix(r.Key, "storm:") {
		return false
	}
	recent := pruneBefore(m.recent[src], now.Add(-m.opt.StormWindow))
	if len(recent) < m.opt.StormLimit || (r.Severity == Critical && src != "trap") {
		if len(recent) < m.opt.StormLimit {
			recent = append(recent, now)
		}
		m.recent[src] = recent
		return false
	}
	m.recent[src] = recent
	key := "storm:" + src
	st := m.storms[key]
	in, open := m.open[key]
	if st == nil || !open {
		st = &storm{}
		m.storms[key] = st
	}
	st.suppressed++
	st.last = now
	summary := fmt.Sprintf("%s opened more than %d incidents in %s: %d more not opened (last: %s)",
		sourceName(src), m.opt.StormLimit, m.opt.StormWindow, st.suppressed, r.Summary)
	sev := Warning
	if r.Severity == Critical {
		sev = Critical
	}
	if !open {
		in = &Incident{Key: key, Rule: RuleStorm, Severity: sev, State: Open, Source: src, Summary: summary,
			Value: st.suppressed, Threshold: m.opt.StormLimit, OpenedAt: now}
		m.open[key] = in
		if _, err := m.commit(in, Opened, "", now); err != nil {
			m.opt.Log.Error("storm incident not stored", "key", key, "err", err)
		}
		return true
	}
	in.Value = st.suppressed
	if sev.Rank() > in.Severity.Rank() {
		in.Severity, in.Summary = sev, summary
		t := now
		in.EscalatedAt = &t
		if _, err := m.commit(in, Escalated, "", now); err != nil {
			m.opt.Log.Error("storm incident not stored", "key", key, "err", err)
		}
		st.dirty = false
		return true
	}
	in.Summary = summary
	st.dirty = true // saved by Tick, not once per suppressed incident
	return true
}

func sourceName(src string) string {
	if src == "" {
		return "an unnamed source"
	}
	return "source " + src
}

// tickStorms saves storm counts that changed and resolves storms quiet for a whole window.
func (m *Manager) tickStorms(now time.Time) []Event {
	var evs []Event
	for key, st := range m.storms {
		in, ok := m.open[key]
		if !ok {
			delete(m.storms, key)
			continue
		}
		if now.Sub(st.last) >= m.opt.StormWindow {
			delete(m.storms, key)
			in.Value = st.suppressed
			if e, err := m.resolveLocked(in, now); err == nil {
				evs = append(evs, e)
			}
			continue
		}
		if st.dirty {
			st.dirty = false
			if err := m.save(in); err != nil {
				m.opt.Log.Error("storm incident not stored", "key", key, "err", err)
			}
		}
	}
	return evs
}

func (m *Manager) save(in *Incident) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	key := idKey(in.ID)
	return m.write(func(tx *bolt.Tx) error { return putIncident(tx, key, b) }, func() { m.changes.Add(1) })
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
	m.resolvedSince = true
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
	evs = append(evs, m.tickStorms(now)...)
	m.prune(now)
	return evs
}

// prune applies the retention bound. Past MaxResolved, the oldest resolved warnings go
// first: a flood of warnings must not push the critical incidents out of the history. Tick
// calls it every second for years, so it reads the store only after a resolution or once
// retention may have expired something (hourly), and writes only when there is something to
// delete.
func (m *Manager) prune(now time.Time) {
	if !m.resolvedSince && now.Before(m.nextPrune) || m.joined > 0 {
		return // a joined write not yet committed is not in the store to count
	}
	m.resolvedSince = false
	m.nextPrune = now.Add(PruneEvery)
	cutoff := now.Add(-m.opt.Retention)
	var del, warnings, criticals [][]byte // warnings and criticals: resolved and kept, oldest first
	m.db.View(func(tx *bolt.Tx) error {
		eachIncident(tx, func(k, v []byte) bool {
			var in Incident
			if json.Unmarshal(v, &in) != nil || in.IsOpen() {
				return true
			}
			k = append([]byte(nil), k...)
			switch {
			case m.opt.Retention > 0 && in.ResolvedAt != nil && in.ResolvedAt.Before(cutoff):
				del = append(del, k)
			case in.Severity == Critical:
				criticals = append(criticals, k)
			default:
				warnings = append(warnings, k)
			}
			return true
		})
		return nil
	})
	if over := len(warnings) + len(criticals) - m.opt.MaxResolved; m.opt.MaxResolved > 0 && over > 0 {
		del = append(del, append(warnings, criticals...)[:over]...)
	}
	if len(del) == 0 {
		return
	}
	err := m.db.Update(func(tx *bolt.Tx) error {
		for _, k := range del {
			if err := deleteIncident(tx, k); err != nil {
				return err
			}
		}
		return nil
	})
	m.changes.Add(1)
	if err != nil {
		m.resolvedSince = true // try again next tick
		m.opt.Log.Error("incident store: retention", "err", err)
	}
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

// OpenKeys returns the key and severity of each open incident (to seed the rules).
func (m *Manager) OpenKeys() map[string]Severity {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Severity{}
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

// All returns the stored incidents, newest first, at most limit (0: all). When there are
// more, the newest critical ones keep up to a quarter of the places, so that a flood of
// warnings cannot hide them.
func (m *Manager) All(limit int) []Incident {
	type rec struct {
		k  string
		in Incident
	}
	var main, crits, spill []rec
	reserve := limit / 4
	critical := []byte(`"severity":"critical"`)
	m.db.View(func(tx *bolt.Tx) error {
		eachNewest(tx, func(k, v []byte) bool {
			isCrit := bytes.Contains(v, critical)
			var to *[]rec
			switch {
			case limit <= 0 || len(main) < limit-reserve:
				to = &main
			case isCrit:
				to = &crits
			case len(spill) < reserve:
				to = &spill
			default:
				return true
			}
			var in Incident
			if json.Unmarshal(v, &in) == nil {
				*to = append(*to, rec{string(k), in})
			}
			return limit <= 0 || len(crits) < reserve
		})
		return nil
	})
	if room := limit - len(main) - len(crits); limit > 0 && len(spill) > room {
		spill = spill[:room]
	}
	all := append(append(main, crits...), spill...)
	sort.Slice(all, func(i, j int) bool { return all[i].k > all[j].k })
	out := make([]Incident, len(all))
	for i, r := range all {
		out[i] = r.in
	}
	return out
}

// Get returns one incident.
func (m *Manager) Get(id string) (Incident, error) {
	var in Incident
	err := m.db.View(func(tx *bolt.Tx) error {
		v := getIncident(tx, idKey(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &in)
	})
	return in, err
}

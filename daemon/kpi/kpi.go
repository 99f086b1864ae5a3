// Package kpi computes what ITOps reports on: MTTA, MTTR, incidents by severity, MTBF, mains
// availability and cooling-in-range, over 24 h, 7 d and 30 d. Availability comes from a log of
// condition changes kept in bbolt (one record per change, so it costs nothing while nothing
// happens); the rest from the incident history. It must not import the site's wiring.
package kpi

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/incident"
)

// Windows are the reporting windows.
var Windows = []struct {
	Name string
	Dur  time.Duration
}{{"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

// Conditions tracked for availability.
const (
	Mains   = "mains"   // mains present (the power policy is not on battery)
	Cooling = "cooling" // inlet temperature in range (the cooling policy is normal)
)

var bLog = []byte("kpi-log")

// Values of a condition in the log. Unknown marks time the daemon was not running (from its
// clean stop, or from when it was last known alive before a crash, to the next start): that
// time counts neither as the condition holding nor as it failing.
const (
	vFailed  byte = 0
	vHeld    byte = 1
	vUnknown byte = 2
)

// Log records condition changes.
type Log struct {
	db     *bolt.DB
	mu     sync.Mutex
	last   map[string]byte
	lastAt map[string]time.Time
	gen    atomic.Uint64
	join   incident.Joiner
	// pending is the change of a condition handed to join and not yet committed.
	pending map[string]change
}

// SetJoiner sets j, offered every later change to store.
func (l *Log) SetJoiner(j incident.Joiner) {
	l.mu.Lock()
	l.join = j
	l.mu.Unlock()
}

// Changes rises with every change stored, so that a reader can tell whether a report is
// still current.
func (l *Log) Changes() uint64 { return l.gen.Load() }

// Open opens the log in db. It writes only to create its buckets in a new database.
func Open(db *bolt.DB) (*Log, error) {
	l := &Log{db: db, last: map[string]byte{}, lastAt: map[string]time.Time{}, pending: map[string]change{}}
	conds := [][]byte{[]byte(Mains), []byte(Cooling)}
	missing := false
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bLog)
		for _, c := range conds {
			if b == nil || b.Bucket(c) == nil {
				missing = true
			}
		}
		return nil
	})
	if missing {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bLog)
			if err != nil {
				return err
			}
			for _, c := range conds {
				if _, err := b.CreateBucketIfNotExists(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("kpi log: %w", err)
		}
	}
	db.View(func(tx *bolt.Tx) error {
		for _, c := range conds {
			if k, v := tx.Bucket(bLog).Bucket(c).Cursor().Last(); k != nil && len(v) > 0 {
				l.last[string(c)], l.lastAt[string(c)] = v[0], keyTime(k)
			}
		}
		return nil
	})
	return l, nil
}

func key(t time.Time) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
	return b
}

func keyTime(k []byte) time.Time { return time.Unix(0, int64(binary.BigEndian.Uint64(k))) }

// Record notes the condition's value at t; only changes are stored.
func (l *Log) Record(cond string, ok bool, t time.Time) error {
	v := vFailed
	if ok {
		v = vHeld
	}
	return l.record(cond, v, t)
}

// Down marks every condition unknown from t: the daemon stops (a clean stop), or at a start
// after a run that ended without one, from when that run was last known alive. A time before
// the last change recorded is taken as that change's time (the change was seen, so the daemon
// ran until then).
func (l *Log) Down(t time.Time) error {
	for _, c := range []string{Mains, Cooling} {
		l.mu.Lock()
		at, seen := l.lastAt[c]
		l.mu.Unlock()
		if !seen {
			continue // nothing recorded: nothing to bound
		}
		if t.Before(at) {
			t = at
		}
		if err := l.record(c, vUnknown, t); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) record(cond string, val byte, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, seen := l.last[cond]
	at := l.lastAt[cond]
	if p, ok := l.pending[cond]; ok {
		last, seen, at = p.v, true, p.at
	}
	if seen && last == val {
		return nil
	}
	if !t.After(at) && !at.IsZero() {
		t = at.Add(time.Nanosecond) // keys are times: never overwrite the previous change
	}
	v := []byte{val}
	fn := func(tx *bolt.Tx) error {
		b := tx.Bucket(bLog).Bucket([]byte(cond))
		if err := b.Put(key(t), v); err != nil {
			return err
		}
		// Keep a little over the longest window, and the last change before that, which
		// gives the state at the window's start.
		cut := string(key(t.Add(-31 * 24 * time.Hour)))
		var old [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && string(k) < cut; k, _ = c.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		for i := 0; i+1 < len(old); i++ {
			if err := b.Delete(old[i]); err != nil {
				return err
			}
		}
		return nil
	}
	// last changes only once the change is stored: a failed write is tried again by the
	// next record of the same value.
	stored := func() {
		l.last[cond], l.lastAt[cond] = val, t
		l.gen.Add(1)
	}
	if l.join != nil && l.join(fn, func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if p, ok := l.pending[cond]; ok && p.at.Equal(t) {
			delete(l.pending, cond)
		}
		if err == nil {
			stored()
		}
	}) {
		l.pending[cond] = change{t, val}
		return nil
	}
	if err := l.db.Update(fn); err != nil {
		return fmt.Errorf("kpi log: %w", err)
	}
	stored()
	return nil
}

type change struct {
	at time.Time
	v  byte
}

func (l *Log) changes(cond string) []change {
	var out []change
	l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bLog).Bucket([]byte(cond))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) > 0 {
				out = append(out, change{keyTime(k), v[0]})
			}
			return nil
		})
	})
	return out
}

// Availability is the fraction of [from, to] the condition held, over the part of it the log
// covers (time marked unknown is not covered); ok is false when the log has nothing for that
// time.
func (l *Log) Availability(cond string, from, to time.Time) (float64, bool) {
	var up, total time.Duration
	chs := l.changes(cond)
	for i, c := range chs {
		end := to
		if i+1 < len(chs) {
			end = chs[i+1].at
		}
		start := c.at
		if start.Before(from) {
			start = from
		}
		if end.After(to) {
			end = to
		}
		if !end.After(start) || c.v == vUnknown {
			continue
		}
		total += end.Sub(start)
		if c.v == vHeld {
			up += end.Sub(start)
		}
	}
	if total == 0 {
		return 0, false
	}
	return float64(up) / float64(total), true
}

// Window is the KPIs of one window.
type Window struct {
	Incidents  map[string]int `json:"incidents"` // opened in the window, by severity
	MTTAS      *float64       `json:"mtta_s"`    // mean time to acknowledge (acknowledged ones)
	MTTRS      *float64       `json:"mttr_s"`    // mean time to resolve (resolved ones)
	MTBFS      *float64       `json:"mtbf_s"`    // window / critical incidents (null when none)
	MainsPct   *float64       `json:"mains_availability_pct"`
	CoolingPct *float64       `json:"cooling_in_range_pct"`
	Acked      int            `json:"acknowledged"`
	Resolved   int            `json:"resolved"`
	Unresolved int            `json:"open"`
}

// Report is GET /api/v1/kpis and the retained R/kpis.
type Report struct {
	TS      string            `json:"ts"`
	Windows map[string]Window `json:"windows"`
}

func ptr(f float64) *float64 {
	f = math.Round(f*100) / 100
	return &f
}

// Compute makes the report at now from the incidents (newest first or any order) and the log.
// Incidents raised by the site about itself (device-lost on the uplink) count like the rest.
func Compute(ins []incident.Incident, l *Log, now time.Time, power, cooling bool) Report {
	r := Report{TS: now.UTC().Format(time.RFC3339), Windows: map[string]Window{}}
	for _, w := range Windows {
		from := now.Add(-w.Dur)
		win := Window{Incidents: map[string]int{string(incident.Warning): 0, string(incident.Critical): 0}}
		var tta, ttr time.Duration
		crit := 0
		for _, in := range ins {
			if in.OpenedAt.Before(from) || in.OpenedAt.After(now) {
				continue
			}
			win.Incidents[string(in.Severity)]++
			if in.Severity == incident.Critical {
				crit++
			}
			if in.AckedAt != nil {
				win.Acked++
				tta += in.AckedAt.Sub(in.OpenedAt)
			}
			if in.ResolvedAt != nil {
				win.Resolved++
				ttr += in.ResolvedAt.Sub(in.OpenedAt)
			} else {
				win.Unresolved++
			}
		}
		if win.Acked > 0 {
			win.MTTAS = ptr(tta.Seconds() / float64(win.Acked))
		}
		if win.Resolved > 0 {
			win.MTTRS = ptr(ttr.Seconds() / float64(win.Resolved))
		}
		if crit > 0 {
			win.MTBFS = ptr(w.Dur.Seconds() / float64(crit))
		}
		if power && l != nil {
			if f, ok := l.Availability(Mains, from, now); ok {
				win.MainsPct = ptr(100 * f)
			}
		}
		if cooling && l != nil {
			if f, ok := l.Availability(Cooling, from, now); ok {
				win.CoolingPct = ptr(100 * f)
			}
		}
		r.Windows[w.Name] = win
	}
	return r
}

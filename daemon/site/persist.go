package site

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/traps"
)

// saved keeps small pieces of state (a policy's snapshot, the trap incidents' deadlines) in
// one bbolt bucket, one key each, and writes a piece only when its encoding changed: the
// callers may save on every poll, and a quiet site still writes nothing.
type saved struct {
	db    *bolt.DB
	batch *batch
	last  map[string][]byte
}

var bSaved = []byte("saved-state")

// newSaved reads nothing and writes nothing: the bucket is made by the first save.
func newSaved(db *bolt.DB, b *batch) *saved {
	return &saved{db: db, batch: b, last: map[string][]byte{}}
}

// load reads key into v; false when nothing (readable) was saved.
func (sv *saved) load(key string, v any) bool {
	var b []byte
	sv.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bSaved); bk != nil {
			b = bytes.Clone(bk.Get([]byte(key)))
		}
		return nil
	})
	if b == nil || json.Unmarshal(b, v) != nil {
		return false
	}
	sv.last[key] = b
	return true
}

// save writes v under key if it differs from what was saved last; the write is committed
// (fsync) before save returns, or with the open batch (whose flush comes before anything
// that must follow it on disk).
func (sv *saved) save(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	old, ok := sv.last[key]
	if !ok {
		// Not saved by this process yet: what an earlier run saved may be the same (a
		// restart must not rewrite what it restored).
		sv.db.View(func(tx *bolt.Tx) error {
			if bk := tx.Bucket(bSaved); bk != nil {
				old, ok = bytes.Clone(bk.Get([]byte(key))), bk.Get([]byte(key)) != nil
			}
			return nil
		})
	}
	if ok && bytes.Equal(old, b) {
		sv.last[key] = b
		return nil
	}
	err = sv.batch.write(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bSaved)
		if err != nil {
			return err
		}
		return bk.Put([]byte(key), b)
	}, func() { sv.last[key] = b })
	if err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	return nil
}

// forget deletes key, writing only when something was saved under it.
func (sv *saved) forget(key string) error {
	delete(sv.last, key)
	var has bool
	sv.db.View(func(tx *bolt.Tx) error {
		has = tx.Bucket(bSaved) != nil && tx.Bucket(bSaved).Get([]byte(key)) != nil
		return nil
	})
	if !has {
		return nil
	}
	return sv.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bSaved).Delete([]byte(key)) })
}

// lastAlive estimates when the previous run was last alive, for a run that ended without a
// clean stop (a crash, SIGKILL, a power cut): the newest of the database's and the hold
// file's modification times. Both are written only when something happens (a commit, held
// telemetry), never to keep a heartbeat, so the estimate may be early; the KPI log counts the
// time from it to this start as unknown. Read before the database is opened (opening it
// writes).
func lastAlive(dbPath string) time.Time {
	var t time.Time
	for _, p := range []string{dbPath, holdFile(dbPath)} {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

const keyTraps = "traps"

// saveTraps saves the open trap incidents when the tracker's set changed, so that their
// deadlines (traps.resolve_after from the last trap) and the on-battery ones a poll resolves
// outlive a restart. A UPS repeats its trap (upsTrapOnBattery every minute), and a storm
// repeats any trap: a saved deadline moves in steps of resolve_after/16, so a repeat costs a
// write at most that often, and a restart may resolve the incident that much early (a repeat
// reopens it). Called with s.mu held.
func (s *Site) saveTraps() {
	open := s.traps.tracker.Open()
	changed := len(open) != len(s.traps.saved)
	for k, o := range open {
		last, ok := s.traps.saved[k]
		if !ok || o.Last.Sub(last) >= s.cfg.Traps.ResolveAfter/16 {
			changed = true
			break
		}
	}
	if !changed {
		return
	}
	if err := s.saved.save(keyTraps, open); err != nil {
		s.log.Error("trap incidents not saved", "err", err)
		return
	}
	s.traps.saved = make(map[string]time.Time, len(open))
	for k, o := range open {
		s.traps.saved[k] = o.Last
	}
}

// restoreTraps hands the tracker the trap incidents still open in the incident store, with
// their saved deadlines; one resolved meanwhile is forgotten. An open trap incident with no
// saved deadline (a storm, or a save that failed) runs from now. A deadline that passed while
// the daemon was down resolves on the first tick.
func (s *Site) restoreTraps() {
	var m map[string]traps.OpenTrap
	s.saved.load(keyTraps, &m)
	s.traps.saved = map[string]time.Time{}
	now := s.now()
	for _, in := range s.inc.OpenIncidents() {
		if !strings.HasPrefix(in.Key, "trap:") {
			continue
		}
		if o, ok := m[in.Key]; ok {
			s.traps.tracker.Adopt(in.Key, o.Sender, o.Last, o.OnBatt)
			s.traps.saved[in.Key] = o.Last
			continue
		}
		sender := in.Device
		if rest, ok := strings.CutSuffix(strings.TrimPrefix(in.Key, "trap:"), ":storm"); ok {
			sender = rest
		}
		s.traps.tracker.Adopt(in.Key, sender, now, false)
	}
	s.saveTraps()
}

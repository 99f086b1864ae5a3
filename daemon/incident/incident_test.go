package incident

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

type sink struct {
	evs  []Event
	fail bool
}

func (s *sink) pub(e Event) error {
	if s.fail {
		return errors.New("queue full")
	}
	s.evs = append(s.evs, e)
	return nil
}

func TestLifecycleAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	db := openDB(t, path)
	m, err := New(db, Options{Node: "rack12"})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	m.SetPublisher(s.pub)
	e, err := m.Raise(Raise{Key: "inlet-temp", Device: "inlet-a", Metric: "temperature", Severity: "warning", Value: 28.0, Threshold: 27.0}, t0)
	if err != nil || e.Event != Opened || e.Incident.ID != "rack12-1" {
		t.Fatalf("%+v %v", e, err)
	}
	if e, _ := m.Raise(Raise{Key: "inlet-temp", Severity: "warning", Value: 28.5}, t0.Add(time.Second)); e.Event != "" {
		t.Fatalf("same level raised again: %+v", e)
	}
	e, _ = m.Raise(Raise{Key: "inlet-temp", Severity: "critical", Value: 33.0, Threshold: 32.0}, t0.Add(time.Minute))
	if e.Event != Escalated || e.Incident.Severity != "critical" {
		t.Fatalf("%+v", e)
	}
	e, err = m.Ack("rack12-1", "alice", t0.Add(2*time.Minute))
	if err != nil || e.Event != AckedEvent || e.Incident.AckedBy != "alice" || e.By != "alice" {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := m.Ack("rack12-99", "alice", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ack of unknown: %v", err)
	}
	// Restart: the incident is still open, acknowledged, and raising it again opens nothing.
	db.Close()
	db = openDB(t, path)
	defer db.Close()
	m, err = New(db, Options{Node: "rack12"})
	if err != nil {
		t.Fatal(err)
	}
	m.SetPublisher(s.pub)
	if open := m.OpenIncidents(); len(open) != 1 || open[0].State != Acknowledged || open[0].Severity != "critical" {
		t.Fatalf("after restart: %+v", open)
	}
	if e, _ := m.Raise(Raise{Key: "inlet-temp", Severity: "critical"}, t0.Add(3*time.Minute)); e.Event != "" {
		t.Fatalf("duplicate after restart: %+v", e)
	}
	e, _ = m.Resolve("inlet-temp", 25.0, t0.Add(4*time.Minute))
	if e.Event != ResolvedEvt || e.Incident.ResolvedAt == nil {
		t.Fatalf("%+v", e)
	}
	if _, err := m.Ack("rack12-1", "bob", t0); !errors.Is(err, ErrResolved) {
		t.Fatalf("ack of resolved: %v", err)
	}
	e, _ = m.Raise(Raise{Key: "inlet-temp", Severity: "warning"}, t0.Add(5*time.Minute))
	if e.Incident.ID != "rack12-2" {
		t.Fatalf("ids must never be reused: %q", e.Incident.ID)
	}
	want := []string{Opened, Escalated, AckedEvent, ResolvedEvt, Opened}
	if len(s.evs) != len(want) {
		t.Fatalf("events %d: %+v", len(s.evs), s.evs)
	}
	for i, w := range want {
		if s.evs[i].Event != w {
			t.Fatalf("event %d = %s, want %s", i, s.evs[i].Event, w)
		}
	}
	if all := m.All(0); len(all) != 2 || all[0].ID != "rack12-2" {
		t.Fatalf("all, newest first: %+v", all)
	}
}

func TestOutboxKeepsEventsUntilHandedOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	db := openDB(t, path)
	m, _ := New(db, Options{Node: "n"})
	s := &sink{fail: true}
	m.SetPublisher(s.pub)
	m.Raise(Raise{Key: "a", Severity: "critical"}, t0)
	m.Raise(Raise{Key: "b", Severity: "critical"}, t0)
	if m.Pending() != 2 || len(s.evs) != 0 {
		t.Fatalf("pending %d", m.Pending())
	}
	// A crash now: the events are on disk and go out after the restart, in order.
	db.Close()
	db = openDB(t, path)
	defer db.Close()
	m, _ = New(db, Options{Node: "n"})
	s.fail = false
	if err := m.SetPublisher(s.pub); err != nil {
		t.Fatal(err)
	}
	if m.Pending() != 0 || len(s.evs) != 2 || s.evs[0].Incident.Key != "a" || s.evs[1].Incident.Key != "b" {
		t.Fatalf("after restart: pending %d, %+v", m.Pending(), s.evs)
	}
}

func TestFlappingKeepsOneIncident(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", FlapCount: 3, FlapWindow: 10 * time.Minute})
	s := &sink{}
	m.SetPublisher(s.pub)
	now := t0
	for i := 0; i < 10; i++ {
		m.Raise(Raise{Key: "door", Severity: "warning"}, now)
		now = now.Add(10 * time.Second)
		m.Resolve("door", 0, now)
		now = now.Add(10 * time.Second)
	}
	opens := 0
	for _, e := range s.evs {
		if e.Event == Opened {
			opens++
		}
	}
	if opens != 4 {
		t.Fatalf("%d incidents opened for a flapping door, want 4 (3 allowed, then one kept open)", opens)
	}
	open := m.OpenIncidents()
	if len(open) != 1 || open[0].Flaps < 4 {
		t.Fatalf("open %+v", open)
	}
	if evs := m.Tick(now.Add(5 * time.Minute)); len(evs) != 0 {
		t.Fatalf("resolved too early")
	}
	if evs := m.Tick(now.Add(11 * time.Minute)); len(evs) != 1 || evs[0].Event != ResolvedEvt {
		t.Fatalf("flapping incident not resolved after a quiet window: %+v", evs)
	}
}

func TestRetention(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", Retention: time.Hour, MaxResolved: 3})
	for i := 0; i < 6; i++ {
		k := string(rune('a' + i))
		m.Raise(Raise{Key: k, Severity: "warning"}, t0)
		m.Resolve(k, nil, t0.Add(time.Duration(i)*time.Minute))
	}
	m.Tick(t0.Add(6 * time.Minute)) // a resolve has the next tick apply the bound
	if n := len(m.All(0)); n != 3 {
		t.Fatalf("%d kept after six resolves and a tick, want MaxResolved 3", n)
	}
	m.Raise(Raise{Key: "still-open", Severity: "critical"}, t0)
	m.Tick(t0.Add(10 * time.Minute))
	if n := len(m.All(0)); n != 4 {
		t.Fatalf("%d kept, want 3 resolved + 1 open", n)
	}
	m.Tick(t0.Add(2 * time.Hour))
	if all := m.All(0); len(all) != 1 || all[0].Key != "still-open" {
		t.Fatalf("after retention: %+v", all)
	}
}

// commits is how many write transactions db has committed (bbolt's txid counts them).
func commits(db *bolt.DB) int {
	var id int
	db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

// Ticks of a quiet site commit nothing: two hours of one-second ticks over incidents of
// which none expires.
func TestQuietTicksCommitNothing(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", Retention: 24 * time.Hour, MaxResolved: 100})
	for i := 0; i < 3; i++ {
		k := string(rune('a' + i))
		m.Raise(Raise{Key: k, Severity: "warning"}, t0)
		m.Resolve(k, nil, t0.Add(time.Minute))
	}
	m.Raise(Raise{Key: "open", Severity: "critical"}, t0)
	before, changes := commits(db), m.Changes()
	for now := t0.Add(2 * time.Minute); now.Before(t0.Add(2 * time.Hour)); now = now.Add(time.Second) {
		m.Tick(now)
	}
	if n := commits(db) - before; n != 0 {
		t.Fatalf("%d commits in two quiet hours of ticks, want 0", n)
	}
	if m.Changes() != changes {
		t.Fatalf("Changes rose from %d to %d with nothing changed", changes, m.Changes())
	}
	m.Resolve("open", nil, t0.Add(2*time.Hour))
	if m.Changes() == changes {
		t.Fatal("Changes did not rise with a resolve")
	}
	if n := len(m.All(0)); n != 4 {
		t.Fatalf("%d incidents, want 4", n)
	}
	// A restart writes nothing either: the buckets exist.
	before = commits(db)
	if _, err := New(db, Options{Node: "n"}); err != nil {
		t.Fatal(err)
	}
	if n := commits(db) - before; n != 0 {
		t.Fatalf("reopening committed %d times", n)
	}
}

// Retention deletes every expired record in one commit, the hour after the previous prune.
func TestRetentionDeletesAllExpired(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", Retention: time.Hour, StormLimit: 1000})
	for i := 0; i < 300; i++ {
		k := fmt.Sprint("k", i)
		m.Raise(Raise{Key: k, Severity: "warning"}, t0)
		m.Resolve(k, nil, t0)
	}
	m.Raise(Raise{Key: "open", Severity: "critical"}, t0)
	m.Tick(t0.Add(30 * time.Minute)) // the first prune: nothing has expired
	before := commits(db)
	m.Tick(t0.Add(80 * time.Minute)) // expired, but the next prune is an hour after the first
	if n := len(m.All(0)); n != 301 || commits(db) != before {
		t.Fatalf("pruned before the hour was up: %d left, %d commits", n, commits(db)-before)
	}
	m.Tick(t0.Add(91 * time.Minute))
	if all := m.All(0); len(all) != 1 || all[0].Key != "open" {
		t.Fatalf("%d left after retention, want the open one", len(all))
	}
	if n := commits(db) - before; n != 1 {
		t.Fatalf("retention took %d commits, want 1", n)
	}
}

// With a stager the event is written in the incident's own transaction: nothing goes through
// the outbox, after runs once committed, and a staging error falls back to the outbox.
func TestStagerOneCommit(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, err := New(db, Options{Node: "rack12"})
	if err != nil {
		t.Fatal(err)
	}
	bQueue := []byte("queue")
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bQueue); return err })
	s := &sink{}
	m.SetPublisher(s.pub)
	var staged, after []string
	fail := false
	m.SetStager(func(tx *bolt.Tx, e Event) (func(), error) {
		if fail {
			return nil, errors.New("queue bucket gone")
		}
		// The incident record is visible in the same transaction.
		if getIncident(tx, idKey(e.Incident.ID)) == nil {
			t.Errorf("incident %s not in the staging transaction", e.Incident.ID)
		}
		staged = append(staged, e.Incident.ID+" "+e.Event)
		if err := tx.Bucket(bQueue).Put([]byte(e.Incident.ID+e.Event), []byte("x")); err != nil {
			return nil, err
		}
		return func() { after = append(after, e.Incident.ID+" "+e.Event) }, nil
	})
	if _, err := m.Raise(Raise{Key: "k", Severity: "warning"}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve("k", 1, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	want := []string{"rack12-1 opened", "rack12-1 resolved"}
	if len(after) != 2 || after[0] != want[0] || after[1] != want[1] || len(staged) != 2 {
		t.Fatalf("staged %v, after %v, want %v", staged, after, want)
	}
	if len(s.evs) != 0 || m.Pending() != 0 {
		t.Fatalf("staged events also went through the outbox: %d published, %d pending", len(s.evs), m.Pending())
	}
	var n int
	db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bQueue).Stats().KeyN; return nil })
	if n != 2 {
		t.Fatalf("%d messages committed with the incidents, want 2", n)
	}
	// A stager that fails: the incident is still stored and its event goes by the outbox.
	fail = true
	e, err := m.Raise(Raise{Key: "k2", Severity: "critical"}, t0.Add(2*time.Minute))
	if err != nil || e.Event != Opened {
		t.Fatalf("%+v %v", e, err)
	}
	if len(s.evs) != 1 || s.evs[0].Incident.ID != "rack12-2" || m.Pending() != 0 {
		t.Fatalf("fallback: published %+v, pending %d", s.evs, m.Pending())
	}
	if got, err := m.Get("rack12-2"); err != nil || got.State != Open {
		t.Fatalf("incident not stored: %+v %v", got, err)
	}
}

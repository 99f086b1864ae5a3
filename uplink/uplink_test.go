package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"go.etcd.io/bbolt"
)

const root = "rackwatch/site1/node1"

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 10 * time.Second, NoFreelistSync: true} /* as daemon/site opens it */)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// tempDB opens a fresh database in the test's temp folder, closed when the test ends (after
// the uplinks start has started are stopped: cleanups run last-in first-out).
func tempDB(t testing.TB) *bbolt.DB {
	t.Helper()
	db := openDB(t, filepath.Join(t.TempDir(), "rw.db"))
	t.Cleanup(func() { db.Close() })
	return db
}

// startMosquitto is testpeer.StartMosquitto that keeps its store across a restart: run as
// root, mosquitto drops to its own user, which cannot write the test's 0700 temp folder, and
// then loses every persistent session (and the messages queued in it) on Stop.
func startMosquitto(t testing.TB, extra ...string) *testpeer.Mosquitto {
	t.Helper()
	if os.Geteuid() == 0 {
		extra = append([]string{"user root"}, extra...)
	}
	return testpeer.StartMosquitto(t, extra...)
}

func testOptions(brokers ...string) Options {
	return Options{
		Brokers: brokers, Prefix: "rackwatch", Site: "site1", Node: "node1",
		Version: "test", BootID: "boot-1",
		BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		ProbeInterval: 300 * time.Millisecond, ConnectTimeout: 5 * time.Second,
		Logger: testLogger(),
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("UPLINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// running is an Uplink whose Run goroutine the test owns.
type running struct {
	*Uplink
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after cancel")
		}
	})
}

func start(t testing.TB, db *bbolt.DB, o Options) *running {
	t.Helper()
	u, err := New(db, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Uplink: u, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- u.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// seqs returns the seq of every message on R/suffix the subscriber saw, in arrival order.
func seqs(t testing.TB, s interface {
	Matching(suffix string, has ...string) []string
}, suffix string) []uint64 {
	t.Helper()
	var out []uint64
	for _, p := range s.Matching(root + "/" + suffix) {
		var m struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal([]byte(p), &m); err != nil {
			t.Fatalf("bad %s payload %q: %v", suffix, p, err)
		}
		out = append(out, m.Seq)
	}
	return out
}

// missing lists the seqs in 1..n that never arrived.
func missing(got []uint64, n uint64) []uint64 {
	seen := map[uint64]bool{}
	for _, s := range got {
		seen[s] = true
	}
	var out []uint64
	for i := uint64(1); i <= n; i++ {
		if !seen[i] {
			out = append(out, i)
		}
	}
	return out
}

func distinct(got []uint64) int {
	seen := map[uint64]bool{}
	for _, s := range got {
		seen[s] = true
	}
	return len(seen)
}

func reading(i int) []Reading {
	return []Reading{{Device: "ups1", Metric: "input.voltage", Value: 230 + i%5, Unit: "V", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}}
}

func TestBasics(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")
	db := tempDB(t)
	u := start(t, db, testOptions(m.URL))

	testpeer.Eventually(t, 20*time.Second, "state online", func() bool {
		return len(sub.Matching(root+"/state", `"state":"online"`, `"version":"test"`, `"boot_id":"boot-1"`)) > 0
	})
	for i := 0; i < 3; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Incident(Incident{ID: "inc-1", Event: "opened", Severity: "critical", Rule: "ups1-on-battery",
		Device: "ups1", Metric: "ups.status", Value: "OB", OpenedAt: "2026-11-25T06:00:00.000Z"}); err != nil {
		t.Fatal(err)
	}
	if err := u.Incident(Incident{ID: "inc-1", Event: "acknowledged", Severity: "critical", By: "alice"}); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 20*time.Second, "3 telemetry and 2 incidents", func() bool {
		return len(seqs(t, sub, "telemetry")) >= 3 && len(seqs(t, sub, "incidents")) >= 2
	})
	if got := seqs(t, sub, "telemetry"); fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("telemetry seqs %v, want [1 2 3]", got)
	}
	if got := seqs(t, sub, "incidents"); fmt.Sprint(got) != "[1 2]" {
		t.Errorf("incident seqs %v, want [1 2]", got)
	}
	tel := sub.Matching(root+"/telemetry", `"seq":1,`)[0]
	for _, want := range []string{`"readings":[{"device":"ups1","metric":"input.voltage","value":230,"unit":"V","quality":"good","ts":"2026-11-25T06:00:00.000Z"}]`, `"ts":"20`} {
		if !strings.Contains(tel, want) {
			t.Errorf("telemetry %s lacks %s", tel, want)
		}
	}
	inc := sub.Matching(root+"/incidents", `"seq":1,`)[0]
	for _, want := range []string{`"id":"inc-1"`, `"event":"opened"`, `"severity":"critical"`, `"rule":"ups1-on-battery"`,
		`"value":"OB"`, `"threshold":null`, `"opened_at":"2026-11-25T06:00:00.000Z"`} {
		if !strings.Contains(inc, want) {
			t.Errorf("incident %s lacks %s", inc, want)
		}
	}
	if strings.Contains(inc, `"by"`) {
		t.Errorf("incident %s has an empty by", inc)
	}
	if len(sub.Matching(root+"/incidents", `"by":"alice"`)) != 1 {
		t.Errorf("acknowledged event without by: %v", sub.Matching(root+"/incidents"))
	}
	testpeer.Eventually(t, 20*time.Second, "queue empty", func() bool { return u.Status().Queued == 0 })
	st := u.Status()
	if !st.Connected || st.Broker != m.URL || st.Published != 5 {
		t.Errorf("status %+v", st)
	}

	// Retained topics go out now and again on every connection.
	if err := u.Retain("kpis", map[string]any{"mtta_s": 12}); err != nil {
		t.Fatal(err)
	}
	if err := u.Retain("state", 1); err == nil {
		t.Error("Retain on the reserved state topic accepted")
	}
	testpeer.Eventually(t, 20*time.Second, "kpis", func() bool { return len(sub.Matching(root+"/kpis", `"mtta_s":12`)) == 1 })

	u.stop(t)
	testpeer.Eventually(t, 20*time.Second, "state offline on clean stop", func() bool {
		return len(sub.Matching(root+"/state", `"state":"offline"`)) > 0
	})
	if st := u.Status(); st.Connected {
		t.Errorf("still connected after stop: %+v", st)
	}
}

// TestSeqSurvivesReopen closes and reopens the database between messages: seq continues, and
// messages queued while no broker was reachable go out, in order, once one is.
func TestSeqSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rw.db")
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")

	db := openDB(t, path)
	u, err := New(db, testOptions(m.URL))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Incident(Incident{ID: "a", Event: "opened"}); err != nil {
		t.Fatal(err)
	}
	if st := u.Status(); st.Queued != 4 || st.Incidents != 1 || st.QueuedBytes == 0 {
		t.Errorf("status after 4 enqueues without Run: %+v", st)
	}
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	r := start(t, db, testOptions(m.URL))
	if st := r.Status(); st.Queued != 4 {
		t.Errorf("reopened queue holds %d, want 4", st.Queued)
	}
	if err := r.Telemetry(reading(4)); err != nil {
		t.Fatal(err)
	}
	if err := r.Incident(Incident{ID: "a", Event: "resolved"}); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 20*time.Second, "4 telemetry, 2 incidents", func() bool {
		return len(seqs(t, sub, "telemetry")) >= 4 && len(seqs(t, sub, "incidents")) >= 2
	})
	if got := seqs(t, sub, "telemetry"); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Errorf("telemetry seqs %v, want [1 2 3 4]", got)
	}
	if got := seqs(t, sub, "incidents"); fmt.Sprint(got) != "[1 2]" {
		t.Errorf("incident seqs %v, want [1 2]", got)
	}
}

func TestNewRejects(t *testing.T) {
	db := tempDB(t)
	for name, o := range map[string]Options{
		"no broker":     {Prefix: "p", Site: "s", Node: "n"},
		"bad scheme":    {Brokers: []string{"http://h:1"}, Prefix: "p", Site: "s", Node: "n"},
		"no port":       {Brokers: []string{"tcp://h"}, Prefix: "p", Site: "s", Node: "n"},
		"wildcard site": {Brokers: []string{"tcp://h:1"}, Prefix: "p", Site: "s+", Node: "n"},
		"no node":       {Brokers: []string{"tcp://h:1"}, Prefix: "p", Site: "s"},
		"qos 2":         {Brokers: []string{"tcp://h:1"}, Prefix: "p", Site: "s", Node: "n", TelemetryQoS: 2},
		"no password":   {Brokers: []string{"tcp://h:1"}, Prefix: "p", Site: "s", Node: "n", PasswordFile: "/nonexistent"},
		"no ca":         {Brokers: []string{"ssl://h:1"}, Prefix: "p", Site: "s", Node: "n", CAFile: "/nonexistent"},
		"cert w/o key":  {Brokers: []string{"ssl://h:1"}, Prefix: "p", Site: "s", Node: "n", CertFile: "/x"},
	} {
		if _, err := New(db, o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	if _, err := New(nil, testOptions("tcp://h:1")); err == nil {
		t.Error("New accepted a nil db")
	}
}

func sorted(s []uint64) []uint64 {
	s = append([]uint64(nil), s...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// TestHeldTelemetry: with TelemetryFlush, telemetry gets its seq and goes out at once; what
// the broker acknowledged never reaches the disk queue, what it did not is committed when
// Flush (the period) comes, and a clean stop leaves the seq where it was.
func TestHeldTelemetry(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "held-sub")
	path := filepath.Join(t.TempDir(), "rw.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() }) // after the uplinks' own cleanups
	o := testOptions(m.URL)
	o.TelemetryFlush = time.Hour // only Flush and the stop commit in this test
	u := start(t, db, o)
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	for i := 0; i < 5; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	testpeer.Eventually(t, 20*time.Second, "held telemetry out at once", func() bool {
		return len(missing(seqs(t, sub, "telemetry"), 5)) == 0
	})
	testpeer.Eventually(t, 20*time.Second, "all acknowledged", func() bool { return u.Status().Queued == 0 })
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := queuedKeys(t, db, kindTelemetry); n != 0 {
		t.Errorf("%d acknowledged held messages were committed to the queue", n)
	}
	if _, tel := lastSeqs(t, db); tel != reserveStep {
		t.Errorf("bucket sequence %d, want the ceiling %d", tel, reserveStep)
	}
	if fi, err := os.Stat(DefaultHoldFile(path)); err != nil || fi.Size() == 0 {
		t.Errorf("hold file: %v", err)
	}

	// The broker goes away: held telemetry waits in memory and the hold file until the
	// period, then is committed, and goes out once the broker is back.
	m.Stop()
	testpeer.Eventually(t, 20*time.Second, "outage seen", func() bool { return !u.Status().Connected })
	for i := 0; i < 3; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := u.Status(); st.Held != 3 || st.Queued != 3 {
		t.Errorf("status with 3 held offline: %+v", st)
	}
	if n := queuedKeys(t, db, kindTelemetry); n != 0 {
		t.Errorf("%d held messages committed before the period", n)
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := queuedKeys(t, db, kindTelemetry); n != 3 {
		t.Errorf("after Flush the queue holds %d telemetry messages, want 3", n)
	}
	if st := u.Status(); st.Held != 0 || st.Queued != 3 {
		t.Errorf("status after Flush: %+v", st)
	}
	if err := u.Telemetry(reading(9)); err != nil { // held, committed by the stop
		t.Fatal(err)
	}
	u.stop(t)
	if _, tel := lastSeqs(t, db); tel != 9 {
		t.Errorf("after stop the bucket sequence is %d, want 9, the last seq used", tel)
	}
	if _, err := os.Stat(DefaultHoldFile(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hold file still there after a clean stop: %v", err)
	}
	if err := u.Telemetry(reading(10)); err != nil { // after Run: straight to the queue
		t.Fatal(err)
	}
	if _, tel := lastSeqs(t, db); tel != 10 {
		t.Errorf("telemetry after stop got seq %d, want 10", tel)
	}
	m.Start()
	r := start(t, db, o)
	testpeer.Eventually(t, 30*time.Second, "the rest delivered", func() bool {
		return len(missing(seqs(t, sub, "telemetry"), 10)) == 0 && r.Status().Queued == 0
	})
	if err := r.Telemetry(reading(11)); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 20*time.Second, "seq 11 after the restart", func() bool {
		return len(missing(seqs(t, sub, "telemetry"), 11)) == 0
	})
	if got := distinct(seqs(t, sub, "telemetry")); got != 11 {
		t.Errorf("%d distinct telemetry seqs, want 11: %v", got, seqs(t, sub, "telemetry"))
	}
}

// queuedKeys counts the messages of kind in the disk queue.
func queuedKeys(t testing.TB, db *bbolt.DB, kind int) int {
	t.Helper()
	n := 0
	if err := db.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketNames[kind]).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTelemetryQoS0: with QoS 0 telemetry leaves the queue once written to the connection;
// incidents stay QoS 1.
func TestTelemetryQoS0(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")
	db := tempDB(t)
	o := testOptions(m.URL)
	o.TelemetryQoS0 = true
	u := start(t, db, o)
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	for i := 0; i < 5; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Incident(Incident{ID: "q0", Event: "opened"}); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 20*time.Second, "all out", func() bool {
		return len(missing(seqs(t, sub, "telemetry"), 5)) == 0 && len(seqs(t, sub, "incidents")) == 1 && u.Status().Queued == 0
	})
}

// TestIncidentTx stages incidents inside the caller's own transaction: a committed one goes
// out with the next seq after Incident's, a rolled-back one leaves no message and no seq, and
// a read-only or foreign transaction is refused.
func TestIncidentTx(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")
	db := tempDB(t)
	u := start(t, db, testOptions(m.URL))
	if err := u.Incident(Incident{ID: "a", Event: "opened"}); err != nil {
		t.Fatal(err)
	}
	var committed func()
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("caller"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("a"), []byte("resolved")); err != nil {
			return err
		}
		committed, err = u.IncidentTx(tx, Incident{ID: "a", Event: "resolved"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	committed()
	// Rolled back: neither the caller's write nor the message stays.
	rollback := errors.New("caller changed its mind")
	if err := db.Update(func(tx *bbolt.Tx) error {
		if _, err := u.IncidentTx(tx, Incident{ID: "b", Event: "opened"}); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bbolt.Tx) error {
		_, err := u.IncidentTx(tx, Incident{ID: "c", Event: "opened"})
		return err
	}); err == nil {
		t.Error("IncidentTx accepted a read-only transaction")
	}
	if err := u.Incident(Incident{ID: "d", Event: "opened"}); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 20*time.Second, "3 incidents", func() bool { return len(seqs(t, sub, "incidents")) >= 3 })
	if got := seqs(t, sub, "incidents"); fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("incident seqs %v, want [1 2 3]", got)
	}
	if got := sub.Matching(root+"/incidents", `"seq":2,`, `"id":"a"`, `"event":"resolved"`); len(got) != 1 {
		t.Errorf("staged incident not published as seq 2: %v", sub.Matching(root+"/incidents"))
	}
	if got := sub.Matching(root+"/incidents", `"id":"b"`); len(got) != 0 {
		t.Errorf("rolled-back incident published: %v", got)
	}
	testpeer.Eventually(t, 20*time.Second, "queue empty", func() bool { return u.Status().Queued == 0 })
	if st := u.Status(); st.Published != 3 || st.Incidents != 0 {
		t.Errorf("status %+v", st)
	}
}

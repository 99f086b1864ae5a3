package uplink

import (
	"fmt"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"go.etcd.io/bbolt"
)

// TestIncidentDeletesBatched: ten incidents, each acknowledged by a real broker before the
// next, cost ten commits to store and not one more each to delete: the deletes wait for one
// commit (here the one at stop, well before deleteDelay).
func TestIncidentDeletesBatched(t *testing.T) {
	m := startMosquitto(t)
	db := tempDB(t)
	u := start(t, db, testOptions(m.URL))
	testpeer.Eventually(t, 30*time.Second, "connected", func() bool { return u.Status().Connected })
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	w := writes()
	var stored int64
	for i := range 10 {
		before := writes()
		if err := u.Incident(Incident{ID: fmt.Sprint("inc-", i), Event: "opened", Severity: "warning"}); err != nil {
			t.Fatal(err)
		}
		stored += writes() - before
		testpeer.Eventually(t, 30*time.Second, "incident acknowledged", func() bool { return u.Status().Incidents == 0 })
	}
	u.stop(t)
	// What is left after the ten stores: the deletes, in one commit (two or three pages).
	if extra := writes() - w - stored; extra > 4 {
		t.Fatalf("%d page writes besides the ten stores (%d pages): the deletes of acknowledged incidents were not batched", extra, stored)
	}
	var left int
	db.View(func(tx *bbolt.Tx) error { left = tx.Bucket(bucketNames[kindIncident]).Stats().KeyN; return nil })
	if left != 0 {
		t.Fatalf("%d acknowledged incidents still stored after stop", left)
	}
}

// TestIncidentDeletesWait: the deletes of acknowledged incidents alone wait up to
// incidentDeleteDelay for a commit to ride in; once a telemetry delete waits too, all of them
// are due after deleteDelay.
func TestIncidentDeletesWait(t *testing.T) {
	db := tempDB(t)
	u, err := New(db, testOptions("tcp://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Incident(Incident{ID: "inc-1", Event: "opened", Severity: "warning"}); err != nil {
		t.Fatal(err)
	}
	qs, err := u.readFrom(kindIncident, 0, 10)
	if err != nil || len(qs) != 1 {
		t.Fatalf("read %d incidents, err %v", len(qs), err)
	}
	u.ack(kindIncident, qs[0].seq, qs[0].size)
	stored := func() int {
		var n int
		db.View(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketNames[kindIncident]).Stats().KeyN; return nil })
		return n
	}
	u.mu.Lock()
	u.ackedAt = time.Now().Add(-2 * deleteDelay)
	u.mu.Unlock()
	if err := u.flushAcked(false); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n != 1 {
		t.Fatalf("an incident's delete was committed on its own after %v (%d left), before incidentDeleteDelay", 2*deleteDelay, n)
	}
	u.mu.Lock()
	u.acked[kindTelemetry] = append(u.acked[kindTelemetry], 999) // a telemetry delete (of nothing) waits too
	u.mu.Unlock()
	if err := u.flushAcked(false); err != nil {
		t.Fatal(err)
	}
	if n := stored(); n != 0 {
		t.Fatalf("with a telemetry delete waiting, %d incidents left after deleteDelay", n)
	}
}

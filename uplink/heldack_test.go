package uplink

import (
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestHeldAckedWhileCommitted: a held message whose PUBACK arrives while it is being committed
// (commitHeld has taken it, its transaction has not begun) must not stay in the queue. Its
// ack is spent then, and the sender, which has already sent it, never sends it again on that
// connection: the message would count in Queued for as long as the connection lasts.
func TestHeldAckedWhileCommitted(t *testing.T) {
	t.Run("ack", func(t *testing.T) { heldAckedWhileCommitted(t, false) })
	// The deletes of acknowledged messages are committed in that window as well (deleteDelay
	// or a full batch): the ack must not be among them.
	t.Run("ack and deletes", func(t *testing.T) { heldAckedWhileCommitted(t, true) })
}

func heldAckedWhileCommitted(t *testing.T, deletes bool) {
	db := tempDB(t)
	o := testOptions("tcp://127.0.0.1:1")
	o.TelemetryFlush = time.Hour
	o.HoldFile = filepath.Join(t.TempDir(), "q.hold")
	u, err := New(db, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Telemetry([]Reading{{Device: "inlet-1", Metric: "temperature", Value: 22, Unit: "°C", Quality: "good"}}); err != nil {
		t.Fatal(err)
	}
	qs, err := u.readFrom(kindTelemetry, 0, 10) // what serve publishes
	if err != nil || len(qs) != 1 {
		t.Fatalf("read %d held messages, err %v; want 1", len(qs), err)
	}
	q := qs[0]
	// The PUBACK, handled as serve handles it, in the window between commitHeld taking the
	// message and its transaction.
	u.beforeEnqueue = func() {
		u.beforeEnqueue = nil
		u.ack(q.kind, q.seq, q.size)
		if deletes {
			if err := u.flushAcked(true); err != nil {
				t.Error(err)
			}
		}
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := u.flushAcked(true); err != nil {
		t.Fatal(err)
	}
	if st := u.Status(); st.Queued != 0 || st.Held != 0 || st.Published != 1 {
		t.Errorf("after the ack and the commit: queued %d, held %d, published %d; want 0, 0, 1", st.Queued, st.Held, st.Published)
	}
	var stored int
	db.View(func(tx *bbolt.Tx) error { stored = tx.Bucket(bucketNames[kindTelemetry]).Stats().KeyN; return nil })
	if stored != 0 {
		t.Errorf("%d acknowledged telemetry messages stored in the queue", stored)
	}
}

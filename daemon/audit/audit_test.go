package audit

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, c *clock) (*bolt.DB, *Log) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := Open(db, Options{Now: c.now, Retention: 48 * time.Hour, RefusalBurst: 2, RefusalWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return db, l
}

// edit rewrites the stored record seq with f.
func edit(t *testing.T, db *bolt.DB, seq uint64, f func(*Record)) {
	t.Helper()
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bRecords)
		var r Record
		if err := json.Unmarshal(b.Get(seqKey(seq)), &r); err != nil {
			return err
		}
		f(&r)
		v, _ := json.Marshal(r)
		return b.Put(seqKey(seq), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestChainVerifyAndTamper(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, l := open(t, c)
	for i, who := range []string{"alice", "bob", "mqtt:c1", "carol"} {
		c.t = c.t.Add(time.Minute)
		l.Append(Record{Actor: who, Source: Web, Action: ActionAck, Target: "rack12-" + string(rune('1'+i)), Detail: `<&> "quoted"`})
	}
	if n, err := Verify(db); err != nil || n != 4 {
		t.Fatalf("Verify = %d, %v; want 4, nil", n, err)
	}
	recs, _ := l.Records(10)
	if len(recs) != 4 || recs[0].Seq != 4 || recs[3].Seq != 1 || recs[0].Actor != "carol" {
		t.Fatalf("Records not newest first: %+v", recs)
	}
	if want := `{"seq":1,"ts":"2026-01-01T00:01:00.000Z","actor":"alice","source":"web","action":"incident.ack","target":"rack12-1","detail":"<&> \"quoted\""}`; string(recs[3].canonical()) != want {
		t.Fatalf("canonical form:\n got %s\nwant %s", recs[3].canonical(), want)
	}

	edit(t, db, 2, func(r *Record) { r.Actor = "mallory" })
	var b *Broken
	if _, err := Verify(db); !errors.As(err, &b) || b.Seq != 2 || !strings.Contains(b.Reason, "edited") {
		t.Fatalf("edited record: Verify = %v, want record 2 named", err)
	}
	edit(t, db, 2, func(r *Record) { r.Actor = "bob" })
	if _, err := Verify(db); err != nil {
		t.Fatalf("restored: %v", err)
	}
	// Rehashing the edited record moves the break to the next one.
	edit(t, db, 2, func(r *Record) { r.Actor = "mallory"; r.Hash = Chain(recs[3].Hash, *r) })
	if _, err := Verify(db); !errors.As(err, &b) || b.Seq != 3 {
		t.Fatalf("rehashed record: Verify = %v, want record 3 named", err)
	}
	edit(t, db, 2, func(r *Record) { r.Actor = "bob"; r.Hash = recs[2].Hash })

	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bRecords).Delete(seqKey(3)) })
	if _, err := Verify(db); !errors.As(err, &b) || b.Seq != 4 || !strings.Contains(b.Reason, "missing") {
		t.Fatalf("deleted record: Verify = %v, want record 4 named", err)
	}
}

func TestTruncatedTail(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, l := open(t, c)
	for range 3 {
		l.Append(Record{Actor: "a", Source: Web, Action: ActionLogin})
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bRecords).Delete(seqKey(3)) })
	var b *Broken
	if _, err := Verify(db); !errors.As(err, &b) || b.Seq != 3 {
		t.Fatalf("Verify = %v, want record 3 named missing", err)
	}
}

func TestRetentionKeepsAnchor(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, l := open(t, c)
	for range 5 {
		l.Append(Record{Actor: "a", Source: Web, Action: ActionLogin})
		c.t = c.t.Add(24 * time.Hour)
	}
	// Records of day 0..4; now is day 5 + 2 h: retention 48 h keeps day 4's and the new one.
	c.t = c.t.Add(2 * time.Hour)
	l.Append(Record{Actor: "b", Source: Web, Action: ActionLogin})
	recs, _ := l.Records(100)
	if len(recs) != 2 || recs[1].Seq != 5 {
		t.Fatalf("after pruning: %+v", recs)
	}
	if n, err := Verify(db); err != nil || n != 2 {
		t.Fatalf("Verify after pruning = %d, %v", n, err)
	}
	// The chain goes on from the anchor after a restart.
	l2, err := Open(db, Options{Now: c.now, Retention: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l2.Append(Record{Actor: "c", Source: Web, Action: ActionLogin})
	if n, err := Verify(db); err != nil || n != 3 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
	// A start commits nothing; the first record after it applies the retention, and pruning
	// everything old keeps the newest record.
	c.t = c.t.Add(1000 * time.Hour)
	l3, err := Open(db, Options{Now: c.now, Retention: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(db); err != nil || n != 3 {
		t.Fatalf("Verify after a start = %d, %v: the start pruned", n, err)
	}
	l3.Append(Record{Actor: "d", Source: Web, Action: ActionLogin})
	if n, err := Verify(db); err != nil || n != 1 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
}

func TestRefusalsAreCounted(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, l := open(t, c)
	for range 50 {
		l.Refused("192.0.2.7", Record{Actor: "root", Source: Web, Action: ActionLoginFailed, Target: "192.0.2.7"})
	}
	l.Refused("192.0.2.8", Record{Actor: "x", Source: Web, Action: ActionLoginFailed, Target: "192.0.2.8"})
	l.FlushRefusals()
	recs, _ := l.Records(100)
	if len(recs) != 4 {
		t.Fatalf("want 2 + 1 + 1 summary records, got %d: %+v", len(recs), recs)
	}
	if s := recs[0]; s.Action != ActionSuppressed || !strings.HasPrefix(s.Detail, "48 more login.failed from 192.0.2.7") {
		t.Fatalf("summary record: %+v", s)
	}
	if n := l.Suppressed(); n != 48 {
		t.Errorf("Suppressed = %d, want 48", n)
	}
	if _, err := Verify(db); err != nil {
		t.Fatal(err)
	}
}

// TestPublishResumes: records go out oldest first; one whose send failed goes again; what
// was sent is not sent again after a restart, and the rest is.
func TestPublishResumes(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, l := open(t, c)
	for range 3 {
		l.Append(Record{Actor: "a", Source: Web, Action: ActionLogin})
	}
	run := func(l *Log, want int, fail uint64) []uint64 {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan uint64, 10)
		done := make(chan struct{})
		failed := false
		go func() {
			defer close(done)
			l.Publish(ctx, func(_ context.Context, r Record) error {
				if r.Seq == fail && !failed {
					failed = true
					l.Kick()
					return errors.New("broker gone")
				}
				got <- r.Seq
				return nil
			})
		}()
		var seqs []uint64
		for len(seqs) < want {
			select {
			case s := <-got:
				seqs = append(seqs, s)
			case <-time.After(30 * time.Second):
				t.Fatalf("sent %v, want %d records", seqs, want)
			}
		}
		cancel()
		<-done
		return seqs
	}
	if got := run(l, 3, 2); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("first run sent %v", got)
	}
	l2, err := Open(db, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	l2.Append(Record{Actor: "b", Source: Web, Action: ActionLogin})
	if got := run(l2, 1, 0); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("after a restart sent %v, want [4]", got)
	}
}

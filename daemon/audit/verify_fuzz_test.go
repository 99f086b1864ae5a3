package audit

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzVerify: whatever a tampered database holds in a record, its head or its anchor, Verify
// answers with a count or a *Broken, never a panic.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"seq":2,"ts":"2026-01-01T00:00:00.000Z","actor":"a","source":"web","action":"login","target":"","detail":"","hash":""}`), []byte(`{"seq":2,"hash":"x"}`), []byte{0, 0, 0, 0, 0, 0, 0, 2})
	f.Add([]byte(`not json`), []byte(`{}`), []byte{1})
	// No fsync: each input rewrites the buckets, and a sync per input would make the disk,
	// not Verify, what the fuzzer spends its time on.
	db, err := bolt.Open(filepath.Join(f.TempDir(), "f.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l, err := Open(db, Options{Now: c.now})
	if err != nil {
		f.Fatal(err)
	}
	l.Append(Record{Actor: "a", Source: Web, Action: ActionLogin})
	f.Fuzz(func(t *testing.T, rec, meta, key []byte) {
		if len(key) == 0 {
			return
		}
		db.Update(func(tx *bolt.Tx) error {
			tx.DeleteBucket(bRecords)
			tx.DeleteBucket(bMeta)
			r, _ := tx.CreateBucket(bRecords)
			m, _ := tx.CreateBucket(bMeta)
			r.Put(seqKey(1), []byte(`{"seq":1,"ts":"2026-01-01T00:00:00.000Z","actor":"a","source":"web","action":"login","target":"","detail":"","hash":"`+Chain("", Record{Seq: 1, TS: "2026-01-01T00:00:00.000Z", Actor: "a", Source: Web, Action: ActionLogin})+`"}`))
			r.Put(key, rec)
			m.Put(kHead, meta)
			m.Put(kAnchor, meta)
			return nil
		})
		n, err := Verify(db)
		if err == nil && n < 0 {
			t.Fatal("negative count")
		}
		if err != nil {
			if _, ok := err.(*Broken); !ok {
				t.Fatalf("Verify error %T %v, want *Broken", err, err)
			}
		}
	})
}

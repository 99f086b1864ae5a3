package uplink

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"go.etcd.io/bbolt"
)

// crashed is an uplink with held telemetry that is abandoned without a stop, as a SIGKILL
// leaves it: the database is closed, the hold file stays as the last write left it.
func crashed(t *testing.T, n int) (path string, o Options) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "rw.db")
	o = testOptions("tcp://127.0.0.1:1")
	o.TelemetryFlush = time.Hour
	db := openDB(t, path)
	u, err := New(db, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	u.pmu.Lock()
	u.hold.close() // the process is gone; its file is not
	u.pmu.Unlock()
	db.Close()
	return path, o
}

// reopen is the next start after the crash: it returns the queued telemetry seqs and the
// seq the next message gets.
func reopen(t *testing.T, path string, o Options) (queued []uint64, next uint64) {
	t.Helper()
	db := openDB(t, path)
	defer db.Close()
	u, err := New(db, o)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := u.readFrom(kindTelemetry, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		queued = append(queued, q.seq)
	}
	if err := u.Telemetry(reading(99)); err != nil {
		t.Fatal(err)
	}
	if o.TelemetryFlush > 0 {
		u.pmu.Lock()
		next = u.held[len(u.held)-1].seq
		u.hold.close()
		u.pmu.Unlock()
	} else {
		_, next = lastSeqs(t, db)
	}
	return queued, next
}

// wantReopen reopens after the crash and checks what is queued and the next seq.
func wantReopen(t *testing.T, path string, o Options, queued string, next uint64) {
	t.Helper()
	q, n := reopen(t, path, o)
	if fmt.Sprint(q) != queued || n != next {
		t.Errorf("queued %v, next seq %d; want %s, %d", q, n, queued, next)
	}
}

// TestHoldRecovery: after a crash the held messages are queued and the seq carries on
// without a gap; when the hold file cannot be trusted the seq jumps past every seq that
// may have been handed out, and is never reused.
func TestHoldRecovery(t *testing.T) {
	t.Run("same boot", func(t *testing.T) {
		path, o := crashed(t, 3)
		wantReopen(t, path, o, "[1 2 3]", 4)
		// And once more: seq 4, held by the last start, is queued too; the seq carries on.
		wantReopen(t, path, o, "[1 2 3 4]", 5)
	})
	t.Run("without TelemetryFlush next time", func(t *testing.T) {
		path, o := crashed(t, 3)
		o.TelemetryFlush = 0
		wantReopen(t, path, o, "[1 2 3]", 4)
		if _, err := os.Stat(DefaultHoldFile(path)); !os.IsNotExist(err) {
			t.Errorf("hold file kept: %v", err)
		}
	})
	t.Run("clean stop", func(t *testing.T) {
		path, o := crashed(t, 0)
		db := openDB(t, path)
		u, err := New(db, o)
		if err != nil {
			t.Fatal(err)
		}
		u.Telemetry(reading(0))
		if _, err := u.commitHeld(true); err != nil { // what Run does when it returns
			t.Fatal(err)
		}
		db.Close()
		var log testpeer.Buffer
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
		wantReopen(t, path, o, "[1]", 2)
		if strings.Contains(log.String(), "held telemetry is gone") {
			t.Errorf("a clean stop reported as lost telemetry: %s", log.String())
		}
	})
	t.Run("other boot", func(t *testing.T) {
		path, o := crashed(t, 3)
		h, err := readHold(DefaultHoldFile(path))
		if err != nil || len(h.recs) != 3 {
			t.Fatalf("hold file: %+v, %v", h, err)
		}
		msgs := []*heldMsg{}
		for _, r := range h.recs {
			msgs = append(msgs, &heldMsg{seq: r.seq, packed: r.packed})
		}
		hf, err := writeHold(DefaultHoldFile(path), "another-boot", h.start, h.ceiling, msgs)
		if err != nil {
			t.Fatal(err)
		}
		hf.close()
		var log testpeer.Buffer
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
		wantReopen(t, path, o, "[1 2 3]", reserveStep+1)
		if !strings.Contains(log.String(), "held telemetry is gone") || !strings.Contains(log.String(), "hold_file_state=\"stale or from another boot\"") {
			t.Errorf("the lost telemetry is not logged: %s", log.String())
		}
	})
	t.Run("torn tail", func(t *testing.T) {
		path, o := crashed(t, 3)
		f, err := os.OpenFile(DefaultHoldFile(path), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0, 0, 1, 0, 9, 9}) // half a record
		f.Close()
		wantReopen(t, path, o, "[1 2 3]", reserveStep+1)
	})
	t.Run("stale file", func(t *testing.T) {
		// A hold file whose ceiling is not the bucket's (a rewrite after a reservation
		// failed) does not list every seq handed out.
		path, o := crashed(t, 3)
		db := openDB(t, path)
		if err := db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketNames[kindTelemetry]).SetSequence(2 * reserveStep)
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		wantReopen(t, path, o, "[1 2 3]", 2*reserveStep+1)
	})
	t.Run("reservation", func(t *testing.T) {
		// Handing out more seqs than one reservation raises the ceiling, and the hold file
		// follows it: a crash after that still carries on without a gap.
		path, o := crashed(t, reserveStep+5)
		q, next := reopen(t, path, o)
		if len(q) != reserveStep+5 || q[len(q)-1] != reserveStep+5 || next != reserveStep+6 {
			t.Errorf("queued %d (last %v), next seq %d; want %d, %d", len(q), q[len(q)-1:], next, reserveStep+5, reserveStep+6)
		}
	})
}

// TestHoldUnwritable: a hold file that cannot be written costs crash safety, not telemetry:
// the messages still go out and are committed by Flush.
func TestHoldUnwritable(t *testing.T) {
	db := tempDB(t)
	o := testOptions("tcp://127.0.0.1:1")
	o.TelemetryFlush = time.Hour
	o.HoldFile = filepath.Join(t.TempDir(), "no-such-dir", "rw.hold")
	u, err := New(db, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := u.Status(); st.Held != 3 {
		t.Errorf("status %+v", st)
	}
	if err := u.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := queuedKeys(t, db, kindTelemetry); n != 3 {
		t.Errorf("queue holds %d, want 3", n)
	}
}

// TestReadHoldCut reads a hold file cut at every byte: never a panic, always the whole
// records before the cut, and a reason unless the cut falls between records.
func TestReadHoldCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	msgs := []*heldMsg{{seq: 7, packed: pack([]byte(`{"seq":7}`))}, {seq: 8, packed: pack([]byte(`{"seq":8,"readings":[]}`))}}
	hf, err := writeHold(path, "boot", 7, 1030, msgs)
	if err != nil {
		t.Fatal(err)
	}
	hf.close()
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := readHold(path)
	if err != nil || h.bad != "" || h.boot != "boot" || h.start != 7 || h.ceiling != 1030 || len(h.recs) != 2 ||
		!bytes.Equal(h.recs[1].packed, msgs[1].packed) {
		t.Fatalf("whole file read as %+v, %v", h, err)
	}
	hdr := len(holdHeader("boot", 7, 1030))
	rec0 := len(appendHoldRecord(nil, 7, msgs[0].packed))
	for n := 0; n < len(whole); n++ {
		if err := os.WriteFile(path, whole[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := readHold(path)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if n >= hdr+rec0 {
			want = 1
		}
		if len(h.recs) != want || (h.bad == "") != (n == hdr || n == hdr+rec0) {
			t.Errorf("cut at %d: %d records, bad %q", n, len(h.recs), h.bad)
		}
	}
	// A flipped bit in the second record's payload stops the reading there.
	bad := bytes.Clone(whole)
	bad[len(bad)-2] ^= 1
	os.WriteFile(path, bad, 0o600)
	if h, _ := readHold(path); len(h.recs) != 1 || h.bad != "record checksum" {
		t.Errorf("flipped bit: %d records, bad %q", len(h.recs), h.bad)
	}
}

// TestHeldPackedOnlyOnDisk: held telemetry is packed (an encoder of about 1 MB) only when its
// hold file is on a disk, where packing saves flash; in a tmpfs a site whose broker
// acknowledges in time packs nothing, and what it commits is still packed.
func TestHeldPackedOnlyOnDisk(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "rw-test-")
	if err != nil || !inMemory(shm) {
		t.Fatalf("need /dev/shm as a tmpfs for this test: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	// Not t.TempDir: /tmp is a tmpfs on many machines. The package's folder is on a disk.
	disk, err := os.MkdirTemp(".", ".hold-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(disk) })
	if inMemory(disk) {
		t.Skip("the source tree is in memory: no disk to compare with")
	}
	m := startMosquitto(t)
	for _, c := range []struct {
		name, dir string
		wantPacks int64
	}{{"tmpfs", shm, 0}, {"disk", disk, 3}} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "rw.db"))
			t.Cleanup(func() { db.Close() })
			o := testOptions(m.URL)
			o.TelemetryFlush = time.Hour
			o.HoldFile = filepath.Join(c.dir, c.name+".hold")
			u := start(t, db, o)
			testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
			before := packs.Load()
			for i := 0; i < 3; i++ {
				if err := u.Telemetry(reading(i)); err != nil {
					t.Fatal(err)
				}
			}
			testpeer.Eventually(t, 20*time.Second, "all acknowledged", func() bool { return u.Status().Queued == 0 })
			if n := packs.Load() - before; n != c.wantPacks {
				t.Errorf("%d messages packed for 3 held ones the broker acknowledged, want %d", n, c.wantPacks)
			}
			h, err := readHold(o.HoldFile)
			if err != nil || len(h.recs) == 0 {
				t.Fatalf("hold file: %v, %d records", err, len(h.recs))
			}
			if onDisk := h.recs[0].packed[0] == storedZstd; onDisk != (c.wantPacks > 0) {
				t.Errorf("hold file record stored as %#x", h.recs[0].packed[0])
			}
			// Committed, a held message is packed whatever the hold file.
			m.Stop()
			testpeer.Eventually(t, 20*time.Second, "outage seen", func() bool { return !u.Status().Connected })
			if err := u.Telemetry(reading(9)); err != nil {
				t.Fatal(err)
			}
			if err := u.Flush(); err != nil {
				t.Fatal(err)
			}
			m.Start()
			err = db.View(func(tx *bbolt.Tx) error {
				_, v := tx.Bucket(bucketNames[kindTelemetry]).Cursor().Last()
				if len(v) == 0 || v[0] != storedZstd {
					t.Errorf("committed held telemetry not packed (%d bytes, first %.1x)", len(v), v)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

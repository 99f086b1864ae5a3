package site

import (
	"os"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func selfWriteBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skip("no /proc/self/io:", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	t.Skip("no write_bytes in /proc/self/io")
	return 0
}

// TestCommitWritesItsPages: a small commit to a database openDB just created costs the
// storage its own pages (a leaf, a branch, a meta page), not the large folio bbolt's first
// write left in the page cache around the meta pages.
func TestCommitWritesItsPages(t *testing.T) {
	db, _, err := openDB(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	w0 := selfWriteBytes(t)
	const commits = 20
	for i := range commits {
		if err := db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("b")).Put([]byte("k"), []byte(strconv.Itoa(i)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	w := selfWriteBytes(t) - w0
	if w == 0 {
		t.Skip("the temp dir's file system counts no write_bytes (tmpfs)")
	}
	if per := w / commits; per > 3*4096 {
		t.Fatalf("%d bytes written per small commit, want at most three 4 KiB pages", per)
	}
	t.Logf("%d bytes per small commit", w/commits)
}

package incident

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// Incidents are stored in two buckets. Every write goes to bRecent, small enough to stay one
// page or inline in its parent: writing an incident there costs the flash that page, the root
// page and the meta page. bIncidents keeps the rest, which soon spans pages under a branch
// page, so a write there costs one page more (a third more per incident event). Resolved
// incidents move there together, in the commit of the write that takes bRecent past
// recentBytes: one write in several pays for the move. A record is in one bucket only.
// A database from before keeps its incidents in bIncidents; each moves to bRecent when it is
// next written.
var bRecent = []byte("incidents-recent")

// recentBytes is how much resolved incidents bRecent holds before they move (about six of
// the demo's; bbolt puts a bucket below a quarter page inline in its parent).
const recentBytes = 2048

// putIncident stores one incident record under key.
func putIncident(tx *bolt.Tx, key, rec []byte) error {
	if err := tx.Bucket(bIncidents).Delete(key); err != nil { // no write when it is not there
		return err
	}
	recent := tx.Bucket(bRecent)
	if err := recent.Put(key, rec); err != nil {
		return err
	}
	var resolved [][]byte
	size := 0
	c := recent.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if !isOpenRecord(v) {
			resolved = append(resolved, append([]byte(nil), k...))
			size += len(k) + len(v)
		}
	}
	if size <= recentBytes {
		return nil
	}
	archive := tx.Bucket(bIncidents)
	for _, k := range resolved {
		if err := archive.Put(k, append([]byte(nil), recent.Get(k)...)); err != nil {
			return err
		}
		if err := recent.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// isOpenRecord says whether a stored record is of an open incident, without decoding it.
func isOpenRecord(v []byte) bool {
	return !bytes.Contains(v, []byte(`"resolved_at":`))
}

// getIncident returns the record stored under key, or nil.
func getIncident(tx *bolt.Tx, key []byte) []byte {
	if v := tx.Bucket(bRecent).Get(key); v != nil {
		return v
	}
	return tx.Bucket(bIncidents).Get(key)
}

// deleteIncident deletes the record under key, wherever it is.
func deleteIncident(tx *bolt.Tx, key []byte) error {
	if err := tx.Bucket(bRecent).Delete(key); err != nil {
		return err
	}
	return tx.Bucket(bIncidents).Delete(key)
}

// eachIncident calls fn for every stored record, oldest first (by number), until it returns
// false.
func eachIncident(tx *bolt.Tx, fn func(k, v []byte) bool) {
	walk(tx, false, fn)
}

// eachNewest is eachIncident newest first.
func eachNewest(tx *bolt.Tx, fn func(k, v []byte) bool) {
	walk(tx, true, fn)
}

// walk merges the two buckets' cursors in key order.
func walk(tx *bolt.Tx, back bool, fn func(k, v []byte) bool) {
	a, b := tx.Bucket(bRecent).Cursor(), tx.Bucket(bIncidents).Cursor()
	first, next := (*bolt.Cursor).First, (*bolt.Cursor).Next
	if back {
		first, next = (*bolt.Cursor).Last, (*bolt.Cursor).Prev
	}
	ka, va := first(a)
	kb, vb := first(b)
	for ka != nil || kb != nil {
		takeA := kb == nil || ka != nil && (bytes.Compare(ka, kb) < 0) != back
		if takeA {
			if !fn(ka, va) {
				return
			}
			ka, va = next(a)
		} else {
			if !fn(kb, vb) {
				return
			}
			kb, vb = next(b)
		}
	}
}

package incident

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestRecentStaysSmall: incident events write to the small bucket of recent incidents, so an
// event costs the flash fewer pages than a write into the large bucket would (leaf, branch,
// root and meta); resolved incidents move to the large one together; every incident is
// still found once, in order.
func TestRecentStaysSmall(t *testing.T) {
	// As the site opens it (no freelist page per commit), and with a stager that takes the
	// event into the same commit, as the uplink's queue does.
	db, err := bolt.Open(filepath.Join(t.TempDir(), "r.db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m, err := New(db, Options{Node: "rack12", FlapCount: 1000})
	if err != nil {
		t.Fatal(err)
	}
	m.SetStager(func(tx *bolt.Tx, e Event) (func(), error) { return func() {}, nil })
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pages := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	// Enough history first that the large bucket spans pages under a branch page.
	at := t0
	event := func(f func() (Event, error)) {
		at = at.Add(time.Minute)
		if _, err := f(); err != nil {
			t.Fatal(err)
		}
	}
	cycle := func(i int) {
		key := fmt.Sprintf("inlet-%d", i)
		event(func() (Event, error) {
			return m.Raise(Raise{Key: key, Rule: "inlet-hot", Device: "inlet-a", Severity: "warning", Summary: "inlet above 27 °C", Value: 27.9}, at)
		})
		event(func() (Event, error) { return m.Resolve(key, 24.0, at) })
	}
	for i := range 40 {
		cycle(i)
	}
	p0 := pages()
	const n = 60
	for i := 40; i < 40+n; i++ {
		cycle(i)
	}
	per := float64(pages()-p0) / (2 * n)
	t.Logf("%.2f pages written per incident event (meta page included)", per)
	if per > 3.4 {
		t.Errorf("%.2f pages per incident event, want at most 3.4 (4 is a write into the large bucket)", per)
	}
	db.View(func(tx *bolt.Tx) error {
		if st := tx.Bucket(bRecent).Stats(); st.BranchPageN > 0 || st.LeafPageN > 1 {
			t.Errorf("the recent bucket has grown to %d leaf and %d branch pages", st.LeafPageN, st.BranchPageN)
		}
		if st := tx.Bucket(bIncidents).Stats(); st.BranchPageN == 0 {
			t.Errorf("the large bucket has no branch page: the test measured nothing")
		}
		return nil
	})
	all := m.All(0)
	if len(all) != 40+n {
		t.Fatalf("All: %d incidents, want %d", len(all), 40+n)
	}
	for i, in := range all {
		if want := fmt.Sprintf("rack12-%d", 40+n-i); in.ID != want {
			t.Fatalf("All()[%d] = %s, want %s (newest first, each once)", i, in.ID, want)
		}
		if got, err := m.Get(in.ID); err != nil || got.ID != in.ID || got.State != Resolved {
			t.Fatalf("Get(%s) = %+v, %v", in.ID, got, err)
		}
	}
	if got := m.All(10); len(got) != 10 || got[0].ID != "rack12-100" || got[9].ID != "rack12-91" {
		t.Errorf("All(10): %d incidents from %s", len(got), got[0].ID)
	}
}

// TestRecentFromOldStore: a database written before the recent bucket keeps its incidents in
// the large one; they load, an open one moves when it is next written, and none is listed
// twice.
func TestRecentFromOldStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db := openDB(t, path)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	old := []Incident{
		{ID: "rack12-1", Key: "door-open", Rule: "door-open", Severity: "warning", State: Resolved, OpenedAt: t0, ResolvedAt: &t1},
		{ID: "rack12-2", Key: "ups1-on-battery", Rule: "ups1-on-battery", Severity: "critical", State: Open, OpenedAt: t1},
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bIncidents)
		if err != nil {
			return err
		}
		for _, in := range old {
			v, _ := json.Marshal(in)
			if err := b.Put(idKey(in.ID), v); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucket(bMeta)
		if err != nil {
			return err
		}
		return meta.Put(kNextID, u64(3))
	}); err != nil {
		t.Fatal(err)
	}
	m, err := New(db, Options{Node: "rack12"})
	if err != nil {
		t.Fatal(err)
	}
	if !m.IsOpen("ups1-on-battery") {
		t.Fatal("the open incident of the old store is not open")
	}
	if _, err := m.Resolve("ups1-on-battery", nil, t1.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Raise(Raise{Key: "leak", Rule: "leak", Severity: "critical"}, t1.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range m.All(0) {
		ids = append(ids, in.ID+" "+string(in.State))
	}
	if got := fmt.Sprint(ids); got != "[rack12-3 open rack12-2 resolved rack12-1 resolved]" {
		t.Errorf("All: %s", got)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bIncidents).Get(idKey("rack12-2")) != nil && tx.Bucket(bRecent).Get(idKey("rack12-2")) != nil {
			t.Error("rack12-2 is stored twice")
		}
		return nil
	})
}

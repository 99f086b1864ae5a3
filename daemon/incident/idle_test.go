package incident

import (
	"path/filepath"
	"testing"
	"time"
)

// Tick runs every second for years: with nothing resolved and nothing past retention it
// writes nothing.
func TestIdleTickWritesNothing(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", Retention: 24 * time.Hour, MaxResolved: 10})
	m.Raise(Raise{Key: "a", Severity: "warning"}, t0)
	m.Resolve("a", nil, t0)
	m.Raise(Raise{Key: "b", Severity: "critical"}, t0)
	m.Tick(t0)
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	before := writes()
	for i := 1; i <= 600; i++ {
		m.Tick(t0.Add(time.Duration(i) * time.Second))
	}
	if w := writes() - before; w != 0 {
		t.Errorf("%d disk writes in 600 idle ticks", w)
	}
	// Retention still applies.
	m.Tick(t0.Add(25 * time.Hour))
	if all := m.All(0); len(all) != 1 || all[0].Key != "b" {
		t.Errorf("after retention: %+v", all)
	}
}

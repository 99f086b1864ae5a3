package incident

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// A source that opens more than StormLimit incidents in a window opens one storm incident
// instead, counting the rest; it resolves after a quiet window with the final count.
func TestStormIsOneIncident(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	db := openDB(t, path)
	m, _ := New(db, Options{Node: "n", StormLimit: 10})
	s := &sink{}
	m.SetPublisher(s.pub)
	now := t0
	for i := 0; i < 100; i++ {
		m.Raise(Raise{Key: fmt.Sprintf("trap:x:%d", i), Source: "trap", Severity: "warning", Summary: fmt.Sprint("trap ", i)}, now)
		now = now.Add(100 * time.Millisecond)
	}
	// Another source is not held back by this one.
	if e, _ := m.Raise(Raise{Key: "door", Source: "rule", Severity: "warning"}, now); e.Event != Opened {
		t.Fatalf("another source's incident: %+v", e)
	}
	opened := map[string]int{}
	for _, e := range s.evs {
		if e.Event == Opened {
			opened[e.Incident.Rule]++
		}
	}
	if opened[RuleStorm] != 1 || len(m.OpenIncidents()) != 12 {
		t.Fatalf("opened %v, %d open; want 10 + door + 1 storm", opened, len(m.OpenIncidents()))
	}
	m.Tick(now)
	in := stormIncident(t, m.All(0))
	if in.Value != float64(90) || in.Source != "trap" || in.Severity != "warning" {
		t.Fatalf("stored storm incident: %+v", in)
	}
	// Restart during the storm: it goes on counting, and resolves after a quiet window.
	db.Close()
	db = openDB(t, path)
	defer db.Close()
	m, _ = New(db, Options{Node: "n", StormLimit: 10})
	m.SetPublisher(s.pub)
	if evs := m.Tick(now.Add(30 * time.Second)); len(evs) != 0 {
		t.Fatalf("resolved during the window: %+v", evs)
	}
	evs := m.Tick(now.Add(2 * time.Minute))
	if len(evs) != 1 || evs[0].Event != ResolvedEvt || evs[0].Incident.Value != 90 {
		t.Fatalf("after a quiet minute: %+v", evs)
	}
	// The next window has room again.
	if e, _ := m.Raise(Raise{Key: "trap:x:late", Source: "trap", Severity: "warning"}, now.Add(3*time.Minute)); e.Event != Opened {
		t.Fatalf("after the storm: %+v", e)
	}
}

// Criticals of the rack's own making always open; a suppressed critical trap makes the
// storm critical.
func TestStormCriticals(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", StormLimit: 3})
	for i := 0; i < 10; i++ {
		if e, _ := m.Raise(Raise{Key: fmt.Sprint("rule-", i), Source: "rule", Severity: "critical"}, t0); e.Event != Opened {
			t.Fatalf("critical rule incident %d not opened: %+v", i, e)
		}
	}
	for i := 0; i < 5; i++ {
		m.Raise(Raise{Key: fmt.Sprint("trap-w", i), Source: "trap", Severity: "warning"}, t0)
	}
	e, _ := m.Raise(Raise{Key: "trap-c", Source: "trap", Severity: "critical", Summary: "ups9 on battery"}, t0)
	if e.Event != "" || m.IsOpen("trap-c") {
		t.Fatalf("critical trap past the limit opened: %+v", e)
	}
	var storm Incident
	for _, in := range m.OpenIncidents() {
		if in.Key == "storm:trap" {
			storm = in
		}
	}
	if storm.Severity != "critical" || storm.EscalatedAt == nil || storm.Value != 3 {
		t.Fatalf("storm after a suppressed critical: %+v", storm)
	}
}

// A flood of warnings pushes neither resolved criticals out of the history nor the newest
// criticals out of All's answer.
func TestCriticalsStayReachable(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "r.db"))
	defer db.Close()
	m, _ := New(db, Options{Node: "n", MaxResolved: 50, StormLimit: 1 << 20})
	now := t0
	raise := func(key string, sev Severity) {
		m.Raise(Raise{Key: key, Source: "rule", Severity: sev}, now)
		m.Resolve(key, nil, now)
		now = now.Add(time.Second)
	}
	for i := 0; i < 8; i++ {
		raise(fmt.Sprint("crit-", i), "critical")
	}
	for i := 0; i < 200; i++ {
		raise(fmt.Sprint("warn-", i), "warning")
	}
	m.Tick(now)
	all := m.All(0)
	crits := 0
	for _, in := range all {
		if in.Severity == "critical" {
			crits++
		}
	}
	if len(all) != 50 || crits != 8 {
		t.Fatalf("after pruning: %d kept, %d critical; want 50 and 8", len(all), crits)
	}
	top := m.All(20) // room for 5 criticals
	crits = 0
	for i, in := range top {
		if in.Severity == "critical" {
			crits++
		}
		if i > 0 && string(idKey(in.ID)) >= string(idKey(top[i-1].ID)) {
			t.Fatalf("not newest first at %d: %s after %s", i, in.ID, top[i-1].ID)
		}
	}
	if len(top) != 20 || crits != 5 || top[0].Key != "warn-199" || top[19].Key != "crit-3" {
		t.Fatalf("All(20): %d, %d critical, first %s, last %s", len(top), crits, top[0].Key, top[len(top)-1].Key)
	}
	// Few criticals: warnings fill every place.
	if n := len(m.All(45)); n != 45 {
		t.Fatalf("All(45) gave %d", n)
	}
}

func stormIncident(t *testing.T, all []Incident) Incident {
	t.Helper()
	for _, in := range all {
		if in.Rule == RuleStorm {
			return in
		}
	}
	t.Fatalf("no storm incident in %+v", all)
	return Incident{}
}

package kpi

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/incident"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func tp(t time.Time) *time.Time { return &t }

func TestAvailabilityAndIncidentKPIs(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "k.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, _ := Open(db)
	// Mains up from t0, lost for 1 h at t0+10h, up again: 23/24 in the day.
	l.Record(Mains, true, t0)
	c := l.Changes()
	l.Record(Mains, true, t0.Add(time.Hour)) // no change: not stored
	if l.Changes() != c {
		t.Fatal("Changes rose without a change")
	}
	l.Record(Mains, false, t0.Add(10*time.Hour))
	l.Record(Mains, true, t0.Add(11*time.Hour))
	now := t0.Add(24 * time.Hour)
	f, ok := l.Availability(Mains, now.Add(-24*time.Hour), now)
	if !ok || math.Abs(f-23.0/24) > 1e-9 {
		t.Fatalf("availability %v %v", f, ok)
	}
	// Over 7 days the log covers only the last day: the share of that day.
	if f, _ := l.Availability(Mains, now.Add(-7*24*time.Hour), now); math.Abs(f-23.0/24) > 1e-9 {
		t.Fatalf("7d availability %v", f)
	}
	if _, ok := l.Availability(Cooling, t0, now); ok {
		t.Fatal("availability of a condition never recorded")
	}
	// Reopen: the last state is remembered, a repeat is not stored twice.
	l2, _ := Open(db)
	l2.Record(Mains, true, now)
	if n := len(l2.changes(Mains)); n != 3 {
		t.Fatalf("%d changes stored", n)
	}

	ins := []incident.Incident{
		{Severity: "critical", OpenedAt: t0.Add(10 * time.Hour), AckedAt: tp(t0.Add(10*time.Hour + 2*time.Minute)), ResolvedAt: tp(t0.Add(11 * time.Hour))},
		{Severity: "warning", OpenedAt: t0.Add(20 * time.Hour), AckedAt: tp(t0.Add(20*time.Hour + 4*time.Minute))},
		{Severity: "critical", OpenedAt: t0.Add(-3 * 24 * time.Hour), ResolvedAt: tp(t0.Add(-3*24*time.Hour + 30*time.Minute))},
	}
	r := Compute(ins, l, now, true, false)
	d := r.Windows["24h"]
	if d.Incidents["critical"] != 1 || d.Incidents["warning"] != 1 || *d.MTTAS != 180 || *d.MTTRS != 3600 || *d.MTBFS != 86400 || d.Unresolved != 1 {
		t.Fatalf("24h: %+v mtta %v mttr %v", d, *d.MTTAS, *d.MTTRS)
	}
	if *d.MainsPct != 95.83 || d.CoolingPct != nil {
		t.Fatalf("24h mains %v cooling %v", *d.MainsPct, d.CoolingPct)
	}
	w := r.Windows["7d"]
	if w.Incidents["critical"] != 2 || *w.MTTRS != (3600+1800)/2 {
		t.Fatalf("7d: %+v", w)
	}
}

// TestDownIsUnknown: the time the daemon was not running counts neither as mains present nor
// as mains lost.
func TestDownIsUnknown(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "k.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, _ := Open(db)
	l.Down(t0.Add(-time.Hour)) // nothing recorded yet: nothing to mark
	l.Record(Mains, true, t0)
	l.Record(Mains, false, t0.Add(10*time.Hour))
	l.Down(t0.Add(11 * time.Hour)) // stopped on battery
	l.Down(t0.Add(12 * time.Hour)) // already unknown: not stored again
	// The restart finds the outage still on, mains back an hour later.
	l2, _ := Open(db)
	l2.Record(Mains, false, t0.Add(13*time.Hour))
	l2.Record(Mains, true, t0.Add(14*time.Hour))
	now := t0.Add(24 * time.Hour)
	f, ok := l2.Availability(Mains, t0, now)
	if !ok || math.Abs(f-20.0/22) > 1e-9 {
		t.Fatalf("availability %v %v, want 20/22", f, ok)
	}
	if n := len(l2.changes(Mains)); n != 5 {
		t.Fatalf("%d changes stored, want 5", n)
	}
	// A crash estimate older than the last change is taken as that change's time.
	l2.Down(t0.Add(time.Hour))
	chs := l2.changes(Mains)
	if last := chs[len(chs)-1]; last.v != vUnknown || last.at.Before(t0.Add(14*time.Hour)) {
		t.Fatalf("down marker %+v before the last change", last)
	}
	if _, ok := l2.Availability(Cooling, t0, now); ok {
		t.Fatal("cooling was never recorded")
	}
}

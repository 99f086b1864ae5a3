package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func ids(t *testing.T, r *receiver) []string {
	t.Helper()
	bodies, _ := r.got()
	var out []string
	for _, b := range bodies {
		var g Generic
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatal(err)
		}
		s := g.ID + ":" + g.Event.Event
		if g.Repeat > 0 {
			s += fmt.Sprintf("#%d", g.Repeat)
		}
		out = append(out, s)
	}
	return out
}

// TestQueueBound: a full queue drops its oldest warnings first, counts them, and never drops
// a critical event.
func TestQueueBound(t *testing.T) {
	dir := t.TempDir()
	r := &receiver{down: true}
	srv := httptest.NewServer(r)
	defer srv.Close()
	db := openDB(t, dir)
	defer db.Close()
	n, stop := start(t, db, Config{Targets: []Target{{Name: "t", Type: "webhook", URL: srv.URL, QueueMax: 3}}, Routes: []Route{{Targets: []string{"t"}}}})
	defer stop()
	stage(t, db, n, event("w1", Opened, "warning"), event("c1", Opened, "critical"), event("w2", Opened, "warning"),
		event("w3", Opened, "warning"), event("c2", Opened, "critical"), event("c3", Opened, "critical"),
		event("w4", Opened, "warning"), event("c4", Opened, "critical"))
	st := n.Stats()[0]
	if st.Dropped != 4 || st.Queued != 4 {
		t.Fatalf("stats %+v, want 4 dropped and the 4 criticals queued", st)
	}
	if d := n.Deliveries("w4")["t"]; d.State != Dropped {
		t.Errorf("w4 at t: %+v, want dropped", d)
	}
	if d := n.Deliveries("c4")["t"]; d.State != Queued {
		t.Errorf("c4 at t: %+v, want queued", d)
	}
	r.setDown(false)
	waitFor(t, "the queue sent", func() bool { return n.Stats()[0].Queued == 0 })
	if got := fmt.Sprint(ids(t, r)); got != "[c1:opened c2:opened c3:opened c4:opened]" {
		t.Fatalf("sent %s", got)
	}
	if d := n.Deliveries("c4")["t"]; d.State != Delivered || d.Event != Opened {
		t.Errorf("c4 at t: %+v, want delivered", d)
	}
}

// TestRoutes: severity, device and rule select the targets; a key left out matches anything.
func TestRoutes(t *testing.T) {
	n, err := New(nil, Config{Targets: []Target{{Name: "a"}, {Name: "b"}, {Name: "c"}}, Routes: []Route{
		{Targets: []string{"a"}},
		{Severity: "critical", Targets: []string{"b"}},
		{Device: "door", Rule: "door-open", Targets: []string{"c"}},
	}}, Options{})
	if err == nil {
		t.Fatal("targets without a type were accepted")
	}
	n = &Notifier{cfg: Config{Routes: []Route{
		{Targets: []string{"a"}},
		{Severity: "critical", Targets: []string{"b"}},
		{Device: "door", Rule: "door-open", Targets: []string{"c"}},
	}}, order: []string{"a", "b", "c"}}
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{Severity: "warning", Device: "leak", Rule: "leak"}, "[a]"},
		{Event{Severity: "critical", Device: "leak", Rule: "leak"}, "[a b]"},
		{Event{Severity: "warning", Device: "door", Rule: "door-open"}, "[a c]"},
		{Event{Severity: "critical", Device: "door", Rule: "other"}, "[a b]"},
	} {
		if got := fmt.Sprint(n.Targets(tc.e)); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.e, got, tc.want)
		}
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestEscalateAndRepeat: an unacknowledged critical incident goes to escalate_to after
// escalate_after, and its later events follow; reminders repeat until it is acknowledged;
// an acknowledged one is not escalated.
func TestEscalateAndRepeat(t *testing.T) {
	dir := t.TempDir()
	oncall, boss := &receiver{}, &receiver{}
	s1, s2 := httptest.NewServer(oncall), httptest.NewServer(boss)
	defer s1.Close()
	defer s2.Close()
	clk := &clock{t: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
	db := openDB(t, dir)
	defer db.Close()
	cfg := Config{Targets: []Target{{Name: "oncall", Type: "webhook", URL: s1.URL}, {Name: "boss", Type: "webhook", URL: s2.URL}},
		Routes: []Route{{Severity: "critical", Targets: []string{"oncall"}, EscalateAfter: 10 * time.Minute, EscalateTo: []string{"boss"}, RepeatEvery: 15 * time.Minute}}}
	cfg.ApplyDefaults()
	n, err := New(db, cfg, Options{Site: "dc1", Node: "rack12", Now: clk.now, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); n.Wait() }()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := event("i1", Opened, "critical"), event("i2", Opened, "critical")
	a.OpenedAt, b.OpenedAt = "2026-12-03T08:00:00.000Z", "2026-12-03T08:00:00.000Z"
	stage(t, db, n, a, b)
	ackB := b
	ackB.Event = Acknowledged
	stage(t, db, n, ackB)
	clk.add(11 * time.Minute)
	n.fire()
	waitFor(t, "the escalation", func() bool { return len(ids(t, boss)) == 1 })
	clk.add(5 * time.Minute)
	n.fire()
	waitFor(t, "the reminder", func() bool { return len(ids(t, oncall)) == 4 })
	resA := a
	resA.Event = Resolved
	stage(t, db, n, resA)
	clk.add(time.Hour)
	n.fire()
	waitFor(t, "the resolution at both", func() bool { return len(ids(t, oncall)) == 5 && len(ids(t, boss)) == 2 })
	if got := fmt.Sprint(ids(t, oncall)); got != "[i1:opened i2:opened i2:acknowledged i1:opened#1 i1:resolved]" {
		t.Errorf("oncall got %s", got)
	}
	if got := fmt.Sprint(ids(t, boss)); got != "[i1:escalated i1:resolved]" {
		t.Errorf("boss got %s", got)
	}
}

package rules

import (
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/sensors"
)

func f(v float64) *float64 { return &v }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func num(v float64, at time.Duration) sensors.Reading {
	return sensors.Num("inlet", "temperature", v, "°C", t0.Add(at))
}

func TestThresholdHysteresisFor(t *testing.T) {
	e := New([]config.Rule{{Name: "hot", Device: "inlet", Metric: "temperature", WarnAbove: f(27), CritAbove: f(32), Hysteresis: 0.5, For: 30 * time.Second}})
	type step struct {
		v    float64
		at   time.Duration
		want Level // level after the step
	}
	steps := []step{
		{25, 0, None},
		{28, 10 * time.Second, None},      // above warn, waiting out `for`
		{28, 39 * time.Second, None},      // 29 s
		{28, 40 * time.Second, Warning},   // 30 s: warning
		{26.8, 50 * time.Second, Warning}, // inside the hysteresis band: stays
		{26.4, 60 * time.Second, None},    // below 27-0.5: clears at once
		{33, 70 * time.Second, None},      // critical needs `for` too
		{33, 100 * time.Second, Critical},
		{31.7, 110 * time.Second, Critical}, // band
		{30, 120 * time.Second, Warning},    // steps down at once
		{20, 130 * time.Second, None},
	}
	for i, s := range steps {
		e.Eval(num(s.v, s.at), t0.Add(s.at), nil)
		if got := e.Level("hot"); got != s.want {
			t.Fatalf("step %d (%v at %v): level %v, want %v", i, s.v, s.at, got, s.want)
		}
	}
}

func TestBlipShorterThanForDoesNothing(t *testing.T) {
	e := New([]config.Rule{{Name: "hot", Device: "inlet", Metric: "temperature", WarnAbove: f(27), For: 30 * time.Second}})
	var ch []Change
	ch = e.Eval(num(30, 0), t0, ch)
	ch = e.Eval(num(22, 20*time.Second), t0.Add(20*time.Second), ch)
	ch = e.Eval(num(30, 40*time.Second), t0.Add(40*time.Second), ch) // the timer starts again
	ch = e.Eval(num(30, 60*time.Second), t0.Add(60*time.Second), ch)
	if len(ch) != 0 {
		t.Fatalf("changes %v", ch)
	}
}

func TestStatusHasEqualsAndUntrusted(t *testing.T) {
	e := New([]config.Rule{
		{Name: "ob", Device: "ups1", Metric: "ups.status", StatusHas: "OB", Severity: "critical"},
		{Name: "lb", Device: "ups1", Metric: "ups.status", StatusHas: "LB", Severity: "warning"},
		{Name: "leak", Device: "leak", Metric: "contact", Equals: &sensors.Value{Num: 1}, Severity: "critical"},
	})
	var ch []Change
	ch = e.Eval(sensors.Text("ups1", "ups.status", "OL", t0), t0, ch)
	ch = e.Eval(sensors.Text("ups1", "ups.status", "OB DISCHRG", t0), t0, ch)
	if len(ch) != 1 || ch[0].Rule != "ob" || ch[0].To != Critical || ch[0].Threshold != "OB" || ch[0].Value != "OB DISCHRG" {
		t.Fatalf("%v", ch)
	}
	// "OLB" is not LB: flags are whole words.
	ch = e.Eval(sensors.Text("ups1", "ups.status", "OB OLB", t0), t0, ch[:0])
	if len(ch) != 0 {
		t.Fatalf("%v", ch)
	}
	stale := sensors.Text("ups1", "ups.status", "OL", t0)
	stale.Quality = sensors.Stale
	if ch = e.Eval(stale, t0, ch[:0]); len(ch) != 0 {
		t.Fatalf("a stale reading changed a rule: %v", ch)
	}
	bad := sensors.Failed("leak", "contact", "", t0)
	bad.Value = 1
	if ch = e.Eval(bad, t0, ch[:0]); len(ch) != 0 {
		t.Fatalf("an error reading fired a rule: %v", ch)
	}
	ch = e.Eval(sensors.Num("leak", "contact", 1, "", t0), t0, ch[:0])
	if len(ch) != 1 || ch[0].To != Critical {
		t.Fatalf("%v", ch)
	}
}

func TestSeedResolvesAfterRestart(t *testing.T) {
	e := New([]config.Rule{{Name: "ob", Device: "ups1", Metric: "ups.status", StatusHas: "OB", Severity: "critical"}})
	e.Seed("ob", Critical)
	if ch := e.Eval(sensors.Text("ups1", "ups.status", "OB", t0), t0, nil); len(ch) != 0 {
		t.Fatalf("a seeded incident was raised again: %v", ch)
	}
	if ch := e.Eval(sensors.Text("ups1", "ups.status", "OL", t0), t0, nil); len(ch) != 1 || ch[0].To != None {
		t.Fatalf("%v", ch)
	}
}

func BenchmarkEval1000Rules(b *testing.B) {
	var rs []config.Rule
	for i := 0; i < 1000; i++ {
		rs = append(rs, config.Rule{Name: "r", Device: "d" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)), Metric: "temperature", WarnAbove: f(27), CritAbove: f(32), Hysteresis: 0.5})
	}
	e := New(rs)
	reads := make([]sensors.Reading, 1000)
	for i := range reads {
		reads[i] = sensors.Num(rs[i].Device, "temperature", 20+float64(i%20), "°C", t0)
	}
	out := make([]Change, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.Eval(reads[i%1000], t0, out[:0])
	}
}

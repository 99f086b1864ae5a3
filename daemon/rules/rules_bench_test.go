package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/sensors"
)

// benchRules is 1,000 rules on 1,000 devices of a rack-sized site: threshold rules on
// temperatures, status rules on UPSes and equals rules on contacts, in the proportions a real
// config has (mostly thresholds).
func benchRules() ([]config.Rule, []sensors.Reading) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var rs []config.Rule
	var reads []sensors.Reading
	for i := range 1000 {
		dev := fmt.Sprintf("dev%04d", i)
		switch i % 10 {
		case 8:
			rs = append(rs, config.Rule{Name: dev, Device: dev, Metric: "ups.status", StatusHas: "OB"})
			reads = append(reads, sensors.Text(dev, "ups.status", "OL CHRG", t0))
		case 9:
			one := sensors.Value{Num: 1}
			rs = append(rs, config.Rule{Name: dev, Device: dev, Metric: "contact", Equals: &one})
			reads = append(reads, sensors.Num(dev, "contact", 0, "", t0))
		default:
			warn, crit := 27.0, 32.0
			rs = append(rs, config.Rule{Name: dev, Device: dev, Metric: "temperature", WarnAbove: &warn, CritAbove: &crit, Hysteresis: 0.5, For: 30 * time.Second})
			reads = append(reads, sensors.Num(dev, "temperature", 20+float64(i%7), "°C", t0))
		}
	}
	return rs, reads
}

// BenchmarkEvalSteady is the hot path: every reading meets its rule and changes nothing, as
// almost every reading of a healthy rack does. One op is one reading. Target (issue 9):
// ≥ 2,000,000 readings/s per core and 0 allocs/op.
func BenchmarkEvalSteady(b *testing.B) {
	rs, reads := benchRules()
	e := New(rs)
	now := reads[0].TS
	out := make([]Change, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.Eval(reads[i%len(reads)], now, out[:0])
	}
	b.StopTimer()
	if len(out) != 0 {
		b.Fatalf("steady readings changed a level: %v", out)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// BenchmarkEvalFlapping is the worst case: every reading flips its rule's level (a contact
// chattering, a status going OB/OL), so every op makes a Change. It must not allocate either:
// the values and thresholds a Change carries are boxed once and reused.
func BenchmarkEvalFlapping(b *testing.B) {
	one := sensors.Value{Num: 1}
	var rs []config.Rule
	for i := range 1000 {
		dev := fmt.Sprintf("dev%04d", i)
		rs = append(rs, config.Rule{Name: dev, Device: dev, Metric: "contact", Equals: &one})
	}
	e := New(rs)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var reads []sensors.Reading
	for v := range 2 {
		for i := range 1000 {
			reads = append(reads, sensors.Num(fmt.Sprintf("dev%04d", i), "contact", float64(1-v), "", t0))
		}
	}
	out := make([]Change, 0, 16)
	changes := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.Eval(reads[i%len(reads)], t0, out[:0])
		changes += len(out)
	}
	b.StopTimer()
	if changes != b.N {
		b.Fatalf("%d changes for %d flips", changes, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// TestChangeValues: the boxed values a Change reuses are the reading's own, in any order.
func TestChangeValues(t *testing.T) {
	warn := 27.0
	e := New([]config.Rule{{Name: "t", Device: "d", Metric: "temperature", WarnAbove: &warn}})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var got []any
	for _, v := range []float64{30, 20, 31, 20, 30, 21, 31} {
		for _, c := range e.Eval(sensors.Num("d", "temperature", v, "°C", t0), t0, nil) {
			got = append(got, c.Value, c.Threshold)
		}
	}
	want := []any{30.0, 27.0, 20.0, 27.0, 31.0, 27.0, 20.0, 27.0, 30.0, 27.0, 21.0, 27.0, 31.0, 27.0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes carried %v, want %v", got, want)
	}
}

package state

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

// BenchmarkRingAdd is one point into a 24 h ring at 10 s.
func BenchmarkRingAdd(b *testing.B) {
	r := NewRing(24 * time.Hour)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Add(t0.Add(time.Duration(i)*10*time.Second), float64(i%50))
	}
}

// BenchmarkHistory24h1000Metrics fills a Store's history with 24 h of 1,000 metrics (100
// devices × 10 metrics) polled every 10 s, and measures the live heap it takes. Targets
// (issue 9): ≤ 4 B per stored point, ≤ 40 MB in all. "Stored point" is a point the store was
// given (8,640 per metric per day): the ring keeps a minute's mean, so memory depends on the
// window, not the poll rate. Run it with -benchtime=1x: one op is the whole day.
func BenchmarkHistory24h1000Metrics(b *testing.B) {
	const devices, metrics, step, day = 100, 10, 10 * time.Second, 24 * time.Hour
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := make([]string, metrics)
	for m := range names {
		names[m] = fmt.Sprintf("metric%d", m)
	}
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		before := liveHeap()
		b.StartTimer()
		s := New(day)
		for d := range devices {
			s.AddDevice(fmt.Sprintf("dev%03d", d), "sim.env")
		}
		rs := make([]sensors.Reading, metrics)
		points := 0
		for at := t0; at.Before(t0.Add(day)); at = at.Add(step) {
			for d := range devices {
				id := fmt.Sprintf("dev%03d", d)
				for m := range rs {
					rs[m] = sensors.Num(id, names[m], 20+float64((d+m)%13)+float64(at.Unix()%600)/100, "°C", at)
				}
				s.Update(id, sensors.DeviceOK, rs, nil, at)
				points += metrics
			}
		}
		b.StopTimer()
		heap := liveHeap() - before
		ring, slots := 0, 0
		for _, r := range s.history {
			ring += r.Bytes()
			slots += len(r.vals)
		}
		if got := len(s.History("dev000", "metric0", t0)); got < 1400 {
			b.Fatalf("history kept %d points of a day", got)
		}
		runtime.KeepAlive(s)
		b.ReportMetric(float64(heap)/float64(points), "heapB/point")
		b.ReportMetric(float64(ring)/float64(points), "ringB/point")
		// Per stored slot (a minute's mean): what the history costs per point it can show,
		// whatever the poll rate.
		b.ReportMetric(float64(heap)/float64(slots), "heapB/slot")
		b.ReportMetric(float64(ring)/float64(slots), "ringB/slot")
		b.ReportMetric(float64(slots), "slots")
		b.ReportMetric(float64(heap)/(1<<20), "heapMB")
		b.ReportMetric(float64(points), "points")
		b.StartTimer()
	}
}

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

package uplink

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDiskBytesPerReading measures what the queue writes per reading in steady state:
// each period one telemetry message is enqueued, the broker acknowledges everything queued,
// and the deletes ride along with the next commit, as they do in Run. Bytes are /proc/self/io
// wchar (what this process handed to write/pwrite, i.e. bbolt's page writes; no network here).
// flush=N holds N messages in memory and commits them together (TelemetryFlush).
func BenchmarkDiskBytesPerReading(b *testing.B) {
	for _, c := range []struct{ readings, flush int }{{30, 1}, {100, 1}, {1000, 1}, {30, 6}, {100, 6}} {
		b.Run(fmt.Sprintf("readings=%d/flush=%d", c.readings, c.flush), func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "q.db"))
			defer db.Close()
			o := testOptions("tcp://127.0.0.1:1")
			if c.flush > 1 {
				o.TelemetryFlush = time.Hour // flushed by hand below
			}
			u, err := New(db, o)
			if err != nil {
				b.Fatal(err)
			}
			rs := make([]Reading, c.readings)
			for i := range rs {
				rs[i] = Reading{Device: fmt.Sprintf("dev-%03d", i/4), Metric: []string{"temperature", "humidity", "voltage", "ups.status"}[i%4],
					Value: 21.5 + float64(i%17)/10, Unit: "°C", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}
			}
			const periods = 300
			step := func(i int) {
				if err := u.Telemetry(rs); err != nil {
					b.Fatal(err)
				}
				if c.flush > 1 && (i+1)%c.flush == 0 {
					if err := u.Flush(); err != nil {
						b.Fatal(err)
					}
				}
				qs, err := u.readFrom(kindTelemetry, 0, 1000)
				if err != nil {
					b.Fatal(err)
				}
				for _, q := range qs {
					u.ack(q.kind, q.seq, q.size)
				}
			}
			for i := 0; i < 2*c.flush; i++ { // reach the steady state
				step(i)
			}
			b.ResetTimer()
			var total int64
			for range b.N {
				w0 := wchar(b)
				for i := 0; i < periods; i++ {
					step(i)
				}
				total += wchar(b) - w0
			}
			b.ReportMetric(float64(total)/float64(b.N*periods*c.readings), "B/reading")
		})
	}
}

func wchar(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no wchar in /proc/self/io")
	return 0
}

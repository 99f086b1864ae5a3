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

// BenchmarkDiskBytesPerReading measures what the queue sends to the storage layer per
// reading: /proc/self/io write_bytes, which counts a page each time one is dirtied, so bbolt's
// page writes count in full and a write to a tmpfs not at all. No network here: the broker's
// acknowledgements are played by the benchmark.
//
//   - committed: queue_flush 0. Each message is one commit before it is published; the
//     broker acknowledges everything queued and the deletes ride along with the next commit,
//     as they do in Run.
//   - held/acked: queue_flush set, a broker connected (the steady state). Messages are held,
//     published and acknowledged; only the seq reservations (one commit per 1,024 messages)
//     reach the disk. The hold file is in /dev/shm, as it is in /run under systemd and on
//     the image.
//   - held-offline: queue_flush set, no broker. Every period's messages are committed
//     together and stay queued: 6 per commit is the default 1 min of 10 s telemetry, 30 is
//     queue_flush: 5m.
func BenchmarkDiskBytesPerReading(b *testing.B) {
	type mode int
	const (
		committed mode = iota
		acked
		offline
	)
	cases := []struct {
		name      string
		mode      mode
		readings  int
		perCommit int // held-offline: messages per period
	}{
		{"committed", committed, 30, 1}, {"committed", committed, 100, 1}, {"committed", committed, 1000, 1},
		{"held-acked", acked, 30, 1}, {"held-acked", acked, 100, 1}, {"held-acked", acked, 1000, 1},
		{"held-offline-1m", offline, 30, 6}, {"held-offline-1m", offline, 100, 6}, {"held-offline-1m", offline, 1000, 6},
		{"held-offline-5m", offline, 30, 30}, {"held-offline-5m", offline, 100, 30},
	}
	for _, c := range cases {
		perCommit := c.perCommit
		b.Run(fmt.Sprintf("%s/readings=%d", c.name, c.readings), func(b *testing.B) {
			db := openDB(b, filepath.Join(b.TempDir(), "q.db"))
			defer db.Close()
			o := testOptions("tcp://127.0.0.1:1")
			if c.mode != committed {
				shm, err := os.MkdirTemp("/dev/shm", "rw-bench-")
				if err != nil {
					b.Skipf("no /dev/shm for the hold file: %v", err)
				}
				defer os.RemoveAll(shm)
				o.TelemetryFlush = time.Hour // committed by hand below
				o.HoldFile = filepath.Join(shm, "q.hold")
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
			// Enough messages that the held rows pay for their seq reservations.
			periods := 10 * perCommit * 6
			if c.mode == acked {
				periods = 4 * reserveStep
			}
			step := func(i int) {
				if err := u.Telemetry(rs); err != nil {
					b.Fatal(err)
				}
				if c.mode == offline {
					if (i+1)%perCommit == 0 {
						if err := u.Flush(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				qs, err := u.readFrom(kindTelemetry, 0, 1000)
				if err != nil {
					b.Fatal(err)
				}
				for _, q := range qs {
					u.ack(q.kind, q.seq, q.size)
				}
			}
			for i := 0; i < 2*perCommit; i++ { // reach the steady state
				step(i)
			}
			b.ResetTimer()
			var total, wc int64
			for range b.N {
				w0, c0 := writeBytes(b)
				for i := 0; i < periods; i++ {
					step(i)
				}
				w1, c1 := writeBytes(b)
				total += w1 - w0
				wc += c1 - c0
			}
			n := float64(b.N * periods * c.readings)
			b.ReportMetric(float64(total)/n, "B/reading")
			b.ReportMetric(float64(wc)/n, "wchar-B/reading")
		})
	}
}

// writeBytes returns this process's write_bytes (bytes it caused to be sent to storage,
// counted as pages are dirtied) and wchar (bytes it handed to write(2) and the like, tmpfs
// included).
func writeBytes(b *testing.B) (storage, wchar int64) {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	found := 0
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "write_bytes":
			storage = n
			found++
		case "wchar":
			wchar = n
			found++
		}
	}
	if found != 2 {
		b.Skip("no write_bytes and wchar in /proc/self/io")
	}
	return storage, wchar
}

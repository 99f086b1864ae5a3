package uplink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// BenchmarkDiskBytesPerReading measures what the queue sends to the storage layer per
// reading: /proc/self/io write_bytes, which counts a page each time one is dirtied, so bbolt's
// page writes count in full and a write to a tmpfs not at all. The broker's acknowledgements
// are played by the benchmark, except in the held-broker rows, where a real mosquitto gives
// them.
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
//   - held-broker: held/acked with a real mosquitto: Run publishes and the PUBACKs remove
//     the messages.
//   - …-disk: the same with the hold file next to the database (no $RUNTIME_DIRECTORY: a
//     service without systemd's runtime folder), so the hold file's writes reach the disk.
func BenchmarkDiskBytesPerReading(b *testing.B) {
	type mode int
	const (
		committed mode = iota
		acked
		offline
		broker
	)
	cases := []struct {
		name      string
		mode      mode
		readings  int
		perCommit int  // held-offline: messages per period
		disk      bool // the hold file next to the database, not in /dev/shm
	}{
		{"committed", committed, 30, 1, false}, {"committed", committed, 100, 1, false}, {"committed", committed, 1000, 1, false},
		{"held-acked", acked, 30, 1, false}, {"held-acked", acked, 100, 1, false}, {"held-acked", acked, 1000, 1, false},
		{"held-offline-1m", offline, 30, 6, false}, {"held-offline-1m", offline, 100, 6, false}, {"held-offline-1m", offline, 1000, 6, false},
		{"held-offline-5m", offline, 30, 30, false}, {"held-offline-5m", offline, 100, 30, false},
		{"held-broker", broker, 30, 1, false}, {"held-broker", broker, 100, 1, false},
		{"held-acked-disk", acked, 30, 1, true}, {"held-acked-disk", acked, 100, 1, true}, {"held-acked-disk", acked, 1000, 1, true},
		{"held-offline-5m-disk", offline, 30, 30, true}, {"held-offline-5m-disk", offline, 100, 30, true},
		{"held-broker-disk", broker, 30, 1, true}, {"held-broker-disk", broker, 100, 1, true},
	}
	for _, c := range cases {
		perCommit := c.perCommit
		b.Run(fmt.Sprintf("%s/readings=%d", c.name, c.readings), func(b *testing.B) {
			dir := b.TempDir()
			db := openDB(b, filepath.Join(dir, "q.db"))
			defer db.Close()
			o := testOptions("tcp://127.0.0.1:1")
			if c.mode == broker {
				o = testOptions(testpeer.StartMosquitto(b).URL)
			}
			if c.mode != committed {
				hold := dir
				if !c.disk {
					shm, err := os.MkdirTemp("/dev/shm", "rw-bench-")
					if err != nil {
						b.Skipf("no /dev/shm for the hold file: %v", err)
					}
					defer os.RemoveAll(shm)
					hold = shm
				}
				o.TelemetryFlush = time.Hour // committed by hand below
				o.HoldFile = filepath.Join(hold, "q.hold")
			}
			u, err := New(db, o)
			if err != nil {
				b.Fatal(err)
			}
			if c.mode == broker {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- u.Run(ctx) }()
				defer func() { cancel(); <-done }()
				testpeer.Eventually(b, 30*time.Second, "connected", func() bool { return u.Status().Connected })
			}
			rs := make([]Reading, c.readings)
			for i := range rs {
				rs[i] = Reading{Device: fmt.Sprintf("dev-%03d", i/4), Metric: []string{"temperature", "humidity", "voltage", "ups.status"}[i%4],
					Value: 21.5 + float64(i%17)/10, Unit: "°C", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}
			}
			// Enough messages that the held rows pay for their seq reservations.
			periods := 10 * perCommit * 6
			if c.mode == acked || c.mode == broker {
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
				if c.mode == broker {
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
			if c.mode == broker {
				waitAcked(b, u, "the first messages", uint64(2*perCommit))
			}
			b.ResetTimer()
			var total, wc int64
			for range b.N {
				w0, c0 := writeBytes(b)
				for i := 0; i < periods; i++ {
					step(i)
				}
				if c.mode == broker {
					waitAcked(b, u, "the timed messages", uint64(periods))
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

// waitAcked waits until u has nothing queued, n messages having just been given to it, for as
// long as acknowledgements keep coming: on a loaded machine they may come slowly, but they
// come. It gives up after a minute without one (or ten minutes in all) and says how far it got.
func waitAcked(b *testing.B, u *Uplink, what string, n uint64) {
	b.Helper()
	const stall, limit = time.Minute, 10 * time.Minute
	st := u.Status()
	start, last, moved := time.Now(), st.Published, time.Now()
	for st.Queued != 0 {
		if st.Published != last {
			last, moved = st.Published, time.Now()
		}
		if time.Since(moved) > stall || time.Since(start) > limit {
			b.Fatalf("%s: %d of %d still queued after %v, no acknowledgement for %v (connected %v, held %d, acknowledged since start %d, connects %d, last error %q)",
				what, st.Queued, n, time.Since(start).Round(time.Second), time.Since(moved).Round(time.Second),
				st.Connected, st.Held, st.Published, st.Connects, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
		st = u.Status()
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

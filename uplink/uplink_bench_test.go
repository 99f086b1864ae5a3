package uplink_test

// Issue 9's uplink measurements. They are benchmarks that do their whole measurement in one op
// (run them with -benchtime=1x) and report it with ReportMetric; they live in the external
// test package so they use only what the daemon uses: New, Telemetry, Run, Status.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/uplink"
)

// benchN is how many messages a drain moves (BENCH_UPLINK_N, default 20,000).
func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_UPLINK_N")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// benchReadings is one telemetry message of n readings, as the site builds it.
func benchReadings(n int) []uplink.Reading {
	rs := make([]uplink.Reading, n)
	for i := range rs {
		rs[i] = uplink.Reading{Device: fmt.Sprintf("inlet-%02d", i), Metric: "temperature", Value: 21.5 + float64(i%7)/10,
			Unit: "°C", Quality: "good", TS: "2026-01-01T00:00:00.000Z"}
	}
	return rs
}

func benchOpen(b *testing.B, brokers ...string) (*bbolt.DB, *uplink.Uplink) {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "q.db"), 0o600, &bbolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	u, err := uplink.New(db, uplink.Options{Brokers: brokers, Prefix: "rackwatch", Site: "bench", Node: "n1",
		Version: "bench", BootID: "b", Logger: slog.New(slog.DiscardHandler),
		BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, QueueMaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	return db, u
}

// counter counts the QoS 1 messages a paho subscriber receives on topic.
func counter(b *testing.B, brokerURL, topic string) *atomic.Int64 {
	b.Helper()
	var n atomic.Int64
	o := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("bench-sub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetOrderMatters(false)
	c := mqtt.NewClient(o)
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		b.Fatal(t.Error())
	}
	if t := c.Subscribe(topic, 1, func(mqtt.Client, mqtt.Message) { n.Add(1) }); t.Wait() && t.Error() != nil {
		b.Fatal(t.Error())
	}
	b.Cleanup(func() { c.Disconnect(250) })
	return &n
}

// BenchmarkUplinkBacklogDrain: N telemetry messages (10 readings each) queued on disk while no
// broker was reachable, then the uplink connects to a real mosquitto and drains them. The rate
// is messages acknowledged by the broker per second, from Run's start to the last PUBACK.
// BenchmarkPlainPahoQoS1 is the baseline on the same broker (target: drain ≥ 0.8× paho).
func BenchmarkUplinkBacklogDrain(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	n := benchN()
	rs := benchReadings(10)
	for range b.N {
		b.StopTimer()
		_, u := benchOpen(b, m.URL)
		for range n {
			if err := u.Telemetry(rs); err != nil {
				b.Fatal(err)
			}
		}
		got := counter(b, m.URL, "rackwatch/bench/n1/telemetry")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- u.Run(ctx) }()
		// Polled every millisecond, not with Eventually's 50 ms, so the end is sharp.
		for deadline := start.Add(5 * time.Minute); u.Status().Published < uint64(n); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("backlog not drained after 5 minutes: %+v", u.Status())
			}
		}
		el := time.Since(start)
		b.StopTimer()
		testpeer.Eventually(b, time.Minute, "the subscriber got every message", func() bool { return got.Load() >= int64(n) })
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
		b.ReportMetric(float64(n), "msgs")
		b.StartTimer()
	}
}

// BenchmarkPlainPahoQoS1 is the baseline: a plain paho client publishing the same N payloads
// with QoS 1 to the same kind of mosquitto, 256 in flight (the uplink's window), timed from the
// first publish to the last PUBACK. No disk, no seq, no queue.
func BenchmarkPlainPahoQoS1(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	n := benchN()
	payload, err := json.Marshal(struct {
		Seq      uint64           `json:"seq"`
		TS       string           `json:"ts"`
		Readings []uplink.Reading `json:"readings"`
	}{1, "2026-01-01T00:00:00.000Z", benchReadings(10)})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		b.StopTimer()
		got := counter(b, m.URL, "rackwatch/bench/n1/telemetry")
		window := make(chan mqtt.Token, 256)
		waitOne := func() {
			t := <-window
			if t.Wait(); t.Error() != nil {
				b.Fatal(t.Error())
			}
		}
		b.StartTimer()
		// The connect is timed, as the uplink's is.
		start := time.Now()
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("bench-paho").SetCleanSession(true))
		if t := c.Connect(); t.Wait() && t.Error() != nil {
			b.Fatal(t.Error())
		}
		for range n {
			if len(window) == cap(window) {
				waitOne()
			}
			window <- c.Publish("rackwatch/bench/n1/telemetry", 1, false, payload)
		}
		for len(window) > 0 {
			waitOne()
		}
		el := time.Since(start)
		b.StopTimer()
		testpeer.Eventually(b, time.Minute, "the subscriber got every message", func() bool { return got.Load() >= int64(n) })
		c.Disconnect(250)
		b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
		b.ReportMetric(float64(n), "msgs")
		b.StartTimer()
	}
}

// BenchmarkUplinkDiskPerReading: bytes this process writes (/proc/self/io: wchar, what it
// hands to write/pwrite; write_bytes, what reached the block layer) per reading queued, for
// telemetry messages of 1, 10 and 100 readings, with no broker (queue only; the deletes after
// a PUBACK are batched and come on top). Target (issue 9): ≤ 64 B per reading.
func BenchmarkUplinkDiskPerReading(b *testing.B) {
	for _, per := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("readings=%d", per), func(b *testing.B) {
			const msgs = 2000
			rs := benchReadings(per)
			for range b.N {
				b.StopTimer()
				_, u := benchOpen(b, "tcp://127.0.0.1:1") // never dialled: Run is not started
				w0, d0 := procIO(b)
				b.StartTimer()
				for range msgs {
					if err := u.Telemetry(rs); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				w1, d1 := procIO(b)
				readings := float64(msgs * per)
				b.ReportMetric(float64(w1-w0)/readings, "wcharB/reading")
				b.ReportMetric(float64(d1-d0)/readings, "diskB/reading")
				b.StartTimer()
			}
		})
	}
}

// procIO returns wchar and write_bytes from /proc/self/io.
func procIO(b *testing.B) (wchar, disk int64) {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "write_bytes":
			disk = n
		}
	}
	return wchar, disk
}

package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkDrainVsPaho measures, in one run and alternating (and swapping which goes first
// on every iteration) so that both see the same machine load, (a) the backlog drain: N telemetry messages of 10 readings queued while no
// broker was reachable, drained by Run to a real mosquitto until the last PUBACK, and (b) a
// plain paho QoS 1 loop publishing the same payloads to the same mosquitto with the same
// 256 messages in flight (no disk, no seq). It reports both rates and drain/paho (issue 6's
// target: ≥ 0.8). N is UPLINK_BENCH_N (default 10,000).
func BenchmarkDrainVsPaho(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("UPLINK_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	m := startMosquitto(b)
	rs := make([]Reading, 10)
	for i := range rs {
		rs[i] = Reading{Device: fmt.Sprintf("inlet-%02d", i), Metric: "temperature", Value: 21.5 + float64(i)/10,
			Unit: "°C", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}
	}
	payload, _ := json.Marshal(struct {
		Seq      uint64    `json:"seq"`
		TS       string    `json:"ts"`
		Readings []Reading `json:"readings"`
	}{1, "2026-11-25T06:00:00.000Z", rs})

	var drainT, pahoT time.Duration
	for i := range b.N {
		// (a) drain: the queue is filled before either side is timed.
		db := openDB(b, filepath.Join(b.TempDir(), fmt.Sprint("q", i, ".db")))
		o := testOptions(m.URL)
		o.QueueMaxBytes = 1 << 30
		if v, err := strconv.Atoi(os.Getenv("UPLINK_BENCH_INFLIGHT")); err == nil {
			o.InFlight = v
		}
		u, err := New(db, o)
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if err := u.Telemetry(rs); err != nil {
				b.Fatal(err)
			}
		}
		drain := func() {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- u.Run(ctx) }()
			// As long as acknowledgements keep coming: a loaded machine is slow, not stuck.
			last, moved := uint64(0), start
			for p := u.Status().Published; p < uint64(n); p = u.Status().Published {
				if p != last {
					last, moved = p, time.Now()
				}
				if time.Since(moved) > time.Minute {
					b.Fatalf("drain: %d of %d acknowledged after %v, none for a minute: %+v", p, n, time.Since(start).Round(time.Second), u.Status())
				}
				time.Sleep(time.Millisecond)
			}
			drainT += time.Since(start)
			cancel()
			<-done
		}

		// (b) plain paho
		paho := func() {
			start := time.Now()
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("bench-paho").SetCleanSession(true))
			if t := c.Connect(); !t.WaitTimeout(time.Minute) || t.Error() != nil {
				b.Fatalf("paho: connect: %v (or no CONNACK within a minute)", t.Error())
			}
			window := make(chan mqtt.Token, 256)
			var failed atomic.Bool
			acked := 0
			wait := func() {
				t := <-window
				if !t.WaitTimeout(time.Minute) {
					b.Fatalf("paho: %d of %d acknowledged after %v, no PUBACK for a minute", acked, n, time.Since(start).Round(time.Second))
				}
				if t.Error() != nil {
					failed.Store(true)
				}
				acked++
			}
			for range n {
				if len(window) == cap(window) {
					wait()
				}
				window <- c.Publish(root+"/telemetry", 1, false, payload)
			}
			for len(window) > 0 {
				wait()
			}
			pahoT += time.Since(start)
			c.Disconnect(100)
			if failed.Load() {
				b.Fatal("a paho publish failed")
			}
		}
		// Alternate which goes first, so that neither always inherits the other's wake.
		if i%2 == 0 {
			drain()
			paho()
		} else {
			paho()
			drain()
		}
		db.Close()
	}
	drain := float64(n*b.N) / drainT.Seconds()
	paho := float64(n*b.N) / pahoT.Seconds()
	b.ReportMetric(drain, "drain-msgs/s")
	b.ReportMetric(paho, "paho-msgs/s")
	b.ReportMetric(drain/paho, "drain/paho")
}

package site

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/contact"
)

// BenchmarkAlarmLatency is issue 9's alarm latency: an edge on a gpiotest pin behind a real
// `contact` device → the debounced reading → the rule → the incident stored and queued → the
// uplink → a real mosquitto → a paho subscriber in this process, on loopback. The clock runs
// from the moment the edge is handed to the contact's Watch until the subscriber holds the
// incident, minus the configured debounce (1 ms), over BENCH_ALARM_EVENTS (default 1,000)
// edges alternating open/resolve. Target: p99 ≤ 15 ms. Run with -benchtime=1x.
//
// The contact is put into the site's device Pool before Run, so the site uses it as it is;
// that is the only seam it needs (no hook in the site).
func BenchmarkAlarmLatency(b *testing.B) {
	events := 1000
	if n, err := strconv.Atoi(os.Getenv("BENCH_ALARM_EVENTS")); err == nil && n > 0 {
		events = n
	}
	const debounce = time.Millisecond
	m := testpeer.StartMosquitto(b)
	for range b.N {
		b.StopTimer()
		cfg, err := config.Parse("latency.yaml", fmt.Appendf(nil, `site: lat
node: n1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"], telemetry_interval: 1h}
incidents: {flap_count: 100000000}
devices:
  - {id: door, driver: contact, pin: GPIO17, active: high, debounce: %s, poll: 1s}
rules:
  - {name: door-open, device: door, metric: contact, equals: 1, severity: critical}
`, b.TempDir(), m.URL, debounce))
		if err != nil {
			b.Fatal(err)
		}
		pin := &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level)}
		dev, err := contact.NewWithPin(cfg.Devices[0], pin)
		if err != nil {
			b.Fatal(err)
		}
		pool := NewPool(sensors.Env{DataDir: cfg.DataDir})
		pool.devs[cfg.Devices[0].ID] = pooled{cfg.Devices[0], dev}

		arrived := make(chan string, events+16)
		sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("latency-sub").SetCleanSession(true))
		if t := sub.Connect(); t.Wait() && t.Error() != nil {
			b.Fatal(t.Error())
		}
		if t := sub.Subscribe("rackwatch/lat/n1/incidents", 1, func(_ mqtt.Client, msg mqtt.Message) {
			var e struct {
				Event string `json:"event"`
			}
			json.Unmarshal(msg.Payload(), &e)
			arrived <- e.Event
		}); t.Wait() && t.Error() != nil {
			b.Fatal(t.Error())
		}

		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan *Site, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, cfg, Options{Version: "bench", Pool: pool, Ready: func(s *Site) { ready <- s }})
		}()
		var s *Site
		select {
		case s = <-ready:
		case err := <-done:
			b.Fatalf("site did not start: %v", err)
		case <-time.After(30 * time.Second):
			b.Fatal("site did not start in 30 s")
		}
		testpeer.Eventually(b, 30*time.Second, "the uplink connected", func() bool { return s.sh.uplink() != nil && s.sh.uplink().Status().Connected })

		lat := make([]time.Duration, 0, events)
		level := gpio.High
		b.StartTimer()
		for i := range events {
			pin.EdgesChan <- level // returns once Watch took the edge
			sent := time.Now()
			want := "opened"
			if level == gpio.Low {
				want = "resolved"
			}
			select {
			case ev := <-arrived:
				if ev != want {
					b.Fatalf("event %d: got %q, want %q", i, ev, want)
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("event %d (%s) not received in 30 s", i, want)
			}
			lat = append(lat, time.Since(sent)-debounce)
			level = !level
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		pool.CloseAll()
		sub.Disconnect(250)
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
		b.ReportMetric(float64(len(lat)), "events")
		b.StartTimer()
	}
}

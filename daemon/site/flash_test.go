package site

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// commits is how many write transactions db has committed: bbolt's txid rises by one with
// each, so the count is exact whatever each commit carried.
func commits(db *bolt.DB) int {
	var id int
	db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

// quietSite is a site on which nothing happens: simulated devices whose readings stay in
// range, rules, both failover policies, a relay, and a real mosquitto.
func quietSite(t *testing.T, broker string) *Site {
	return runSite(t, fmt.Sprintf(`site: quiet
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"], telemetry_interval: 1s}
devices:
  - {id: ups1, driver: sim.ups, poll: 1s}
  - {id: inlet-a, driver: sim.env, poll: 1s, values: {temperature: 23.4, humidity: 41}}
  - {id: inlet-b, driver: sim.env, poll: 1s, values: {temperature: 23.9, humidity: 43}}
  - {id: pdu, driver: sim.power, poll: 1s, values: {voltage: 229.8, current: 6.2, power: 1425}}
  - {id: door, driver: sim.contact, poll: 1s, values: {contact: 0}}
  - {id: genset, driver: sim.relay, safe_state: "off"}
  - {id: crac2, driver: sim.relay, safe_state: "off"}
rules:
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB}
  - {name: inlet-hot, device: inlet-a, metric: temperature, warn_above: 27, crit_above: 32}
  - {name: door-open, device: door, metric: contact, equals: 1}
failover:
  power: {ups: [ups1], generator_relay: genset}
  cooling: {sensors: [inlet-a, inlet-b], metric: temperature, on_above: 27, off_below: 25, backup_relay: crac2}
`, t.TempDir(), broker))
}

// TestQuietSiteCommitsRarely: once started, a quiet site commits to its database at most once
// a minute. Its housekeeping, telemetry, KPIs and uplink run all the while (the window lasts
// fifteen telemetry messages at one a second), so a job that committed on every run, even an
// empty transaction, would show many commits.
func TestQuietSiteCommitsRarely(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "")
	s := quietSite(t, m.URL)
	telemetry := func() int { return len(sub.Matching("/telemetry", `"door"`)) }
	testpeer.Eventually(t, 60*time.Second, "telemetry of every device on mosquitto", func() bool { return telemetry() >= 3 })

	c0, t0, n0 := commits(s.db), time.Now(), telemetry()
	testpeer.Eventually(t, 120*time.Second, "fifteen more telemetry messages", func() bool { return telemetry() >= n0+15 })
	n, elapsed := commits(s.db)-c0, time.Since(t0)
	allowed := 1 + int(elapsed/time.Minute)
	t.Logf("%d commits in %v of quiet", n, elapsed.Round(time.Millisecond))
	if n > allowed {
		t.Fatalf("a quiet site committed %d times in %v, want at most %d (one a minute)", n, elapsed.Round(time.Millisecond), allowed)
	}
	if len(s.inc.OpenIncidents()) != 0 {
		t.Fatalf("the quiet site has incidents: %+v", s.inc.OpenIncidents())
	}
}

// TestRestartCommitsOnce: a start on an existing database commits once for the uplink's seq
// reservation and once for each KPI condition known again (the clean stop marked the time
// after it unknown), however many parts open their buckets or restore their state.
func TestRestartCommitsOnce(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`site: restart
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["tcp://127.0.0.1:%d"]}
devices:
  - {id: ups1, driver: sim.ups, poll: 1s}
  - {id: inlet-a, driver: sim.env, poll: 1s, values: {temperature: 23.4, humidity: 41}}
  - {id: genset, driver: sim.relay, safe_state: "off"}
failover:
  power: {ups: [ups1], generator_relay: genset}
  cooling: {sensors: [inlet-a], metric: temperature, on_above: 27, off_below: 25, backup_relay: genset}
`, dir, testpeer.FreePort(t))
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		before := 0
		if run > 1 {
			db, err := bolt.Open(filepath.Join(dir, "rackwatch.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			before = commits(db)
			db.Close()
		}
		ready := make(chan int, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, cfg, Options{Version: "test", Ready: func(s *Site) { ready <- commits(s.db) }})
		}()
		var atReady int
		select {
		case atReady = <-ready:
		case err := <-done:
			t.Fatalf("run %d: %v", run, err)
		case <-time.After(60 * time.Second):
			t.Fatal("site did not start in 60 s")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if want := 1 + 2; run > 1 && atReady-before > want { // reservation, mains and cooling
			t.Fatalf("a start on an existing database committed %d times, want %d", atReady-before, want)
		}
	}
}

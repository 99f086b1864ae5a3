package site

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/failover"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/sim"
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

// TestOneMomentOneCommit: what one poll result sets off is committed together. A UPS going on
// battery raises the rule's incident, saves the power policy's state, logs the mains KPI and
// raises the policy's incident, all before the generator relay is switched: one commit. Mains
// coming back resolves the rule's incident at once and the policy's once recover_for has
// passed: one commit each. The incidents are still handed on only once stored.
func TestOneMomentOneCommit(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := openClocked(t, `site: moment
node: rack1
devices:
  - {id: ups1, driver: sim.ups, poll: 2s}
  - {id: genset, driver: sim.relay, safe_state: "off"}
rules:
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB, severity: critical}
failover:
  power: {ups: [ups1], generator_relay: genset, recover_for: 10s, confirm_polls: 1}
`, func() time.Time { return at })
	defer s.close()
	// As with an uplink: the event is queued in the incident's own transaction, and handed
	// on once that has committed.
	var published []string
	s.inc.SetStager(func(tx *bolt.Tx, e incident.Event) (func(), error) {
		return func() {
			if _, err := s.inc.Get(e.Incident.ID); err != nil {
				t.Errorf("%s %s handed on before it was stored: %v", e.Event, e.Incident.Key, err)
			}
			published = append(published, e.Event+" "+e.Incident.Key)
		}, nil
	})
	for _, spec := range s.cfg.Devices {
		if spec.ID == "genset" {
			s.devs[spec.ID] = sim.Relay{Device: sim.New("sim.relay", spec, func() time.Time { return at })}
		}
	}
	s.relays = newRelays(s)
	s.policies = newPolicies(s)
	s.policies.runCommands = false
	s.policies.onAction = func(a failover.Action) {
		// The state that decided a relay is on disk before the relay moves.
		var snap failover.PowerSnapshot
		if a.Kind == failover.Relay && (!newSaved(s.db, nil).load(keyPower, &snap) || snap.State == failover.Normal) {
			t.Errorf("relay %s switched with the power policy's state on disk %q", a.Relay, snap.State)
		}
	}
	ups := func(status string) int {
		at = at.Add(2 * time.Second)
		c := commits(s.db)
		s.ingest(poll.Result{Device: "ups1", State: "ok", At: at, Readings: []sensors.Reading{
			sensors.Text("ups1", "ups.status", status, at), sensors.Num("ups1", "battery.runtime", 1800, "s", at)}})
		return commits(s.db) - c
	}
	for range 3 {
		ups("OL")
	}
	n := ups("OB DISCHRG")
	t.Logf("on battery: %d commits, published %q", n, published)
	if n != 1 {
		t.Errorf("going on battery took %d commits, want 1", n)
	}
	if st, _ := s.policies.power.State(); !s.inc.IsOpen("ups1-on-battery") || st == failover.Normal {
		t.Fatalf("open incidents %+v, power policy %s: want the rule's incident and the policy on battery", s.inc.OpenIncidents(), st)
	}
	n = 0
	for range 10 { // mains back, held for recover_for
		n += ups("OL")
	}
	t.Logf("mains back: %d commits", n)
	if n > 2 {
		t.Errorf("mains back took %d commits, want at most 2 (the rule's incident, then the policy's)", n)
	}
	if len(s.inc.OpenIncidents()) != 0 {
		t.Fatalf("open incidents %+v after mains came back", s.inc.OpenIncidents())
	}
	t.Logf("published %q", published)
}

// TestAckedDeletesRide: the delete of an incident message the broker acknowledged rides in
// the next commit that happens anyway (the next incident's), not in one of its own.
func TestAckedDeletesRide(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	s := startBenchSite(t, benchSiteYAML(t, m.URL, ", telemetry_interval: 24h"))
	testpeer.Eventually(t, 60*time.Second, "the uplink connected", func() bool { return s.sh.uplink().Status().Connected })
	drained(t, s)
	queued := func() (n int) {
		s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket([]byte("uplink.incidents")).Stats().KeyN; return nil })
		return n
	}
	raise := func(key string) int { // as a poll result does, in the site's batch
		s.mu.Lock()
		defer s.mu.Unlock()
		c := commits(s.db)
		s.batch.begin()
		s.raise(incident.Raise{Key: key, Rule: "ride", Device: "door", Severity: "warning", Source: "rule", Summary: "ride"}, time.Now())
		s.batch.end(false) // committed at once: this moment may not wait
		return commits(s.db) - c
	}
	for try := range 3 {
		raise(fmt.Sprintf("first-%d", try))
		testpeer.Eventually(t, 60*time.Second, "the broker acknowledged the first", func() bool { return s.sh.uplink().Status().Queued == 0 })
		if queued() != 1 {
			continue // its delete was committed on its own (deleteDelay passed): too slow a machine, again
		}
		if n := raise(fmt.Sprintf("second-%d", try)); n != 1 {
			t.Fatalf("the second incident took %d commits, want 1", n)
		}
		if n := queued(); n != 1 {
			t.Fatalf("%d incident messages in the queue after the second was stored, want 1 (the first's delete rode along)", n)
		}
		return
	}
	t.Fatal("the first incident's delete never waited for the second")
}

// TestMomentsLinger: on a running site a poll result's writes wait for the results that
// follow (three inlets crossing their threshold on polls that end together commit once); an
// edge a device pushed commits at once, with whatever waits (an alarm's path waits for
// nothing); an operator's acknowledgement brings a waiting commit forward and is on disk when
// Ack returns; a reload commits what waits before the next site reads the database.
func TestMomentsLinger(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	// No poll and no tick comes during the test: the moments are the test's.
	s := startBenchSite(t, fmt.Sprintf(`site: linger
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"], telemetry_interval: 24h}
devices:
  - {id: door, driver: sim.contact, poll: 1h, values: {contact: 0}}
rules:
  - {name: door-open, device: door, metric: contact, equals: 1}
`, t.TempDir(), m.URL))
	testpeer.Eventually(t, 60*time.Second, "the uplink connected", func() bool { return s.sh.uplink().Status().Connected })
	drained(t, s)
	result := func(s *Site, key string, pushed bool) { // as ingest takes one
		s.lockMoment()
		defer s.mu.Unlock()
		s.batch.begin()
		s.raise(incident.Raise{Key: key, Rule: "linger", Device: "door", Severity: "warning", Source: "rule", Summary: key}, time.Now())
		s.batch.end(!pushed)
	}
	polled := func(key string) { result(s, key, false) }
	stored := func(key, with string) (ok bool) {
		s.db.View(func(tx *bolt.Tx) error {
			for _, name := range []string{"incidents", "incidents-recent"} {
				tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
					ok = ok || strings.Contains(string(v), `"key":"`+key+`"`) && strings.Contains(string(v), with)
					return nil
				})
			}
			return nil
		})
		return ok
	}
	waits := func(d, queued time.Duration) {
		s.mu.Lock()
		s.batch.wait, s.batch.queued = d, queued
		s.mu.Unlock()
	}
	// Waits longer than the test: only the moments themselves commit.
	waits(time.Hour, time.Hour)

	// Through ingest: a contact's edge is on disk when ingest returns, a poll result's not.
	door := func(v float64, pushed bool) {
		now := time.Now()
		s.ingest(poll.Result{Device: "door", State: "ok", At: now, Pushed: pushed, Readings: []sensors.Reading{sensors.Num("door", "contact", v, "", now)}})
	}
	door(1, true)
	if !stored("door-open", "") {
		t.Fatal("the incident of a pushed edge is not on disk when ingest returned")
	}
	door(0, false)
	if stored("door-open", `"resolved_at"`) {
		t.Fatal("a poll result's resolution committed at once")
	}

	// A pushed edge: committed when its moment ends, with the poll result that waits.
	c := commits(s.db)
	polled("inlet-d")
	if stored("inlet-d", "") {
		t.Fatal("a poll result's moment committed at once")
	}
	result(s, "door-forced", true)
	if !stored("inlet-d", "") || !stored("door-forced", "") || !stored("door-open", `"resolved_at"`) || commits(s.db) != c+1 {
		t.Fatalf("a pushed edge after a waiting poll result: %d commits, want both in 1", commits(s.db)-c)
	}

	// Three at once, the first holding the lock while the others queue: one commit, when
	// the wait is over.
	waits(300*time.Millisecond, time.Hour)
	c = commits(s.db)
	s.mu.Lock()
	var wg sync.WaitGroup
	for _, k := range []string{"inlet-a", "inlet-b", "inlet-c"} {
		wg.Go(func() { polled(k) })
	}
	testpeer.Eventually(t, 10*time.Second, "three moments queued", func() bool { return s.waiting.Load() == 3 })
	s.mu.Unlock()
	wg.Wait()
	testpeer.Eventually(t, 10*time.Second, "the three incidents stored", func() bool {
		return stored("inlet-a", "") && stored("inlet-b", "") && stored("inlet-c", "")
	})
	if n := commits(s.db) - c; n != 1 {
		t.Errorf("three moments in a row took %d commits, want 1", n)
	}
	waits(time.Hour, time.Hour)

	idOf := func(key string) string {
		for _, in := range s.inc.OpenIncidents() {
			if in.Key == key {
				return in.ID
			}
		}
		t.Fatalf("%s is not open", key)
		return ""
	}
	waiting := func(key string) {
		polled(key)
		if stored(key, "") {
			t.Fatalf("%s committed at once", key)
		}
	}
	// An acknowledgement commits what waits, and itself, before it returns.
	waiting("smoke")
	if err := s.Ack(idOf("inlet-a"), "op"); err != nil {
		t.Fatal(err)
	}
	if !stored("smoke", "") || !stored("inlet-a", `"acknowledged_by":"op"`) {
		t.Error("the waiting incident or the acknowledgement is not on disk when Ack returned")
	}

	// A write from outside any moment and outside the site's lock (the incident manager's
	// own) joins what waits and has it committed now, by the timer's goroutine.
	waiting("leak")
	if _, err := s.inc.Ack(idOf("inlet-b"), "op", time.Now()); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 10*time.Second, "an outside write brought the commit forward", func() bool {
		return stored("leak", "") && stored("inlet-b", `"acknowledged_by":"op"`)
	})

	// A reload: the next site reads its incidents from the database, waiting ones included.
	waiting("water")
	if err := s.sh.reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	next := s.sh.current()
	if next == s || !next.inc.IsOpen("water") {
		t.Fatalf("after the reload the site has %d open incidents, and water is not among them", len(next.inc.OpenIncidents()))
	}

	// With others queued a poll result waits the longer queued wait, not its own.
	next.mu.Lock()
	next.batch.wait, next.batch.queued = time.Millisecond, time.Hour
	next.mu.Unlock()
	next.waiting.Add(1)
	result(next, "fire", false)
	next.waiting.Add(-1)
	time.Sleep(200 * time.Millisecond)
	if stored("fire", "") {
		t.Error("a poll result that ended with others queued committed after its own wait")
	}
	next.mu.Lock()
	next.batch.flush()
	next.batch.wait = 50 * time.Millisecond
	next.mu.Unlock()
	// Alone, it commits once its own wait is over.
	result(next, "heat", false)
	testpeer.Eventually(t, 10*time.Second, "the poll result's wait committed", func() bool { return stored("heat", "") })
}

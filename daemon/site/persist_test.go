package site

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/failover"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/daemon/traps"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
)

// TestSavedWritesOnlyChanges: saving the same state again writes nothing to the file.
func TestSavedWritesOnlyChanges(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sv := newSaved(db, newBatch(db, slog.Default()))
	type st struct{ State string }
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	if err := sv.save("k", st{"normal"}); err != nil {
		t.Fatal(err)
	}
	w := writes()
	for range 100 {
		sv.save("k", st{"normal"})
	}
	if writes() != w {
		t.Fatalf("%d writes for an unchanged state", writes()-w)
	}
	sv.save("k", st{"shutdown"})
	if writes() == w {
		t.Fatal("a changed state was not written")
	}
	var got st
	if !newSaved(db, newBatch(db, slog.Default())).load("k", &got) || got.State != "shutdown" {
		t.Fatalf("loaded %+v", got)
	}
}

// startSite runs a site on a data dir with a clock, and returns a stop that waits for it.
func startSite(t *testing.T, yaml string, now func() time.Time) (*Site, func()) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *Site, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Version: "test", Now: now, Ready: func(s *Site) { ready <- s }}) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("site: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case s := <-ready:
		return s, stop
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("site did not start in 30 s")
	}
	return nil, nil
}

// TestTrapDeadlineSurvivesRestart: a trap incident's resolve deadline runs from the trap, not
// from the restart: a trap at 0 with resolve_after 1h, a restart at 10 min, and the incident
// resolves when the clock passes 1h (it would wait until 1h10 if the restart forgot it, and
// forever if it forgot the incident).
func TestTrapDeadlineSurvivesRestart(t *testing.T) {
	snmptrap := testpeer.Require(t, "snmptrap", "snmp")
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	dir := t.TempDir()
	trapPort := testpeer.FreeUDPPort(t)
	yaml := fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
traps: {listen: "127.0.0.1:%d", communities: [public], resolve_after: 1h}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.1:16100", poll: 1s}
`, dir, trapPort)
	s, stop := startSite(t, yaml, clock)
	// coldStart from 127.0.0.1, ups2's address: a warning resolved after resolve_after.
	out, err := exec.Command(snmptrap, "-v", "2c", "-c", "public", fmt.Sprintf("127.0.0.1:%d", trapPort), "", "1.3.6.1.6.3.1.1.5.1").CombinedOutput()
	if err != nil {
		t.Fatalf("snmptrap: %v\n%s", err, out)
	}
	trapOpen := func(s *Site) bool {
		for _, in := range s.Incidents().OpenIncidents() {
			if in.Rule == "snmp-trap" {
				return true
			}
		}
		return false
	}
	testpeer.Eventually(t, 30*time.Second, "the trap's incident", func() bool { return trapOpen(s) })
	stop()

	offset.Store(int64(10 * time.Minute))
	s, _ = startSite(t, yaml, clock)
	if !trapOpen(s) {
		t.Fatal("the trap incident is not open after the restart")
	}
	offset.Store(int64(65 * time.Minute))
	testpeer.Eventually(t, 30*time.Second, "the trap incident resolved 1h after the trap", func() bool { return !trapOpen(s) })
}

// TestKPIDownTime: the time the daemon was not running is unknown in the KPI log, after a
// clean stop (marked by the stop) and after a crash (from the last write to the database).
func TestKPIDownTime(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	dir := t.TempDir()
	yaml := fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
devices:
  - {id: ups1, driver: sim.ups, poll: 1s}
failover:
  power: {ups: [ups1]}
`, dir)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "rackwatch.db")
	started := clock()
	_, stop := startSite(t, yaml, clock)
	offset.Store(int64(time.Hour))
	stop()
	stopped := clock()
	// Nothing was written during that hour as far as the crash estimate can tell: only the
	// stop's own marker says the daemon ran until then.
	if err := os.Chtimes(db, started, started); err != nil {
		t.Fatal(err)
	}

	// Clean stop: ten hours later, the time until the stop is known, the time since unknown.
	offset.Store(int64(10 * time.Hour))
	s, err := open(cfg, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := s.kpis.Availability(kpi.Mains, started.Add(time.Minute), stopped.Add(-time.Minute)); !ok || f != 1 {
		t.Fatalf("mains availability %v %v while the daemon ran, want 1", f, ok)
	}
	if f, ok := s.kpis.Availability(kpi.Mains, stopped.Add(time.Second), clock()); ok {
		t.Fatalf("mains availability %v over time the daemon was stopped, want unknown", f)
	}
	// A run that ends without a stop: mains present from now, the database last written an
	// hour later, a crash, a start four hours after that.
	ran := clock()
	s.kpis.Record(kpi.Mains, true, ran)
	s.close()
	if err := os.Chtimes(db, ran.Add(time.Hour), ran.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(15 * time.Hour))
	s, err = open(cfg, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if f, ok := s.kpis.Availability(kpi.Mains, ran, ran.Add(time.Hour)); !ok || f != 1 {
		t.Fatalf("mains availability %v %v until the last write, want 1", f, ok)
	}
	if f, ok := s.kpis.Availability(kpi.Mains, ran.Add(time.Hour+time.Second), clock()); ok {
		t.Fatalf("mains availability %v after the crash, want unknown", f)
	}
}

// TestTrapRepeatsWriteRarely: a trap repeated every second for an hour moves the saved
// deadline in steps of resolve_after/16, not at every trap.
func TestTrapRepeatsWriteRarely(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tr := traps.New(traps.Config{Devices: map[string]string{"ups2": "127.0.0.5:161"}, Rate: 100, Burst: 100, MaxOpen: 20,
		ResolveAfter: 16 * time.Minute})
	s := &Site{cfg: &config.Config{Traps: config.Traps{ResolveAfter: 16 * time.Minute}}, saved: newSaved(db, newBatch(db, slog.Default())),
		traps: &trapState{tracker: tr, saved: map[string]time.Time{}}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	from := netip.MustParseAddr("127.0.0.5")
	handle := func(name string, at time.Time) {
		if out, _ := tr.Handle(snmptrap.Trap{Source: from, Name: name, TrapOID: "1.3.6.1.4.1.99." + name}, at); out != traps.Accepted {
			t.Fatalf("trap %s at %v: %s", name, at, out)
		}
		s.saveTraps()
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	w := writes()
	handle("upsTrapOnBattery", t0)
	one := writes() - w // the page writes of one commit
	if one == 0 {
		t.Fatal("a new trap incident not written")
	}
	w = writes()
	for i := range 3600 {
		handle("upsTrapOnBattery", t0.Add(time.Duration(i+1)*time.Second))
	}
	if n := (writes() - w) / one; n > 60 {
		t.Fatalf("%d commits for an hour of repeats, want one a minute", n)
	}
	w = writes()
	handle("other", t0.Add(time.Hour))
	if writes() == w {
		t.Fatal("a new trap incident not written at once")
	}
	w = writes()
	tr.Tick(t0.Add(3 * time.Hour))
	s.saveTraps()
	if writes() == w {
		t.Fatal("resolved trap incidents not written at once")
	}
}

// TestCommandRecordedBeforeItRuns: when the shutdown command is carried out, the saved power
// policy already says it ran, so a crash at that instant cannot run it again.
func TestCommandRecordedBeforeItRuns(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
devices:
  - {id: ups1, driver: sim.ups, poll: 1s}
failover:
  power: {ups: [ups1], shutdown_command: "true"}
`, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := open(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.relays = newRelays(s)
	s.policies = newPolicies(s)
	s.policies.runCommands = false
	commands := 0
	s.policies.onAction = func(a failover.Action) {
		if a.Kind != failover.Command {
			return
		}
		commands++
		var snap failover.PowerSnapshot
		if !newSaved(s.db, newBatch(s.db, slog.Default())).load(keyPower, &snap) || !snap.Ran || snap.State != failover.Shutdown {
			t.Errorf("the command is carried out before the saved state says so: %+v", snap)
		}
	}
	at := time.Now()
	for range 4 {
		at = at.Add(time.Second)
		s.policies.observe(poll.Result{Device: "ups1", State: "ok", At: at,
			Readings: []sensors.Reading{sensors.Text("ups1", "ups.status", "OB LB", at)}})
	}
	if commands != 1 {
		t.Fatalf("%d shutdown commands, want 1", commands)
	}
}

// TestOutageWritesRarely: a UPS on battery whose runtime falls at every poll (every 2 s) for
// ten minutes costs a commit when it goes on battery and then about one a minute for its
// discharge, not one per poll; what is saved still lets a restart extrapolate the runtime.
func TestOutageWritesRarely(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := openClocked(t, `site: e2e
node: rack1
devices:
  - {id: ups1, driver: sim.ups, poll: 2s}
failover:
  power: {ups: [ups1], shutdown_runtime_below: 10s}
`, func() time.Time { return at })
	defer s.close()
	s.relays = newRelays(s)
	s.policies = newPolicies(s)
	s.policies.runCommands = false
	writes := func() int64 { st := s.db.Stats(); return st.TxStats.GetWrite() }
	runtime := 1800.0
	poll := func(status string) {
		at = at.Add(2 * time.Second)
		s.policies.observe(poll.Result{Device: "ups1", State: "ok", At: at, Readings: []sensors.Reading{
			sensors.Text("ups1", "ups.status", status, at), sensors.Num("ups1", "battery.runtime", runtime, "s", at)}})
	}
	for range 5 {
		poll("OL")
	}
	w := writes()
	poll("OB DISCHRG")
	one := writes() - w // the page writes of one commit
	if one == 0 {
		t.Fatal("going on battery not written")
	}
	w = writes()
	for range 300 { // ten minutes
		runtime -= 2
		poll("OB DISCHRG")
	}
	if n := (writes() - w) / one; n > 20 {
		t.Fatalf("%d commits for ten minutes on battery, want about one a minute", n)
	}
	var snap failover.PowerSnapshot
	if !newSaved(s.db, newBatch(s.db, slog.Default())).load(keyPower, &snap) || !snap.UPS["ups1"].OB {
		t.Fatalf("saved power policy %+v, want ups1 on battery", snap)
	}
	if u := snap.UPS["ups1"]; u.ChgAt.Before(at.Add(-dischargeSaveEvery)) || u.Rate <= 0 {
		t.Fatalf("saved discharge %+v at %v: older than %v or no rate", u, at, dischargeSaveEvery)
	}
}

// openClocked opens the site of config body (data_dir is added: a temp dir) with now as its
// clock and a silent log, for tests that drive it by hand.
func openClocked(t *testing.T, body string, now func() time.Time) *Site {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf("data_dir: %s\n%s", t.TempDir(), body)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := open(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

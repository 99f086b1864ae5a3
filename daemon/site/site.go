// Package site wires a site's parts together: devices and their pollers, the state store,
// rules and incidents, the local policies, relays, the MQTT uplink, the web server and the NUT
// server. It is the only package that knows them all; Run(ctx, cfg, opts) is the whole daemon
// for one site, so tests, the fleet benchmark and main all run the same thing.
package site

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/daemon/rules"
	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/uplink"
	"github.com/rackwatch/rackwatch/uplink/broker"
)

// Options are what main (or a test) gives a site besides its config.
type Options struct {
	Version string
	Log     *slog.Logger
	// Pool keeps devices open across config reloads (a relay must not drop to its safe state
	// because the config was reloaded). nil: the site owns and closes its devices.
	Pool *Pool
	// Ready is called once everything listens (systemd READY=1).
	Ready func(s *Site)
	// Reload is called when an operator asks for a reload over MQTT.
	Reload func()
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Site is one running site.
type Site struct {
	cfg     *config.Config
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	started time.Time
	bootID  string

	db    *bolt.DB
	store *state.Store
	inc   *incident.Manager
	up    *uplink.Uplink
	hub   *hub
	specs map[string]sensors.Spec
	devs  map[string]sensors.Device

	mu       sync.Mutex // serialises ingest: rules, policies and relays see one reading at a time
	rules    *rules.Engine
	changes  []rules.Change
	fsd      map[string]bool // UPS ids with a forced shutdown ordered
	lastRes  map[string]time.Time
	relays   *relays
	policies *policies
	metrics  *metrics
	kpis     *kpi.Log

	traps   *trapState
	webAddr net.Addr
	nutAddr net.Addr
	nut     nutServer
}

// nutServer is the part of the NUT server the site needs (nil when nut.listen is empty).
type nutServer interface {
	Clients() []string
}

// WebAddr is where the web server listens (after Ready).
func (s *Site) WebAddr() net.Addr { return s.webAddr }

// Store is the site's state store (tests and the replay read it).
func (s *Site) Store() *state.Store { return s.store }

// Incidents is the site's incident manager.
func (s *Site) Incidents() *incident.Manager { return s.inc }

// Device returns a device of the site (tests drive sim devices through it).
func (s *Site) Device(id string) sensors.Device { return s.devs[id] }

// Run runs the site until ctx ends, then stops cleanly: relays to their safe state (unless a
// Pool keeps them), queue on disk, offline published.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	s, err := open(cfg, opt)
	if err != nil {
		return err
	}
	defer s.close()
	return s.run(ctx)
}

func open(cfg *config.Config, opt Options) (*Site, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Site{cfg: cfg, opt: opt, log: opt.Log, now: opt.Now, hub: newHub(),
		specs: map[string]sensors.Spec{}, devs: map[string]sensors.Device{}, fsd: map[string]bool{}, lastRes: map[string]time.Time{}}
	s.started = s.now()
	s.bootID = randomID()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, "rackwatch.db")
	// NoFreelistSync: a commit writes the pages it changed and the meta page, not also the
	// freelist page (a third of what a small commit writes; flash wear, see docs/BENCHMARKS.md
	// §6). bbolt rebuilds the freelist by scanning the file at open: 0.45 s for a full 256 MiB
	// queue on the development machine.
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: another rackwatch uses this data_dir", dbPath)
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	s.db = db
	s.store = state.New(24 * time.Hour)
	s.inc, err = incident.New(db, incident.Options{Node: cfg.Node, Retention: cfg.Incidents.Retention,
		MaxResolved: cfg.Incidents.MaxResolved, FlapCount: cfg.Incidents.FlapCount, FlapWindow: cfg.Incidents.FlapWindow, Log: s.log})
	if err != nil {
		db.Close()
		return nil, err
	}
	if s.kpis, err = kpi.Open(db); err != nil {
		db.Close()
		return nil, err
	}
	s.rules = rules.New(cfg.Rules)
	for key, sev := range s.inc.OpenKeys() {
		s.rules.Seed(key, rules.ParseLevel(sev))
	}
	s.metrics = newMetrics(s)
	return s, nil
}

func (s *Site) close() {
	if s.db != nil {
		s.db.Close()
	}
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Site) run(ctx context.Context) error {
	cfg := s.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// The embedded broker comes first, so the uplink finds it.
	if cfg.MQTT.EmbeddedBroker != "" {
		stop, err := broker.Start(cfg.MQTT.EmbeddedBroker, s.log)
		if err != nil {
			return fmt.Errorf("embedded MQTT broker on %s: %w", cfg.MQTT.EmbeddedBroker, err)
		}
		defer stop()
	}

	// The uplink.
	if len(cfg.MQTT.Brokers) > 0 {
		qos := byte(1)
		if cfg.MQTT.TelemetryQoS != nil {
			qos = byte(*cfg.MQTT.TelemetryQoS)
		}
		up, err := uplink.New(s.db, uplink.Options{
			Brokers: cfg.MQTT.Brokers, Prefix: cfg.MQTT.Prefix, Site: cfg.Site, Node: cfg.Node,
			ClientID: cfg.MQTT.ClientID, Username: cfg.MQTT.Username, PasswordFile: cfg.MQTT.PasswordFile,
			CAFile: cfg.MQTT.TLS.CAFile, CertFile: cfg.MQTT.TLS.CertFile, KeyFile: cfg.MQTT.TLS.KeyFile,
			TelemetryQoS: qos, TelemetryQoS0: qos == 0, QueueMaxBytes: cfg.MQTT.QueueMaxBytes, TelemetryFlush: *cfg.MQTT.QueueFlush, HoldFile: holdFile(s.db.Path()),
			Version: s.opt.Version, BootID: s.bootID, Logger: s.log.With("part", "uplink"),
			OnDrop: s.onDrop,
		})
		if err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		s.up = up
		up.OnCommand(s.command)
	}
	if s.up != nil {
		s.inc.SetStager(s.stageIncident)
	}
	if err := s.inc.SetPublisher(s.publishIncident); err != nil {
		s.log.Warn("incident events wait in the outbox", "err", err)
	}

	// Devices.
	for _, spec := range cfg.Devices {
		s.specs[spec.ID] = spec
		s.store.AddDevice(spec.ID, spec.Driver)
	}
	pool := s.opt.Pool
	if pool == nil {
		pool = NewPool(sensors.Env{DataDir: cfg.DataDir})
		defer pool.CloseAll()
	}
	for _, spec := range cfg.Devices {
		dev, err := pool.Get(spec)
		if err != nil {
			// A device that cannot even be made (bad port name) is an error device, not a
			// reason to leave the rest of the rack unwatched.
			s.log.Error("device not started", "device", spec.ID, "err", err)
			s.store.Update(spec.ID, state.Error, nil, err, s.now())
			s.raiseDevice(spec.ID, err)
			continue
		}
		s.devs[spec.ID] = dev
	}
	s.relays = newRelays(s)
	s.policies = newPolicies(s)

	// Listeners before goroutines, so that a port in use fails the start.
	wsrv, err := web.New(web.Options{Listen: cfg.Web.Listen, UsersFile: cfg.Web.UsersFile, RequireLogin: cfg.Web.RequireLogin,
		TLSCert: cfg.Web.TLSCert, TLSKey: cfg.Web.TLSKey, Log: s.log.With("part", "web"), Registry: s.metrics.reg}, backend{s})
	if err != nil {
		return err
	}
	wl, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		return fmt.Errorf("web: %w", err)
	}
	s.webAddr = wl.Addr()
	nutRun, err := s.startNUT(ctx)
	if err != nil {
		wl.Close()
		return err
	}
	if err := s.startTraps(ctx); err != nil {
		wl.Close()
		return err
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := wsrv.Serve(ctx, wl); err != nil {
			s.log.Error("web server stopped", "err", err)
		}
	}()
	if nutRun != nil {
		wg.Add(1)
		go func() { defer wg.Done(); nutRun() }()
	}
	upDone := make(chan struct{})
	upCtx, upCancel := context.WithCancel(context.Background())
	if s.up != nil {
		go func() {
			defer close(upDone)
			if err := s.up.Run(upCtx); err != nil {
				s.log.Error("uplink stopped", "err", err)
			}
		}()
	} else {
		close(upDone)
	}
	var pollWG sync.WaitGroup
	for _, spec := range cfg.Devices {
		dev := s.devs[spec.ID]
		if dev == nil {
			continue
		}
		p := &poll.Poller{Spec: spec, Dev: dev, Sink: s.ingest, Log: s.log.With("part", "poll"), Now: s.now}
		pollWG.Add(1)
		go func() { defer pollWG.Done(); p.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.housekeeping(ctx) }()

	s.log.Info("site running", "site", cfg.Site, "node", cfg.Node, "devices", len(cfg.Devices), "web", s.webAddr.String())
	if s.opt.Ready != nil {
		s.opt.Ready(s)
	}
	<-ctx.Done()
	pollWG.Wait()
	// Relays go to their safe state before the uplink says offline: a clean stop leaves the
	// rack as configured (unless a Pool keeps the outputs across a reload).
	if s.opt.Pool == nil {
		s.relays.safe()
	}
	s.telemetry() // the last readings go into the queue
	upCancel()
	<-upDone
	return nil
}

// housekeeping runs the site's timed work on one timer: telemetry, the R/kpis publish, and a
// tick for the policies' timers, flapping incidents, trap resolution and incident retention.
// The tick comes at the fastest poll interval (tickEvery): the policies learn nothing new
// between two polls, so a faster tick would only wake the daemon. The periods start
// together, so one wake serves every job that is due. None of these jobs writes to the
// database unless something changed.
func (s *Site) housekeeping(ctx context.Context) {
	type job struct {
		every time.Duration
		next  time.Time
		run   func()
	}
	tick := func() {
		now := s.now()
		s.inc.Tick(now)
		s.mu.Lock()
		s.policies.tick(now)
		s.trapsTick(now)
		s.mu.Unlock()
	}
	jobs := []*job{{every: tickEvery(s.cfg.Devices), run: tick}}
	if s.up != nil {
		publishKPIs := s.kpiPublisher()
		publishKPIs()
		jobs = append(jobs, &job{every: time.Minute, run: publishKPIs})
		if s.cfg.MQTT.TelemetryInterval > 0 {
			jobs = append(jobs, &job{every: s.cfg.MQTT.TelemetryInterval, run: s.telemetry})
		}
	}
	start := time.Now()
	for _, j := range jobs {
		j.next = start.Add(j.every)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := jobs[0].next
		for _, j := range jobs {
			if j.next.Before(next) {
				next = j.next
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		for _, j := range jobs {
			// A job due within a few milliseconds runs on this wake rather than on its own.
			if j.next.Sub(now) > coalesceWithin {
				continue
			}
			j.run()
			for !j.next.After(now.Add(coalesceWithin)) {
				j.next = j.next.Add(j.every)
			}
		}
	}
}

const coalesceWithin = 20 * time.Millisecond

// tickEvery is the housekeeping tick: the fastest poll interval, at least a second; a minute
// for a site without devices.
func tickEvery(devs []sensors.Spec) time.Duration {
	every := time.Minute
	for _, d := range devs {
		if d.Poll > 0 && d.Poll < every {
			every = d.Poll
		}
	}
	return max(every, time.Second)
}

// telemetry queues a snapshot of every latest reading.
func (s *Site) telemetry() {
	if s.up == nil {
		return
	}
	var rs []uplink.Reading
	for _, d := range s.store.Devices() {
		for _, m := range d.Metrics() {
			r := d.Readings[m]
			rs = append(rs, uplink.Reading{Device: r.Device, Metric: r.Metric, Value: r.JSONValue(), Unit: r.Unit, Quality: string(r.Quality), TS: sensors.FormatTime(r.TS)})
		}
	}
	if len(rs) == 0 {
		return
	}
	if err := s.up.Telemetry(rs); err != nil {
		s.log.Error("telemetry not queued", "err", err)
	}
}

// ingest takes one poll result through the store, the rules and the policies.
func (s *Site) ingest(res poll.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastRes[res.Device] = res.At
	s.metrics.observe(res)
	prevState := s.store.State(res.Device)
	// A UPS whose shutdown was ordered shows FSD (CONTRACT.md §3).
	if s.fsd[res.Device] {
		for i, r := range res.Readings {
			if r.Metric == "ups.status" && r.IsText && !rules.HasFlag(r.Text, "FSD") {
				res.Readings[i].Text = r.Text + " FSD"
			}
		}
	}
	if res.Pushed {
		s.store.Push(res.Device, res.Readings)
	} else {
		s.store.Update(res.Device, res.State, res.Readings, res.Err, res.At)
	}
	if prevState != res.State && !res.Pushed {
		s.hub.publish(web.Event{Type: "state", Data: map[string]any{"device": res.Device, "state": res.State, "error": errString(res.Err), "ts": sensors.FormatTime(res.At)}})
		switch res.State {
		case state.Stale:
			s.raiseDevice(res.Device, res.Err)
		case state.OK:
			s.resolveDevice(res.Device, res.At)
		}
	}
	s.changes = s.changes[:0]
	for _, r := range res.Readings {
		s.changes = s.rules.Eval(r, res.At, s.changes)
	}
	for _, c := range s.changes {
		s.applyChange(c)
	}
	s.policies.observe(res)
	s.trapsObserve(res.Device, res.Readings, res.At)
	if len(res.Readings) > 0 {
		s.hub.publish(web.Event{Type: "reading", Data: res.Readings})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Site) applyChange(c rules.Change) {
	if c.To == rules.None {
		s.resolve(c.Rule, c.Value, c.At)
		return
	}
	s.raise(incident.Raise{Key: c.Rule, Rule: c.Rule, Device: c.Device, Metric: c.Metric, Severity: c.To.String(),
		Source: "rule", Summary: fmt.Sprintf("%s %s is %v (%s: %v)", c.Device, c.Metric, c.Value, c.To, c.Threshold),
		Value: c.Value, Threshold: c.Threshold}, c.At)
}

// raise opens or escalates an incident. A store that fails is logged: the condition is
// raised again by the next reading that shows it.
func (s *Site) raise(r incident.Raise, at time.Time) {
	if _, err := s.inc.Raise(r, at); err != nil {
		s.log.Error("incident not stored", "key", r.Key, "err", err)
	}
}

// resolve resolves the open incident on key, if any.
func (s *Site) resolve(key string, value any, at time.Time) {
	if _, err := s.inc.Resolve(key, value, at); err != nil {
		s.log.Error("incident not stored", "key", key, "err", err)
	}
}

// raiseDevice opens a warning incident when a device stops answering.
func (s *Site) raiseDevice(id string, err error) {
	s.raise(incident.Raise{Key: "device:" + id, Rule: "device-lost", Device: id, Severity: "warning", Source: "system",
		Summary: fmt.Sprintf("%s does not answer: %v", id, err), Value: errString(err)}, s.now())
}

func (s *Site) resolveDevice(id string, at time.Time) { s.resolve("device:"+id, nil, at) }

// publishIncident hands an incident event to the uplink and the page.
func (s *Site) publishIncident(e incident.Event) error {
	s.hub.publish(web.Event{Type: "incident", Data: e})
	if s.up == nil {
		return nil
	}
	return s.up.Incident(uplinkIncident(e))
}

// stageIncident puts an incident event into the uplink queue inside the incident store's own
// transaction (one commit for both), and tells the page once it is committed.
func (s *Site) stageIncident(tx *bolt.Tx, e incident.Event) (func(), error) {
	committed, err := s.up.IncidentTx(tx, uplinkIncident(e))
	if err != nil {
		return nil, err
	}
	return func() {
		committed()
		s.hub.publish(web.Event{Type: "incident", Data: e})
	}, nil
}

func uplinkIncident(e incident.Event) uplink.Incident {
	in := e.Incident
	return uplink.Incident{ID: in.ID, Event: e.Event, Severity: in.Severity, Rule: in.Rule, Device: in.Device,
		Metric: in.Metric, Value: in.Value, Threshold: in.Threshold, OpenedAt: sensors.FormatTime(in.OpenedAt),
		TS: sensors.FormatTime(e.TS), By: e.By, Note: in.Summary, Flaps: in.Flaps}
}

func (s *Site) onDrop(d uplink.Drop) {
	s.raise(incident.Raise{Key: "uplink:queue-full", Rule: "uplink-queue-full", Severity: "warning", Source: "uplink",
		Summary: fmt.Sprintf("uplink queue full: %d telemetry messages dropped (seq %d-%d), %d in all", d.Messages, d.FirstSeq, d.LastSeq, d.Total),
		Value:   d.Total}, s.now())
}

// command handles R/cmd.
func (s *Site) command(ctx context.Context, c uplink.Command) error {
	switch c.Action {
	case "ack":
		return s.Ack(c.Incident, "mqtt:"+c.ID)
	case "relay":
		return s.SetRelay(c.Device, c.State, "mqtt:"+c.ID)
	case "reload":
		if s.opt.Reload == nil {
			return errors.New("reload is not available here")
		}
		s.opt.Reload()
		return nil
	}
	return fmt.Errorf("unknown action %q", c.Action)
}

// Ack acknowledges an incident; the power policy hears of it (FSD clears on an
// acknowledged shutdown once mains is back).
func (s *Site) Ack(id, by string) error {
	e, err := s.inc.Ack(id, by, s.now())
	if err != nil {
		return err
	}
	if e.Event != "" {
		s.mu.Lock()
		s.policies.acked(e.Incident.Key, s.now())
		s.mu.Unlock()
	}
	return nil
}

// SetRelay sets a relay's mode: on, off (operator override) or auto (the policies decide).
func (s *Site) SetRelay(id, mode, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relays.setMode(id, mode, by)
}

func hasFlag(status, flag string) bool { return rules.HasFlag(status, flag) }

func removeFlag(status, flag string) string {
	return strings.Join(slices.DeleteFunc(strings.Fields(status), func(f string) bool { return f == flag }), " ")
}

// kpiPublisher returns what retains the KPIs on R/kpis every minute. The report is computed
// again only when the incidents or the KPI log changed, or an hour has passed (the windows
// slide): computing it reads every stored incident, the largest idle cost of a site with a
// long history.
func (s *Site) kpiPublisher() func() {
	var (
		rep     kpi.Report
		changes [2]uint64
		at      time.Time
	)
	return func() {
		now := s.now()
		c := [2]uint64{s.inc.Changes(), s.kpis.Changes()}
		if at.IsZero() || c != changes || now.Sub(at) >= time.Hour || now.Before(at) {
			rep, changes, at = s.KPIs().(kpi.Report), c, now
		}
		rep.TS = now.UTC().Format(time.RFC3339)
		if err := s.up.Retain("kpis", rep); err != nil {
			s.log.Warn("kpis not published", "err", err)
		}
	}
}

// holdFile is where the uplink keeps held telemetry (mqtt.queue_flush) between a crash and
// the restart: in $RUNTIME_DIRECTORY when there is one (systemd's RuntimeDirectory, /run on
// the image: a tmpfs, so held telemetry costs no flash at all and a power cut clears it),
// named after the database so that sites sharing the directory do not share the file;
// otherwise next to the database.
func holdFile(dbPath string) string {
	dir := os.Getenv("RUNTIME_DIRECTORY")
	if dir == "" {
		return uplink.DefaultHoldFile(dbPath)
	}
	if abs, err := filepath.Abs(dbPath); err == nil {
		dbPath = abs
	}
	h := fnv.New64a()
	h.Write([]byte(dbPath))
	// systemd may list several directories, separated by colons: the first is ours.
	dir, _, _ = strings.Cut(dir, ":")
	return filepath.Join(dir, fmt.Sprintf("uplink-%016x.hold", h.Sum64()))
}

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
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/daemon/notify"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/daemon/rules"
	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/uplink"
	"github.com/rackwatch/rackwatch/uplink/sparkplug"
)

// Options are what main (or a test) gives a site besides its config.
type Options struct {
	Version string
	Log     *slog.Logger
	// Pool keeps devices open across config reloads (a relay must not drop to its safe state
	// because the config was reloaded). nil: the Supervisor makes its own and closes it at the
	// end.
	Pool *Pool
	// Ready is called each time a site runs: after the first start and after every reload
	// that took effect (systemd READY=1).
	Ready func(s *Site)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Update locates the firmware image's parts for the updater (slot booted, boot
	// partition, paths); main fills it from /init's environment. Zero: not the image.
	Update update.Options
}

// Site is one running site.
type Site struct {
	cfg     *config.Config
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	started time.Time
	sh      *shared

	db    *bolt.DB // shared by every site of the process (supervisor.go)
	store *state.Store
	inc   *incident.Manager
	hub   *hub
	specs map[string]sensors.Spec
	devs  map[string]sensors.Device
	// failed are the devices that could not be made: error devices, not a reason to leave
	// the rest of the rack unwatched.
	failed map[string]error
	stage  *staged

	mu       sync.Mutex   // serialises ingest: rules, policies and relays see one reading at a time
	waiting  atomic.Int32 // moments waiting for mu (lockMoment)
	retired  bool         // a reload replaced this site: it changes nothing any more
	rules    *rules.Engine
	changes  []rules.Change
	fsd      map[string]bool // UPS ids with a forced shutdown ordered
	lastRes  map[string]time.Time
	relays   *relays
	policies *policies
	metrics  *metrics
	kpis     *kpi.Log
	saved    *saved // policy and trap state that must survive a restart
	batch    *batch // the writes of one poll result or tick, committed together

	traps   *trapState
	web     *web.Server
	webL    *net.TCPListener // the bound socket, shared with the next site when web.listen stays
	webAddr net.Addr
	nutSrv  *nutServe
	nutAddr net.Addr
	nut     nutServer
	// upOpts are the uplink settings of this config (nil: no uplink).
	upOpts *uplink.Options
	notify *notify.Notifier // nil: no notify targets

	cancel context.CancelFunc
	wg     sync.WaitGroup
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

// Config is the config the site runs.
func (s *Site) Config() *config.Config { return s.cfg }

// Run runs the site until ctx ends, then stops cleanly: relays to their safe state, queue on
// disk, offline published. It is a Supervisor that is never asked to reload except over MQTT,
// where it reloads the same cfg.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	return NewSupervisor(func() (*config.Config, error) { return cfg, nil }, opt).Run(ctx)
}

// openDB opens the site's database in data_dir, and says when the last run was last known
// alive (read before the open touches the file).
func openDB(dataDir string) (db *bolt.DB, alive time.Time, err error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, alive, fmt.Errorf("data_dir: %w", err)
	}
	dbPath := filepath.Join(dataDir, "rackwatch.db")
	alive = lastAlive(dbPath)
	// NoFreelistSync: a commit writes the pages it changed and the meta page, not also the
	// freelist page, which would be one more page of flash wear on every small commit. The
	// price is paid once, at open: bbolt rebuilds the freelist by scanning the file, a time
	// that grows with the queue on disk (well under a second for a full one).
	_, statErr := os.Stat(dbPath)
	opts := &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, OpenFile: openSmallPages}
	if errors.Is(statErr, fs.ErrNotExist) {
		// bbolt creates the file with one write of its first four pages, which the page
		// cache keeps as one large folio: every later commit's meta page would dirty all of
		// it. Created, closed and opened again, the file is read back page by page.
		if db, err = bolt.Open(dbPath, 0o600, opts); err == nil {
			db.Close()
		}
	}
	db, err = bolt.Open(dbPath, 0o600, opts)
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, alive, fmt.Errorf("open %s: another rackwatch uses this data_dir", dbPath)
		}
		return nil, alive, fmt.Errorf("open %s: %w", dbPath, err)
	}
	return db, alive, nil
}

// build makes a site for cfg and takes everything it needs that can fail: listeners bound
// (or shared with the running site when the address stays), devices opened, the uplink's
// settings checked, state loaded from the database. Nothing of it runs yet, and the running
// site is not touched: a build that fails is undone by abort. strict refuses a device that
// cannot be made (a reload); the first start runs without it instead.
func build(cfg *config.Config, opt Options, sh *shared, strict bool) (s *Site, err error) {
	s = newSite(cfg, opt, sh)
	defer func() {
		if err != nil {
			s.abort()
			s = nil
		}
	}()
	if cfg.DataDir != sh.dataDir {
		return s, fmt.Errorf("data_dir cannot change on a reload (%s is open): restart the daemon", sh.dataDir)
	}
	if err := s.loadState(); err != nil {
		return s, err
	}
	s.batch.wait, s.batch.queued = pollWait, queuedWait
	s.batch.more = func() bool { return s.waiting.Load() > 0 }
	s.batch.later = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.batch.flush()
	}
	if sh.alive != nil {
		s.markDown(*sh.alive)
		sh.alive = nil
	}

	// The embedded broker comes first, so the uplink finds it.
	if err := sh.broker(cfg.MQTT.EmbeddedBroker); err != nil {
		return s, err
	}
	if len(cfg.MQTT.Brokers) > 0 {
		qos := byte(1)
		if cfg.MQTT.TelemetryQoS != nil {
			qos = byte(*cfg.MQTT.TelemetryQoS)
		}
		var flush time.Duration
		if cfg.MQTT.QueueFlush != nil {
			flush = *cfg.MQTT.QueueFlush
		}
		s.upOpts = &uplink.Options{
			Brokers: cfg.MQTT.Brokers, Prefix: cfg.MQTT.Prefix, Site: cfg.Site, Node: cfg.Node,
			ClientID: cfg.MQTT.ClientID, Username: cfg.MQTT.Username, PasswordFile: cfg.MQTT.PasswordFile,
			CAFile: cfg.MQTT.TLS.CAFile, CertFile: cfg.MQTT.TLS.CertFile, KeyFile: cfg.MQTT.TLS.KeyFile,
			TelemetryQoS: qos, TelemetryQoS0: qos == 0, QueueMaxBytes: cfg.MQTT.QueueMaxBytes, TelemetryFlush: flush, HoldFile: holdFile(sh.db.Path()),
			Version: s.opt.Version, BootID: sh.bootID, Format: cfg.MQTT.Format,
			Sparkplug: sparkplug.Config{Group: cfg.MQTT.Sparkplug.Group, EdgeNode: cfg.Node, PrimaryHost: cfg.MQTT.Sparkplug.PrimaryHost},
		}
		if err := uplink.Check(*s.upOpts); err != nil {
			return s, err
		}
	}

	if s.notify, err = newNotifier(s); err != nil {
		return s, err
	}

	// Devices.
	for _, spec := range cfg.Devices {
		s.specs[spec.ID] = spec
		s.store.AddDevice(spec.ID, spec.Driver)
	}
	s.stage, s.devs, s.failed, err = sh.pool.stage(cfg.Devices, strict)
	if err != nil {
		return s, err
	}
	s.relays = newRelays(s)
	s.policies = newPolicies(s)

	// Listeners last, each bound now so that a port in use fails the build.
	w := cfg.Web
	s.web, err = web.New(web.Options{Listen: w.Listen, UsersFile: w.UsersFile, RequireLogin: w.RequireLogin,
		TLSCert: w.TLSCert, TLSKey: w.TLSKey, Log: s.log.With("part", "web"), Registry: s.metrics.reg,
		MaxConns: w.MaxConns, MaxConnsPerAddr: w.MaxConnsPerAddr, MaxEventStreams: w.MaxEventStreams,
		ReadHeaderTimeout: w.ReadHeaderTimeout, ReadTimeout: w.ReadTimeout, WriteTimeout: w.WriteTimeout,
		IdleTimeout: w.IdleTimeout, OnLogin: sh.auditLogin, Audit: sh.auditRecords, Backup: sh.backup, Update: sh.webUpdateFunc()}, backend{s})
	if err != nil {
		return s, err
	}
	if s.webL, err = sh.listen(cfg.Web.Listen); err != nil {
		return s, fmt.Errorf("web: %w", err)
	}
	s.webAddr = s.webL.Addr()
	if err := s.buildNUT(); err != nil {
		return s, err
	}
	if err := s.buildTraps(); err != nil {
		return s, err
	}
	return s, nil
}

func newSite(cfg *config.Config, opt Options, sh *shared) *Site {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Site{cfg: cfg, opt: opt, log: opt.Log, now: opt.Now, hub: newHub(), sh: sh, db: sh.db,
		specs: map[string]sensors.Spec{}, devs: map[string]sensors.Device{}, failed: map[string]error{},
		fsd: map[string]bool{}, lastRes: map[string]time.Time{}}
	s.started = s.now()
	return s
}

// loadState reads what the site continues from the database: open incidents (and the rules'
// levels they imply) and the KPI log.
func (s *Site) loadState() error {
	cfg := s.cfg
	s.store = state.New(24 * time.Hour)
	var err error
	s.inc, err = incident.New(s.db, incident.Options{Node: cfg.Node, Retention: cfg.Incidents.Retention,
		MaxResolved: cfg.Incidents.MaxResolved, FlapCount: cfg.Incidents.FlapCount, FlapWindow: cfg.Incidents.FlapWindow,
		StormLimit: cfg.Incidents.StormLimit, Log: s.log})
	if err != nil {
		return err
	}
	s.inc.SetAudit(s.auditIncident)
	if s.kpis, err = kpi.Open(s.db); err != nil {
		return err
	}
	s.batch = newBatch(s.db, s.log)
	s.batch.rider = func() (func(*bolt.Tx) error, func(error)) {
		if up := s.sh.uplink(); up != nil {
			return up.AckedTx(s.db)
		}
		return nil, nil
	}
	s.inc.SetJoiner(s.batch.join)
	s.kpis.SetJoiner(s.batch.join)
	s.saved = newSaved(s.db, s.batch)
	s.rules = rules.New(cfg.Rules)
	for key, sev := range s.inc.OpenKeys() {
		s.rules.Seed(key, rules.ParseLevel(sev))
	}
	s.metrics = newMetrics(s)
	s.metrics.reg.MustRegister(s.sh.auditMetrics()...)
	s.metrics.reg.MustRegister(s.sh.hassMetrics()...)
	return nil
}

// open makes a site with its own database that runs nothing (the replay drives it).
func open(cfg *config.Config, opt Options) (*Site, error) {
	db, alive, err := openDB(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := newSite(cfg, opt, &shared{db: db, dataDir: cfg.DataDir, log: opt.Log})
	if err := s.loadState(); err != nil {
		db.Close()
		return nil, err
	}
	s.markDown(alive)
	return s, nil
}

func (s *Site) close() { s.db.Close() }

// abort undoes a build that will not run. What it shares with the running site stays.
func (s *Site) abort() {
	if s.stage != nil {
		s.stage.abort()
	}
	s.sh.release(s.sh.current())
	if s.notify != nil {
		s.notify.Close()
	}
}

// launch starts a built site's goroutines. The site it replaces has stopped: devices are
// polled by one site at a time.
func (s *Site) launch() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	late, failed := s.stage.commit(s.cfg.Devices)
	s.stage = nil
	if s.sh.upd != nil {
		s.sh.upd.Configure(update.Settings{CommitAfter: s.cfg.Update.CommitAfter, MaxBytes: s.cfg.Update.MaxBytes, CAFile: s.cfg.Update.CAFile})
	}
	for id, dev := range late {
		s.devs[id] = dev
	}
	for id, err := range failed {
		s.failed[id] = err
	}
	if s.notify != nil {
		if err := s.notify.Start(ctx); err != nil {
			s.log.Error("notify targets not started", "err", err)
			s.notify = nil
		}
	}
	s.startAuditTargets(ctx)
	if s.upOpts != nil || s.notify != nil {
		s.inc.SetStager(s.stageIncident)
	}
	if err := s.inc.SetPublisher(s.publishIncident); err != nil {
		s.log.Warn("incident events wait in the outbox", "err", err)
	}
	s.setHass()
	for id, err := range s.failed {
		s.log.Error("device not started", "device", id, "err", err)
		s.store.Update(id, sensors.DeviceError, nil, err, s.now())
		s.raiseDevice(id, err)
	}
	if len(late) > 0 {
		// Relays made at the swap join the relays now.
		s.mu.Lock()
		s.relays = newRelays(s)
		s.mu.Unlock()
	}

	s.goServe(ctx, "web", s.cfg.Web.Listen, s.web.Serve)
	if s.nutSrv != nil {
		s.goServe(ctx, "NUT", s.cfg.NUT.Listen, s.nutSrv.srv.Serve)
	}
	for _, spec := range s.cfg.Devices {
		dev := s.devs[spec.ID]
		if dev == nil {
			continue
		}
		p := &poll.Poller{Spec: spec, Dev: dev, Sink: s.ingest, Log: s.log.With("part", "poll"), Now: s.now}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); p.Run(ctx) }()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.housekeeping(ctx) }()
	s.log.Info("site running", "site", s.cfg.Site, "node", s.cfg.Node, "devices", len(s.cfg.Devices), "web", s.webAddr.String())
}

// goServe serves on a copy of the socket bound for addr: stopping this site closes its copy,
// not the socket, which the next site may share.
func (s *Site) goServe(ctx context.Context, what, addr string, serve func(context.Context, net.Listener) error) {
	l, err := s.sh.serveOn(addr)
	if err != nil {
		// Only a process out of file descriptors gets here.
		s.log.Error(what+" server not started", "err", err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := serve(ctx, l); err != nil && ctx.Err() == nil {
			s.log.Error(what+" server stopped", "err", err)
		}
	}()
}

// retire makes a site that a reload replaces stop changing anything: readings, timers,
// commands and traps that reach it from now on are dropped (the next site has taken its
// state from the database). Called with s.mu held.
func (s *Site) retireLocked() { s.retired = true }

// A poll result's writes wait pollWait for the results that follow, queuedWait when others
// already queue for the ingest lock (batch): polls of the same interval end within
// milliseconds of each other, and what they write then costs the flash one commit rather than
// one each, at the price of a small part of any poll interval before their incidents are
// handed on. An edge a device pushed (a contact's alarm) and a tick wait for nothing, and a
// relay, FSD or the shutdown command for nothing but the commit of what decided it.
const (
	pollWait   = 50 * time.Millisecond
	queuedWait = 100 * time.Millisecond
)

// lockMoment takes the ingest lock for a moment (a poll result, a tick), counted in waiting
// while it waits (batch.more).
func (s *Site) lockMoment() {
	s.waiting.Add(1)
	s.mu.Lock()
	s.waiting.Add(-1)
}

// halt stops the site's goroutines and waits for them. The uplink, the devices and the
// sockets it shares stay.
func (s *Site) halt() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	// What lingers commits now: the next site reads its state from the database.
	s.mu.Lock()
	s.batch.flush()
	s.mu.Unlock()
	if s.notify != nil {
		s.notify.Wait()
	}
}

// final is the clean stop's part of the site: relays to their safe state, then the last
// readings into the queue (the uplink says offline after this).
func (s *Site) final() {
	s.mu.Lock()
	s.relays.safe()
	s.mu.Unlock()
	s.telemetry()
	if err := s.kpis.Down(s.now()); err != nil {
		s.log.Warn("kpi log: stop not marked", "err", err)
	}
}

// markDown marks the KPI log unknown from when the last run was last known alive: after a
// clean stop the log already says unknown from the stop, after a crash from the last write.
func (s *Site) markDown(alive time.Time) {
	if err := s.kpis.Down(alive); err != nil {
		s.log.Warn("kpi log: down time not marked", "err", err)
	}
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
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
		s.lockMoment()
		if !s.retired {
			s.batch.begin()
			s.inc.Tick(now)
			s.policies.tick(now)
			s.trapsTick(now)
			s.batch.end(false)
		}
		s.mu.Unlock()
	}
	jobs := []*job{{every: tickEvery(s.cfg.Devices), run: tick}}
	// The uplink may come and go with a reload: telemetry and R/kpis ask for it each time.
	if len(s.cfg.MQTT.Brokers) > 0 || s.cfg.MQTT.EmbeddedBroker != "" {
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
	if s.sh.uplink() == nil {
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
	s.observeHass(rs)
	if err := s.sh.withUplink(func(up *uplink.Uplink) error { return up.Telemetry(rs) }); err != nil {
		s.log.Error("telemetry not queued", "err", err)
	}
}

// ingest takes one poll result through the store, the rules and the policies.
func (s *Site) ingest(res poll.Result) {
	s.lockMoment()
	defer s.mu.Unlock()
	if s.retired {
		return
	}
	s.batch.begin()
	defer s.batch.end(!res.Pushed) // a poll result may wait for the results that follow
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
		case sensors.DeviceStale:
			s.raiseDevice(res.Device, res.Err)
		case sensors.DeviceOK:
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
	s.raise(incident.Raise{Key: c.Rule, Rule: c.Rule, Device: c.Device, Metric: c.Metric, Severity: c.To.Severity(),
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
	s.raise(incident.Raise{Key: "device:" + id, Rule: "device-lost", Device: id, Severity: incident.Warning, Source: "system",
		Summary: fmt.Sprintf("%s does not answer: %v", id, err), Value: errString(err)}, s.now())
}

func (s *Site) resolveDevice(id string, at time.Time) { s.resolve("device:"+id, nil, at) }

// publishIncident hands an incident event to the uplink and the page.
func (s *Site) publishIncident(e incident.Event) error {
	s.hub.publish(web.Event{Type: "incident", Data: e})
	if s.upOpts == nil {
		return nil
	}
	// While the uplink restarts with new settings this fails and the event waits in the
	// outbox (flushed once the new uplink runs).
	return s.sh.withUplink(func(up *uplink.Uplink) error { return up.Incident(uplinkIncident(e)) })
}

// stageIncident puts an incident event into the uplink queue inside the incident store's own
// transaction (one commit for both), and tells the page once it is committed.
func (s *Site) stageIncident(tx *bolt.Tx, e incident.Event) (func(), error) {
	if s.notify != nil {
		if err := s.notify.StageTx(tx, notify.Event(uplinkIncident(e))); err != nil {
			return nil, err
		}
	}
	if s.upOpts == nil {
		return func() { s.hub.publish(web.Event{Type: "incident", Data: e}) }, nil
	}
	// No lock here: this runs inside a bbolt write transaction. An uplink being replaced
	// takes what it staged from the database.
	up := s.sh.uplink()
	if up == nil {
		return nil, errUplinkRestarting
	}
	committed, err := up.IncidentTx(tx, uplinkIncident(e))
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
	return uplink.Incident{ID: in.ID, Event: e.Event, Severity: string(in.Severity), Rule: in.Rule, Device: in.Device,
		Metric: in.Metric, Value: in.Value, Threshold: in.Threshold, OpenedAt: sensors.FormatTime(in.OpenedAt),
		TS: sensors.FormatTime(e.TS), By: e.By, Note: in.Summary, Flaps: in.Flaps}
}

func (s *Site) onDrop(d uplink.Drop) {
	s.raise(incident.Raise{Key: "uplink:queue-full", Rule: "uplink-queue-full", Severity: incident.Warning, Source: "uplink",
		Summary: fmt.Sprintf("uplink queue full: %d telemetry messages dropped (seq %d-%d), %d in all", d.Messages, d.FirstSeq, d.LastSeq, d.Total),
		Value:   d.Total}, s.now())
}

// command handles R/cmd.
func (s *Site) command(ctx context.Context, c uplink.Command) (err error) {
	defer func() { s.auditCommand(c, err) }()
	switch c.Action {
	case "ack":
		return s.Ack(c.Incident, "mqtt:"+c.ID)
	case "relay":
		return s.SetRelay(c.Device, c.State, "mqtt:"+c.ID)
	case "update":
		if s.sh.upd == nil {
			return errors.New("no updater")
		}
		_, err := s.sh.upd.InstallURL(ctx, c.URL, c.SHA256, "mqtt:"+c.ID)
		return err
	case "reload":
		// The reply waits for the outcome. This runs on the uplink's command goroutine, which
		// a reload never stops: the uplink is handed over, or replaced after the reply.
		return s.sh.reload(ctx, "mqtt:"+c.ID)
	}
	return fmt.Errorf("unknown action %q", c.Action)
}

// Ack acknowledges an incident; the power policy hears of it (FSD clears on an
// acknowledged shutdown once mains is back).
func (s *Site) Ack(id, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return errReloading
	}
	s.batch.flush() // what lingers first: the acknowledgement then commits before Ack returns
	e, err := s.inc.Ack(id, by, s.now())
	if err != nil {
		return err
	}
	if e.Event != "" {
		s.policies.acked(e.Incident.Key, s.now())
	}
	return nil
}

var (
	errReloading        = errors.New("the config is being reloaded: try again")
	errUplinkRestarting = errors.New("the uplink is restarting with new settings")
)

// SetRelay sets a relay's mode: on, off (operator override) or auto (the policies decide).
func (s *Site) SetRelay(id, mode, by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return errReloading
	}
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
		if !s.sh.hasUplink() {
			return
		}
		now := s.now()
		c := [2]uint64{s.inc.Changes(), s.kpis.Changes()}
		if at.IsZero() || c != changes || now.Sub(at) >= time.Hour || now.Before(at) {
			rep, changes, at = s.KPIs().(kpi.Report), c, now
		}
		rep.TS = now.UTC().Format(time.RFC3339)
		if err := s.sh.withUplink(func(up *uplink.Uplink) error { return up.Retain("kpis", rep) }); err != nil {
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

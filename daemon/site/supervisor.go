package site

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/uplink"
	"github.com/rackwatch/rackwatch/uplink/broker"
	"github.com/rackwatch/rackwatch/uplink/homeassistant"
)

// A reload is a transaction. The Supervisor builds the next site beside the running one:
// every part that can fail (a port in use, a device that cannot be opened, a users file or a
// certificate that cannot be read, uplink settings that New would refuse) fails the build,
// the build is undone, and the running site carries on as it was, with a config-reload-failed
// incident open. Only a site that is built replaces the running one.
//
// What both sites need is handed over rather than opened twice: the database (opened once,
// for the whole process), unchanged devices (Pool), the uplink when its settings are the same
// (no second MQTT client with the same client id, no offline/online blip, and the reply to a
// reload command goes out on the connection the command came in on), the embedded broker,
// the trap receiver, and every TCP socket whose address stays (web, NUT): the socket is bound
// once, and each site serves on a copy of its file descriptor, so closing the old site's copy
// leaves the socket and the connections waiting in its backlog to the next site. SO_REUSEPORT
// would need the option on the first socket as well and spreads connections over both
// sockets, to a site that is not serving yet. Web login sessions live in the web package,
// keyed by address and users file, so they survive a reload that keeps both.
//
// While the next site is built, the running one is held still (its ingest lock is taken): it
// reads the state it continues (incidents, relay overrides, policies) from the database, and
// nothing may change it meanwhile. Once built, the running site is retired (it drops whatever
// reaches it from then on), stopped, and the next one launched.

// reloadKey is the incident a refused reload raises and the next good one resolves.
const reloadKey = "config:reload"

// Supervisor runs one site at a time and replaces it on Reload.
type Supervisor struct {
	load func() (*config.Config, error)
	opt  Options
	log  *slog.Logger

	lock     chan struct{} // held by a reload, an uplink swap and the stop
	stopping chan struct{} // closed when Run's ctx ends
	swap     chan struct{} // the uplink's settings changed: replace it
	sh       *shared       // set under lock once Run has opened the database
}

// NewSupervisor makes a supervisor that runs the config load returns, at the start and at
// every reload.
func NewSupervisor(load func() (*config.Config, error), opt Options) *Supervisor {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	return &Supervisor{load: load, opt: opt, log: opt.Log,
		lock: make(chan struct{}, 1), stopping: make(chan struct{}), swap: make(chan struct{}, 1)}
}

// Run starts the site and runs it until ctx ends, then stops cleanly: relays to their safe
// state, the last readings into the queue, the queue on disk, offline published. Only the
// first start can fail; a reload never ends Run.
func (sv *Supervisor) Run(ctx context.Context) error {
	sv.lock <- struct{}{}
	cfg, err := sv.load()
	if err != nil {
		<-sv.lock
		return err
	}
	db, alive, err := openDB(cfg.DataDir)
	if err != nil {
		<-sv.lock
		return err
	}
	sh := newShared(db, cfg.DataDir, sv.log)
	sh.reload = sv.Reload
	sh.alive = &alive
	if sv.opt.Pool != nil {
		sh.pool = sv.opt.Pool
	} else {
		sh.pool = NewPool(sensors.Env{DataDir: cfg.DataDir})
		defer sh.pool.CloseAll()
	}
	defer db.Close()
	if sh.audit, err = audit.Open(db, audit.Options{Retention: cfg.Audit.Retention, Now: sv.opt.Now, Log: sv.log}); err != nil {
		<-sv.lock
		return err
	}
	if sh.hass, err = homeassistant.New(db, sv.log); err != nil {
		<-sv.lock
		return err
	}
	actx, stopAudit := context.WithCancel(context.Background())
	auditDone := make(chan struct{})
	go func() { defer close(auditDone); sh.publishAudit(actx) }()
	defer func() { stopAudit(); <-auditDone; sh.audit.FlushRefusals() }()
	sh.startUpdater(sv.opt)
	s, err := build(cfg, sv.opt, sh, false)
	if err == nil && s.upOpts != nil {
		if err = sh.startUplink(*s.upOpts); err != nil {
			s.abort()
		}
	}
	if err != nil {
		<-sv.lock
		return err
	}
	sh.setCurrent(s)
	s.launch()
	sh.release(s)
	s.resolve(reloadKey, nil, s.now())
	sv.sh = sh
	<-sv.lock
	uctx, stopUpdater := context.WithCancel(context.Background())
	updaterDone := sh.bootUpdater(uctx)
	defer func() { stopUpdater(); updaterDone() }()
	if sv.opt.Ready != nil {
		sv.opt.Ready(s)
	}

	for {
		select {
		case <-ctx.Done():
			close(sv.stopping)
			sv.lock <- struct{}{}
			cur := sh.current()
			cur.halt()
			// Relays go to their safe state and the last readings into the queue before the
			// uplink says offline: a clean stop leaves the rack as configured.
			cur.final()
			sh.stopUplink()
			sh.release(nil)
			sv.log.Info("site stopped", "site", cur.cfg.Site, "node", cur.cfg.Node)
			return nil
		case <-sv.swap:
			sv.lock <- struct{}{}
			sv.swapUplink()
			<-sv.lock
		}
	}
}

var errStopping = errors.New("the daemon is stopping")

// Reload loads the config again and, if it builds, replaces the running site with it. It
// returns once the new config runs, or with why it was refused; a refusal leaves the running
// site as it was and raises the config-reload-failed incident. by says who asked (audit,
// log). ctx ends the wait for another reload in progress.
func (sv *Supervisor) Reload(ctx context.Context, by string) error {
	select {
	case sv.lock <- struct{}{}:
	case <-sv.stopping:
		return errStopping
	case <-ctx.Done():
		return fmt.Errorf("reload not started: %w", ctx.Err())
	}
	defer func() { <-sv.lock }()
	select {
	case <-sv.stopping:
		return errStopping
	default:
	}
	if sv.sh == nil {
		return errors.New("the site is not running yet")
	}
	return sv.reloadLocked(by)
}

func (sv *Supervisor) reloadLocked(by string) (err error) {
	sh := sv.sh
	old := sh.current()
	cfg, err := sv.load()
	if err != nil {
		err = sv.refuse(old, by, err)
		sh.auditReload(old.cfg.Path, by, err)
		return err
	}
	defer func() { sh.auditReload(cfg.Path, by, err) }()
	sv.log.Info("reloading config", "file", cfg.Path, "by", by)
	// Traps wait for the swap (their receiver may be shared) rather than reach a site that
	// is being replaced.
	sh.trapMu.Lock()
	old.mu.Lock()
	old.batch.flush() // what lingers: the next site reads the database
	next, err := build(cfg, sv.opt, sh, true)
	if err != nil {
		old.mu.Unlock()
		sh.trapMu.Unlock()
		return sv.refuse(old, by, err)
	}
	sh.audit.SetRetention(cfg.Audit.Retention)
	old.retireLocked()
	old.mu.Unlock()
	old.halt()
	next.takeOver(old)
	sh.setCurrent(next)
	sh.replaceTraps(next)
	next.launch()
	sh.trapMu.Unlock()
	sh.release(next)
	if uplinkKey(next.upOpts) != sh.upKeyNow() {
		// Not here: a reload asked for over MQTT runs on the running uplink's command
		// goroutine, which must first send the reply.
		select {
		case sv.swap <- struct{}{}:
		default:
		}
	}
	next.resolve(reloadKey, nil, next.now())
	sv.log.Info("config reloaded", "file", cfg.Path, "by", by)
	if sv.opt.Ready != nil {
		sv.opt.Ready(next)
	}
	return nil
}

// refuse logs why a reload was refused and raises it as an incident on the running site.
func (sv *Supervisor) refuse(cur *Site, by string, err error) error {
	sv.log.Error("config reload refused; the running config stays", "by", by, "err", err.Error())
	cur.raise(incident.Raise{Key: reloadKey, Rule: "config-reload-failed", Severity: incident.Warning, Source: "config",
		Summary: "config reload refused, the running config stays: " + err.Error(), Value: err.Error()}, cur.now())
	return fmt.Errorf("reload refused: %w", err)
}

// swapUplink replaces the uplink with one made with the running site's settings. What is
// queued stays in the database and goes out on the new one.
func (sv *Supervisor) swapUplink() {
	sh := sv.sh
	cur := sh.current()
	if uplinkKey(cur.upOpts) == sh.upKeyNow() {
		return
	}
	sv.log.Info("restarting the uplink with the new settings")
	sh.stopUplink()
	if cur.upOpts != nil {
		if err := sh.startUplink(*cur.upOpts); err != nil {
			sv.log.Error("uplink not restarted", "err", err)
			cur.raise(incident.Raise{Key: reloadKey, Rule: "config-reload-failed", Severity: incident.Warning, Source: "config",
				Summary: "uplink not restarted with the new settings: " + err.Error(), Value: err.Error()}, cur.now())
			return
		}
		cur.inc.SetStager(cur.stageIncident)
	}
	if err := cur.inc.Flush(); err != nil {
		sv.log.Warn("incident events wait in the outbox", "err", err)
	}
	cur.kpiPublisher()()
}

// takeOver carries over what the site it replaces keeps only in memory: ordered forced
// shutdowns, the uptime (the trap incidents' deadlines come from the database, saved by the
// running site as they change). Neither site runs.
func (s *Site) takeOver(old *Site) {
	s.started = old.started
	for id, on := range old.fsd {
		if _, ok := s.specs[id]; ok && on {
			s.fsd[id] = true
		}
	}
}

// shared is what the sites of one process share, and hand from one to the next.
type shared struct {
	db      *bolt.DB
	dataDir string
	pool    *Pool
	bootID  string
	log     *slog.Logger
	reload  func(ctx context.Context, by string) error
	// alive is when the last run was last known alive, until the first site has marked the
	// time since as unknown in the KPI log (before its policies record anything).
	alive *time.Time

	cur    atomic.Pointer[Site]
	trapMu sync.RWMutex // held by a reload while sites change; traps wait

	mu      sync.Mutex
	socks   map[string]*net.TCPListener // bound TCP sockets by configured address
	recvs   map[string]*trapRecv        // trap receivers by configured address
	brokers map[string]func()           // embedded brokers by address: their stop

	// The uplink: withUplink holds upMu for reading while it uses it, so that a swap waits
	// for those uses; up is for the incident stager, which runs inside a bbolt transaction and
	// so must not wait for anything.
	upMu   sync.RWMutex
	upNow  *uplink.Uplink
	up     atomic.Pointer[uplink.Uplink]
	upKey  string
	upStop func()

	audit *audit.Log // nil for a site that runs nothing (replay)

	// hass is the Home Assistant discovery publisher (hass.go); nil for a site that runs
	// nothing (replay).
	hass *homeassistant.Publisher
	upd  *update.Updater
}

type trapRecv struct {
	r   *snmptrap.Receiver
	key string
}

func newShared(db *bolt.DB, dataDir string, log *slog.Logger) *shared {
	if log == nil {
		log = slog.Default()
	}
	return &shared{db: db, dataDir: dataDir, log: log, bootID: randomID(),
		socks: map[string]*net.TCPListener{}, recvs: map[string]*trapRecv{}, brokers: map[string]func(){}}
}

func (sh *shared) current() *Site     { return sh.cur.Load() }
func (sh *shared) setCurrent(s *Site) { sh.cur.Store(s) }

// listen returns the socket bound for addr, binding it if no site has it yet.
func (sh *shared) listen(addr string) (*net.TCPListener, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l, ok := sh.socks[addr]; ok {
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tl, ok := l.(*net.TCPListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("listen %s: not a TCP socket", addr)
	}
	sh.socks[addr] = tl
	return tl, nil
}

// serveOn returns a copy of the socket bound for addr, for one site to serve on and close.
func (sh *shared) serveOn(addr string) (net.Listener, error) {
	sh.mu.Lock()
	l, ok := sh.socks[addr]
	sh.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no socket bound for %s", addr)
	}
	f, err := l.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// broker makes sure the embedded broker on addr runs ("" = none).
func (sh *shared) broker(addr string) error {
	if addr == "" {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.brokers[addr]; ok {
		return nil
	}
	stop, err := broker.Start(addr, sh.log)
	if err != nil {
		return fmt.Errorf("embedded MQTT broker on %s: %w", addr, err)
	}
	sh.brokers[addr] = stop
	return nil
}

func trapKey(c config.Traps) string {
	b, _ := json.Marshal(struct {
		C []string
		U []sensors.SNMPv3
	}{c.Communities, c.Users})
	return string(b)
}

// trapReceiver returns the receiver for ts: the running one when nothing about it changed, a
// new one on a new address, or nil when it replaces a receiver on the same address with other
// settings (a UDP port is bound once): replaceTraps does that at the swap.
func (sh *shared) trapReceiver(ts *trapState) (*snmptrap.Receiver, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r, ok := sh.recvs[ts.listen]; ok {
		if r.key == ts.key {
			return r.r, nil
		}
		return nil, nil
	}
	r, err := snmptrap.Listen(context.Background(), ts.listen, ts.cfg, sh.onTrap)
	if err != nil {
		return nil, err
	}
	sh.recvs[ts.listen] = &trapRecv{r, ts.key}
	return r, nil
}

// replaceTraps binds the receiver of a site that replaces one on the same address. The old
// receiver is closed first, so this is the one step of a reload that can fail after the old
// site stopped: the site then runs without traps, and says so.
func (sh *shared) replaceTraps(s *Site) {
	if s.traps == nil || s.traps.recv != nil {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.recvs[s.traps.listen]; ok {
		old.r.Close()
		delete(sh.recvs, s.traps.listen)
	}
	r, err := snmptrap.Listen(context.Background(), s.traps.listen, s.traps.cfg, sh.onTrap)
	if err != nil {
		s.log.Error("trap receiver not restarted with the new settings", "err", err)
		return
	}
	s.traps.recv = r
	sh.recvs[s.traps.listen] = &trapRecv{r, s.traps.key}
}

func (sh *shared) onTrap(t snmptrap.Trap) {
	sh.trapMu.RLock()
	defer sh.trapMu.RUnlock()
	if s := sh.current(); s != nil {
		s.trap(t)
	}
}

// release closes the sockets, trap receivers and brokers that s (nil: none) does not use.
func (sh *shared) release(s *Site) {
	keepSock, keepRecv, keepBroker := map[string]bool{}, map[*snmptrap.Receiver]bool{}, ""
	if s != nil {
		keepSock[s.cfg.Web.Listen] = s.webL != nil
		if s.nutSrv != nil {
			keepSock[s.cfg.NUT.Listen] = true
		}
		if s.traps != nil && s.traps.recv != nil {
			keepRecv[s.traps.recv] = true
		}
		keepBroker = s.cfg.MQTT.EmbeddedBroker
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for addr, l := range sh.socks {
		if !keepSock[addr] {
			l.Close()
			delete(sh.socks, addr)
		}
	}
	for addr, r := range sh.recvs {
		if !keepRecv[r.r] {
			r.r.Close()
			delete(sh.recvs, addr)
		}
	}
	for addr, stop := range sh.brokers {
		if addr != keepBroker {
			stop()
			delete(sh.brokers, addr)
		}
	}
}

// uplinkKey tells two uplink settings apart (nil: no uplink).
func uplinkKey(o *uplink.Options) string {
	if o == nil {
		return ""
	}
	c := *o
	c.Logger, c.OnDrop, c.OnRefused, c.Firmware = nil, nil, nil, nil
	return fmt.Sprintf("%#v", c)
}

func (sh *shared) upKeyNow() string {
	sh.upMu.RLock()
	defer sh.upMu.RUnlock()
	return sh.upKey
}

// uplink is the running uplink, nil when there is none (or it is being replaced).
func (sh *shared) uplink() *uplink.Uplink { return sh.up.Load() }

func (sh *shared) hasUplink() bool { return sh.uplink() != nil }

// withUplink runs f with the running uplink; while it runs, the uplink is not replaced.
func (sh *shared) withUplink(f func(*uplink.Uplink) error) error {
	sh.upMu.RLock()
	defer sh.upMu.RUnlock()
	if sh.upNow == nil {
		return errUplinkRestarting
	}
	return f(sh.upNow)
}

// startUplink makes and runs the uplink. Its commands, drops go to the current site.
func (sh *shared) startUplink(opts uplink.Options) error {
	opts.Logger = sh.log.With("part", "uplink")
	opts.OnDrop = func(d uplink.Drop) {
		if s := sh.current(); s != nil {
			s.onDrop(d)
		}
	}
	opts.OnRefused = sh.auditRefusedCommand
	if sh.upd != nil {
		opts.Firmware = func() any { return sh.upd.Status() }
	}
	up, err := uplink.New(sh.db, opts)
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	if sh.hass != nil {
		up.OnConnect(sh.hass.Serve)
	}
	up.OnCommand(func(ctx context.Context, c uplink.Command) error {
		s := sh.current()
		if s == nil {
			return errStopping
		}
		return s.command(ctx, c)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := up.Run(ctx); err != nil {
			sh.log.Error("uplink stopped", "err", err)
		}
	}()
	sh.upMu.Lock()
	sh.upNow, sh.upKey = up, uplinkKey(&opts)
	sh.upStop = func() { cancel(); <-done }
	sh.upMu.Unlock()
	sh.up.Store(up)
	if sh.audit != nil {
		sh.audit.Kick()
	}
	return nil
}

// stopUplink stops the uplink (offline published, queue committed) and waits for it.
func (sh *shared) stopUplink() {
	sh.up.Store(nil)
	sh.upMu.Lock()
	stop := sh.upStop
	sh.upNow, sh.upKey, sh.upStop = nil, "", nil
	sh.upMu.Unlock()
	if stop != nil {
		stop()
	}
}

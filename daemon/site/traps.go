package site

import (
	"fmt"
	"net"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/traps"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
	snmpdev "github.com/rackwatch/rackwatch/sensors/snmp"
)

// What a trap means and how many a sender may send is daemon/traps'; here the receiver is
// started and the tracker's actions become incidents, under s.mu like every other incident.

type trapState struct {
	recv    *snmptrap.Receiver // nil until launch when it replaces a receiver on the same address
	tracker *traps.Tracker
	saved   map[string]time.Time // incident key → last refresh as saved (persist.go)
	listen  string
	key     string
	cfg     snmptrap.Config
}

// buildTraps binds traps.listen when it is set: the receiver stays the running one when the
// listen address and the accepted communities and users stay (trapKey). The tracker starts
// from the trap incidents saved in the database, which the running site keeps up to date.
func (s *Site) buildTraps() error {
	c := s.cfg.Traps
	if c.Listen == "" {
		return nil
	}
	log := s.sh.log.With("part", "traps")
	communities, warning := traps.Communities(c.Communities)
	if warning != "" {
		log.Warn(warning)
	}
	tc := snmptrap.Config{Communities: communities, Logger: log}
	for _, u := range c.Users {
		u := u
		cc, err := snmpdev.ClientConfig(snmpdev.Agent{Target: "trap-sender", Version: "3", V3: &u})
		if err != nil {
			return fmt.Errorf("traps: user %s: %w", u.User, err)
		}
		usm := *cc.V3
		usm.EngineID = u.EngineID
		tc.Users = append(tc.Users, usm)
	}
	tcfg := traps.Config{Devices: map[string]string{}, Rate: c.Rate, Burst: c.Burst, MaxOpen: c.MaxOpen, ResolveAfter: c.ResolveAfter}
	for _, d := range s.cfg.Devices {
		a, _ := snmpdev.AgentOf(d)
		tcfg.Devices[d.ID] = a.Target
	}
	for _, src := range c.Sources {
		p, err := config.ParseSource(src)
		if err != nil {
			return fmt.Errorf("traps: source %q: %w", src, err)
		}
		tcfg.Sources = append(tcfg.Sources, p)
	}
	s.traps = &trapState{tracker: traps.New(tcfg), listen: c.Listen, key: trapKey(c), cfg: tc}
	s.restoreTraps()
	r, err := s.sh.trapReceiver(s.traps)
	if err != nil {
		return fmt.Errorf("traps: %w", err)
	}
	s.traps.recv = r
	return nil
}

// TrapAddr is where the trap receiver listens (nil when off).
func (s *Site) TrapAddr() net.Addr {
	if s.traps == nil || s.traps.recv == nil {
		return nil
	}
	return s.traps.recv.Addr()
}

func (s *Site) trapReceiver() *snmptrap.Receiver {
	if s.traps == nil {
		return nil
	}
	return s.traps.recv
}

func (s *Site) trap(t snmptrap.Trap) {
	if s.traps == nil {
		return
	}
	if !s.traps.tracker.Admit(t.Source) {
		s.log.Debug("trap from a sender that is no device and no traps.sources entry ignored", "from", t.Source, "trap", t.TrapOID)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return
	}
	now := s.now()
	out, acts := s.traps.tracker.Handle(t, now)
	if out == traps.Accepted {
		who := ""
		if len(acts) > 0 {
			who = acts[0].Device
		}
		s.hub.publishTrap(t, who)
	}
	s.applyTraps(acts, now)
}

// applyTraps carries out the tracker's actions. Called with s.mu held.
func (s *Site) applyTraps(acts []traps.Action, now time.Time) {
	for _, a := range acts {
		switch a.Kind {
		case traps.Raise:
			s.raise(incident.Raise{Key: a.Key, Rule: a.Rule, Device: a.Device, Metric: a.Metric, Severity: a.Severity, Source: "trap",
				Summary: a.Summary, Value: a.Value, Threshold: a.Threshold}, now)
		case traps.Resolve:
			s.resolve(a.Key, a.Value, now)
		case traps.Log:
			s.log.Info(a.Summary, "device", a.Device)
		}
	}
	if len(acts) > 0 {
		s.saveTraps()
	}
}

// trapsObserve resolves a trap's on-battery incident once a poll shows the UPS off battery.
// Called with s.mu held.
func (s *Site) trapsObserve(id string, rs []sensors.Reading, at time.Time) {
	if s.traps == nil {
		return
	}
	s.applyTraps(s.traps.tracker.Observe(id, rs), at)
}

// trapsTick resolves trap incidents that were not repeated for traps.resolve_after and
// brings the storms' counts up to date. Called with s.mu held.
func (s *Site) trapsTick(now time.Time) {
	if s.traps == nil {
		return
	}
	s.applyTraps(s.traps.tracker.Tick(now), now)
}

// trapCounts are the tracker's counters for the metrics (zero when traps are off).
func (s *Site) trapCounts() (unknown, limited uint64) {
	if s.traps == nil || s.traps.tracker == nil {
		return 0, 0
	}
	return s.traps.tracker.Unknown(), s.traps.tracker.Limited()
}

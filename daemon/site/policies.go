package site

import (
	"context"
	"os/exec"
	"reflect"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/failover"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/sensors"
)

// policies runs the local failover policies (failover.power, failover.cooling) and carries
// out what they decide. Called with s.mu held.
type policies struct {
	s         *Site
	power     *failover.Power
	cooling   *failover.Cooling
	decisions map[string][]web.Decision
	// OnAction, when set, sees every action (the replay prints them).
	onAction func(failover.Action)
	// runCommands is false in the replay: the shutdown command is printed, not run.
	runCommands bool
	// powerSaved is the power snapshot last let through to saved.save, less its discharges,
	// and when: see dischargeSaveEvery.
	powerSaved   failover.PowerSnapshot
	powerSavedAt time.Time
}

// dischargeSaveEvery: a power snapshot that differs from the last saved one only in a UPS's
// discharge (runtime, its time, its rate: they move with every poll on battery) is saved at
// most this often. The restart extrapolates the runtime from the saved point at the saved
// rate, so a point this old gives the same estimate, and an outage costs the flash a few
// commits instead of one per poll. Any other change (on battery, silent, FSD, the state) is
// saved at once.
const dischargeSaveEvery = time.Minute

// withoutDischarge is snap with every UPS's discharge left out.
func withoutDischarge(snap failover.PowerSnapshot) failover.PowerSnapshot {
	if snap.UPS == nil {
		return snap
	}
	ups := make(map[string]failover.UPSSnapshot, len(snap.UPS))
	for id, u := range snap.UPS {
		u.ChgVal, u.ChgAt, u.Rate = 0, time.Time{}, 0
		ups[id] = u
	}
	snap.UPS = ups
	return snap
}

const maxDecisions = 50

func newPolicies(s *Site) *policies {
	p := &policies{s: s, decisions: map[string][]web.Decision{}, runCommands: true}
	now := s.now()
	// A restart picks the policies up where they were: an ordered shutdown stays ordered (FSD
	// is back before NUT listens) and its command is not run again; the first polls reconcile.
	var restored []failover.Action
	if cfg := s.cfg.Failover.Power; cfg != nil {
		p.power = failover.NewPower(*cfg, now)
		var snap failover.PowerSnapshot
		if s.saved.load(keyPower, &snap) {
			restored = append(restored, p.power.Restore(snap, now)...)
			s.log.Info("power policy restored", "state", snap.State, "since", snap.Since, "fsd", snap.FSD, "command_run", snap.Ran)
		}
		st, _ := p.power.State()
		s.recordKPI(kpi.Mains, st == failover.Normal || st == failover.Recovered, now)
	} else {
		// A policy taken out of the config must not come back, months later, with an old
		// shutdown order.
		s.saved.forget(keyPower)
	}
	if cfg := s.cfg.Failover.Cooling; cfg != nil {
		polls := map[string]time.Duration{}
		for _, d := range s.cfg.Devices {
			polls[d.ID] = d.Poll
		}
		p.cooling = failover.NewCooling(*cfg, polls, now)
		var snap failover.CoolingSnapshot
		if s.saved.load(keyCooling, &snap) {
			restored = append(restored, p.cooling.Restore(snap, now)...)
			s.log.Info("cooling policy restored", "state", snap.State, "since", snap.Since)
		}
		st, _ := p.cooling.State()
		s.recordKPI(kpi.Cooling, st == failover.CoolNormal, now)
	} else {
		s.saved.forget(keyCooling)
	}
	p.apply(restored)
	return p
}

// Keys of the policies' snapshots in the site's saved state.
const (
	keyPower   = "policy:power"
	keyCooling = "policy:cooling"
)

// carry saves the policies' state, then carries out what they decided: the state that says
// "FSD raised, command run" is on disk before the command starts, so no crash or power cut
// can run it twice for one event. Saving writes only when the state changed.
func (p *policies) carry(acts []failover.Action) {
	s := p.s
	if p.power != nil {
		snap, now := p.power.Snapshot(), s.now()
		coarse := withoutDischarge(snap)
		if p.powerSavedAt.IsZero() || !reflect.DeepEqual(coarse, p.powerSaved) || now.Sub(p.powerSavedAt) >= dischargeSaveEvery {
			if err := s.saved.save(keyPower, snap); err != nil {
				// The rack's protection comes first: the actions are still carried out.
				s.log.Error("power policy state not saved", "err", err)
			} else {
				p.powerSaved, p.powerSavedAt = coarse, now
			}
		}
	}
	if p.cooling != nil {
		if err := s.saved.save(keyCooling, p.cooling.Snapshot()); err != nil {
			s.log.Error("cooling policy state not saved", "err", err)
		}
	}
	p.apply(acts)
}

func (p *policies) observe(res poll.Result) {
	if res.Pushed {
		return
	}
	// Only the devices a policy watches can change it (and cost a snapshot to compare).
	if p.power != nil && p.power.Covers(res.Device) {
		p.carry(p.power.Observe(res.Device, res.State, res.Readings, res.At))
	}
	if p.cooling != nil && p.cooling.Covers(res.Device) {
		p.carry(p.cooling.Observe(res.Device, res.State, res.Readings, res.At))
	}
}

func (p *policies) tick(now time.Time) {
	if p.power != nil {
		p.carry(p.power.Tick(now))
	}
	if p.cooling != nil {
		p.carry(p.cooling.Tick(now))
	}
}

// acked tells the power policy an operator acknowledged one of its incidents.
func (p *policies) acked(key string, now time.Time) {
	if p.power != nil {
		p.carry(p.power.Ack(key, now))
	}
}

func (p *policies) apply(acts []failover.Action) {
	s := p.s
	for _, a := range acts {
		switch a.Kind {
		case failover.Relay, failover.FSD, failover.Command:
			// The state that decided it, and what came before, on disk first.
			s.batch.flush()
		}
		if p.onAction != nil {
			p.onAction(a)
		}
		switch a.Kind {
		case failover.Decision:
			s.log.Warn("policy decision", "policy", a.Policy, "state", a.State, "reason", a.Reason)
			p.note(a, a.State)
			switch a.Policy {
			case "power":
				s.recordKPI(kpi.Mains, a.State == failover.Normal || a.State == failover.Recovered, a.At)
			case "cooling":
				s.recordKPI(kpi.Cooling, a.State == failover.CoolNormal, a.At)
			}
			s.hub.publish(web.Event{Type: "policy", Data: map[string]any{"policy": a.Policy, "state": a.State, "reason": a.Reason, "ts": fmtTime(a.At)}})
		case failover.Relay:
			s.relays.policy(a.Relay, a.On, "policy:"+a.Policy, a.Reason)
			p.note(a, map[bool]string{true: "relay " + a.Relay + " on", false: "relay " + a.Relay + " off"}[a.On])
		case failover.FSD:
			for _, id := range a.UPS {
				s.fsd[id] = a.On
				s.markFSD(id, a.On)
			}
			p.note(a, map[bool]string{true: "FSD raised", false: "FSD cleared"}[a.On])
		case failover.Command:
			p.note(a, "shutdown command run")
			if p.runCommands {
				p.run(a.Cmd)
			}
		case failover.Raise:
			s.raise(incident.Raise{Key: a.Key, Rule: a.Key, Device: a.Device, Metric: a.Metric, Severity: a.Severity,
				Source: a.Policy, Summary: a.Reason, Value: a.Value, Threshold: a.Thresh}, a.At)
		case failover.Resolve:
			s.resolve(a.Key, a.Value, a.At)
		}
	}
}

// note records an action in the policy's timeline.
func (p *policies) note(a failover.Action, what string) {
	d := append(p.decisions[a.Policy], web.Decision{TS: fmtTime(a.At), Action: what, Reason: a.Reason})
	if len(d) > maxDecisions {
		d = d[len(d)-maxDecisions:]
	}
	p.decisions[a.Policy] = d
}

// run runs the shutdown command once, in the background, bounded in time.
func (p *policies) run(cmd string) {
	s := p.s
	s.log.Warn("running the shutdown command", "command", cmd)
	s.sh.record(audit.Record{Actor: "failover:power", Source: audit.System, Action: audit.ActionShutdown, Target: "shutdown_command", Detail: cut(cmd, 500)})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "/bin/sh", "-c", cmd).CombinedOutput()
		if err != nil {
			s.log.Error("shutdown command failed", "command", cmd, "err", err, "output", string(out))
			return
		}
		s.log.Info("shutdown command done", "command", cmd, "output", string(out))
	}()
}

func (p *policies) status() web.Failover {
	var f web.Failover
	if p.power != nil {
		st, since := p.power.State()
		cfg := p.s.cfg.Failover.Power
		f.Power = &web.PolicyState{State: st, Since: fmtTime(since), Decisions: p.decisions["power"], Relay: cfg.GeneratorRelay, Devices: cfg.UPS}
	}
	if p.cooling != nil {
		st, since := p.cooling.State()
		cfg := p.s.cfg.Failover.Cooling
		f.Cooling = &web.PolicyState{State: st, Since: fmtTime(since), Decisions: p.decisions["cooling"], Relay: cfg.BackupRelay, Devices: cfg.Sensors,
			Metric: cfg.Metric, OnAbove: cfg.OnAbove, OffBelow: cfg.OffBelow}
	}
	return f
}

// markFSD adds or removes FSD in a UPS's latest ups.status at once, so NUT clients see the
// order without waiting for the next poll.
func (s *Site) markFSD(id string, on bool) {
	r, ok := s.store.Reading(id, "ups.status")
	if !ok || !r.IsText {
		if !on {
			return
		}
		// Not polled yet: a restart with a shutdown ordered shows the order from the start.
		r = sensors.Text(id, "ups.status", "", s.now())
	}
	has := hasFlag(r.Text, "FSD")
	switch {
	case on && !has:
		r.Text = strings.TrimSpace(r.Text + " FSD")
	case !on && has:
		r.Text = removeFlag(r.Text, "FSD")
	default:
		return
	}
	s.store.Push(id, []sensors.Reading{r})
	s.hub.publish(web.Event{Type: "reading", Data: []sensors.Reading{r}})
}

// recordKPI notes a condition in the KPI log; a failed write costs availability figures,
// not the policy, so it is logged and the policy goes on.
func (s *Site) recordKPI(cond string, ok bool, at time.Time) {
	if err := s.kpis.Record(cond, ok, at); err != nil {
		s.log.Error("KPI log not written", "condition", cond, "ok", ok, "err", err)
	}
}

package failover

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// Power policy states (CONTRACT.md §5).
const (
	Normal           = "normal"
	OnBattery        = "on_battery"
	GeneratorTimeout = "generator_timeout"
	Shutdown         = "shutdown"
	Recovered        = "recovered"
)

// Incident keys of the power policy.
const (
	KeyMains    = "power:mains-lost"
	KeyShutdown = "power:shutdown"
	KeyCommLost = "power:comm-lost:" // + UPS id
)

// silentRuntimeFloor is the runtime below which a UPS that fell silent on battery is shut
// down on its extrapolated runtime when shutdown_runtime_below is not set.
const silentRuntimeFloor = 120 * time.Second

// Power is the power policy.
//
//	normal ──OB on a covered UPS, confirm_polls polls──▶ on_battery (generator relay on)
//	on_battery ──generator_timeout without mains──▶ generator_timeout (incident escalated)
//	on_battery / generator_timeout ──LB or runtime < shutdown_runtime_below, confirm_polls polls
//	    (or the extrapolated runtime of a UPS that fell silent)──▶ shutdown (FSD, command once)
//	any of those ──mains back (OL, no OB) for recover_for──▶ recovered
//	recovered ──generator_cooldown passed, FSD cleared (operator ack or auto_clear)──▶ normal
//
// Only good readings move it: a stale or error reading, or a silent device, never counts as
// a poll for a confirmation, except through the explicit extrapolation of a silent UPS.
type Power struct {
	cfg   config.Power
	ups   map[string]*upsView
	order []string

	state      string
	since      time.Time
	obSince    time.Time // when mains was lost (confirmed)
	mainsSince time.Time // when mains came back (zero while on battery)
	fsd        bool      // FSD raised and not yet cleared
	acked      bool      // the shutdown incident was acknowledged
	ran        bool      // the shutdown command ran for this outage
	genOn      bool
	genOff     time.Time // when the generator is released (cool-down end)
	gen        genView
}

type upsView struct {
	id       string
	state    sensors.DeviceState
	status   string // last good ups.status
	statusAt time.Time
	ob, ol   int       // consecutive good polls with OB / without OB
	crit     int       // consecutive good polls meeting the shutdown condition
	runtime  float64   // last battery.runtime reported
	rtAt     time.Time // when
	chgVal   float64   // the runtime when it last changed, and when: a UPS reports runtime in
	chgAt    time.Time // steps, so the discharge rate is measured between changes
	rate     float64   // runtime seconds lost per wall second while discharging (EWMA)
	silent   bool      // fell silent while on battery
	silCrit  int       // consecutive ticks with the extrapolated runtime below the limit
}

// NewPower makes the power policy.
func NewPower(cfg config.Power, now time.Time) *Power {
	p := &Power{cfg: cfg, ups: map[string]*upsView{}, state: Normal, since: now}
	for _, id := range cfg.UPS {
		p.ups[id] = &upsView{id: id, state: sensors.DeviceStale, rate: 1}
		p.order = append(p.order, id)
	}
	if p.cfg.ConfirmPolls < 1 {
		p.cfg.ConfirmPolls = 1
	}
	if p.cfg.GeneratorStartWithin <= 0 {
		p.cfg.GeneratorStartWithin = 30 * time.Second
	}
	return p
}

// State is the policy's state and since when.
func (p *Power) State() (string, time.Time) { return p.state, p.since }

// FSD reports whether a forced shutdown is in force (the covered UPSes show FSD).
func (p *Power) FSD() bool { return p.fsd }

// Covers reports whether the policy watches this device: a covered UPS or the generator
// controller.
func (p *Power) Covers(id string) bool {
	_, ok := p.ups[id]
	return ok || (id != "" && id == p.cfg.GeneratorDevice)
}

// Observe takes one poll of a device (its state and readings).
func (p *Power) Observe(id string, devState sensors.DeviceState, rs []sensors.Reading, at time.Time) []Action {
	u, ok := p.ups[id]
	if !ok {
		if id != "" && id == p.cfg.GeneratorDevice {
			return p.observeGenerator(devState, rs, at)
		}
		return nil
	}
	var out []Action
	u.state = devState
	st, good := text(rs, "ups.status")
	if devState != sensors.DeviceOK || !good {
		// Not a poll that counts. A UPS that stops answering while on battery is the case a
		// lost serial cable creates: say so, and keep deciding on its extrapolated runtime.
		if devState == sensors.DeviceStale && !u.silent && p.onBattery() && hasFlag(u.status, "OB") {
			u.silent = true
			u.silCrit = 0
			out = append(out, Action{Kind: Raise, Policy: "power", At: at, Key: KeyCommLost + id, Severity: incident.Critical, Device: id, Metric: "ups.status",
				Value: u.status, Reason: fmt.Sprintf("communication lost with %s while on battery; deciding on its extrapolated runtime (%.0f s at the last reading)", id, u.runtime)})
		}
		return append(out, p.step(at)...)
	}
	if u.silent {
		u.silent = false
		out = append(out, Action{Kind: Resolve, Policy: "power", At: at, Key: KeyCommLost + id, Device: id, Reason: id + " answers again"})
	}
	// Runtime and its discharge rate, for the extrapolation.
	st = strings.ReplaceAll(st, " FSD", "") // our own flag does not count
	if rt, ok := num(rs, "battery.runtime"); ok {
		if u.chgAt.IsZero() || rt != u.chgVal {
			if !u.chgAt.IsZero() && hasFlag(st, "OB") && rt < u.chgVal {
				if dt := at.Sub(u.chgAt).Seconds(); dt > 0 {
					r := (u.chgVal - rt) / dt
					u.rate = 0.5*u.rate + 0.5*math.Min(math.Max(r, 0.2), 20)
				}
			}
			u.chgVal, u.chgAt = rt, at
		}
		u.runtime, u.rtAt = rt, at
	}
	u.status, u.statusAt = st, at
	if hasFlag(st, "OB") {
		u.ob++
		u.ol = 0
	} else if hasFlag(st, "OL") {
		u.ol++
		u.ob = 0
	} else {
		u.ob, u.ol = 0, 0
	}
	if p.shutdownCondition(u) {
		u.crit++
	} else {
		u.crit = 0
	}
	return append(out, p.step(at)...)
}

func (p *Power) shutdownCondition(u *upsView) bool {
	if !hasFlag(u.status, "OB") {
		return false
	}
	if hasFlag(u.status, "LB") {
		return true
	}
	if p.cfg.ShutdownRuntimeBelow > 0 && !u.rtAt.IsZero() && u.rtAt.Equal(u.statusAt) && u.runtime < p.cfg.ShutdownRuntimeBelow.Seconds() {
		return true
	}
	return false
}

func (p *Power) onBattery() bool {
	return p.state == OnBattery || p.state == GeneratorTimeout || p.state == Shutdown
}

// extrapolated is a silent UPS's runtime now, from the last change of its runtime at the
// measured discharge rate (at least real time).
func (u *upsView) extrapolated(now time.Time) float64 {
	return u.chgVal - math.Max(u.rate, 1)*now.Sub(u.chgAt).Seconds()
}

// Tick moves the timers on (generator timeout, recovery, cool-down, silent UPS).
func (p *Power) Tick(now time.Time) []Action {
	var out []Action
	for _, id := range p.order {
		u := p.ups[id]
		if !u.silent || u.chgAt.IsZero() {
			continue
		}
		limit := p.cfg.ShutdownRuntimeBelow
		if limit == 0 {
			limit = silentRuntimeFloor
		}
		if u.extrapolated(now) < limit.Seconds() {
			u.silCrit++
		} else {
			u.silCrit = 0
		}
	}
	return append(out, p.step(now)...)
}

// Ack is an operator acknowledging the shutdown incident: FSD may clear once mains is back.
func (p *Power) Ack(key string, now time.Time) []Action {
	if key != KeyShutdown {
		return nil
	}
	p.acked = true
	return p.step(now)
}

func (p *Power) set(state string, at time.Time, reason string) Action {
	p.state, p.since = state, at
	return Action{Kind: Decision, Policy: "power", At: at, State: state, Reason: reason}
}

func (p *Power) relay(on bool, at time.Time, reason string) []Action {
	if p.cfg.GeneratorRelay == "" || p.genOn == on {
		return nil
	}
	p.genOn = on
	return []Action{{Kind: Relay, Policy: "power", At: at, Relay: p.cfg.GeneratorRelay, On: on, Reason: reason}}
}

// step applies the transitions that hold now.
func (p *Power) step(now time.Time) []Action {
	var out []Action
	confirm := p.cfg.ConfirmPolls
	var obUPS, critUPS string
	mainsBack := true
	for _, id := range p.order {
		u := p.ups[id]
		if u.ob >= confirm && obUPS == "" {
			obUPS = id
		}
		if (u.crit >= confirm || u.silCrit >= confirm) && critUPS == "" {
			critUPS = id
		}
		// Mains is back when every covered UPS that answers says OL, confirmed, and none is
		// silent while last seen on battery.
		if u.silent || u.ol < confirm {
			if !(u.state != sensors.DeviceOK && !u.silent && !hasFlag(u.status, "OB")) {
				mainsBack = false
			}
		}
	}
	switch p.state {
	case Normal, Recovered:
		if obUPS != "" {
			u := p.ups[obUPS]
			reason := fmt.Sprintf("mains lost: %s reports %q", obUPS, u.status)
			p.obSince, p.mainsSince, p.acked = now, time.Time{}, false
			if p.state == Normal {
				p.ran = false
			}
			out = append(out, p.set(OnBattery, now, reason))
			out = append(out, Action{Kind: Raise, Policy: "power", At: now, Key: KeyMains, Severity: incident.Warning, Device: obUPS, Metric: "ups.status", Value: u.status, Thresh: "OB", Reason: reason})
			out = append(out, p.relay(true, now, "mains lost: start the generator")...)
		}
	}
	switch p.state {
	case OnBattery, GeneratorTimeout:
		if critUPS != "" {
			u := p.ups[critUPS]
			reason := fmt.Sprintf("%s: battery low (%q)", critUPS, u.status)
			if !u.rtAt.IsZero() {
				reason = fmt.Sprintf("%s: battery low (%q, runtime %.0f s)", critUPS, u.status, u.runtime)
			}
			if u.silent {
				reason = fmt.Sprintf("%s silent on battery: extrapolated runtime %.0f s", critUPS, u.extrapolated(now))
			}
			out = append(out, p.set(Shutdown, now, "shutdown ordered: "+reason))
			p.fsd = true
			out = append(out, Action{Kind: FSD, Policy: "power", At: now, UPS: append([]string(nil), p.order...), On: true, Reason: reason})
			if p.cfg.ShutdownCommand != "" && !p.ran {
				p.ran = true
				out = append(out, Action{Kind: Command, Policy: "power", At: now, Cmd: p.cfg.ShutdownCommand, Reason: reason})
			}
			out = append(out, Action{Kind: Raise, Policy: "power", At: now, Key: KeyShutdown, Severity: incident.Critical, Device: critUPS, Metric: "battery.runtime",
				Value: u.runtime, Thresh: p.cfg.ShutdownRuntimeBelow.Seconds(), Reason: "protected servers ordered down: " + reason})
		} else if p.state == OnBattery && !mainsBack && p.cfg.GeneratorTimeout > 0 && now.Sub(p.obSince) >= p.cfg.GeneratorTimeout {
			reason := fmt.Sprintf("mains not back %s after the generator start", dur(now.Sub(p.obSince)))
			out = append(out, p.set(GeneratorTimeout, now, reason))
			out = append(out, Action{Kind: Raise, Policy: "power", At: now, Key: KeyMains, Severity: incident.Critical, Reason: reason})
		}
	}
	if p.onBattery() {
		if mainsBack {
			if p.mainsSince.IsZero() {
				p.mainsSince = now
			}
			if now.Sub(p.mainsSince) >= p.cfg.RecoverFor {
				reason := fmt.Sprintf("mains back for %s", dur(now.Sub(p.mainsSince)))
				out = append(out, p.set(Recovered, now, reason))
				out = append(out, Action{Kind: Resolve, Policy: "power", At: now, Key: KeyMains, Reason: reason})
				p.genOff = now.Add(p.cfg.GeneratorCooldown)
			}
		} else {
			p.mainsSince = time.Time{}
		}
	}
	if p.state == Recovered {
		if p.fsd && (p.acked || p.cfg.AutoClear) {
			p.fsd = false
			why := "mains back and the shutdown acknowledged"
			if !p.acked {
				why = "mains back (auto_clear)"
			}
			out = append(out, Action{Kind: FSD, Policy: "power", At: now, UPS: append([]string(nil), p.order...), On: false, Reason: why})
			out = append(out, Action{Kind: Resolve, Policy: "power", At: now, Key: KeyShutdown, Reason: why})
		}
		if p.genOn && !now.Before(p.genOff) {
			out = append(out, p.relay(false, now, "mains back: generator cool-down over")...)
		}
		if !p.genOn && !p.fsd {
			out = append(out, p.set(Normal, now, "generator released, no forced shutdown"))
		}
	}
	return append(out, p.checkGenerator(now)...)
}

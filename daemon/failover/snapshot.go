package failover

import "time"

// PowerSnapshot is what the power policy must remember across a restart or a power cut: its
// state and the facts an ordered shutdown rests on. It holds nothing that changes while the
// site is quiet (no runtime of a UPS that answers, no poll counters), so saving it on every
// change costs nothing on a quiet site. Counters (confirm_polls) and the recovery timer start
// again from the first polls after a restart: a decision that needs confirming is confirmed
// again, never taken on readings from before the gap.
type PowerSnapshot struct {
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	OBSince time.Time `json:"ob_since,omitzero"`
	FSD     bool      `json:"fsd,omitempty"`
	Acked   bool      `json:"acked,omitempty"`
	Ran     bool      `json:"command_run,omitempty"` // the shutdown command was started (or about to be) for this event
	GenOn   bool      `json:"generator_on,omitempty"`
	GenOff  time.Time `json:"generator_off,omitzero"` // end of the generator cool-down
	// GenFailed: the generator-start incident is open, so a start after the restart resolves it.
	GenFailed bool                   `json:"generator_failed,omitempty"`
	UPS       map[string]UPSSnapshot `json:"ups,omitempty"`
}

// UPSSnapshot is what the power policy remembers of one UPS: whether it was last seen on
// battery or fell silent and, then, what its runtime extrapolation rests on.
type UPSSnapshot struct {
	OB     bool      `json:"ob,omitempty"`
	Silent bool      `json:"silent,omitempty"`
	ChgVal float64   `json:"runtime,omitempty"`
	ChgAt  time.Time `json:"runtime_at,omitzero"`
	Rate   float64   `json:"rate,omitempty"`
}

// Snapshot is the policy's state to save.
func (p *Power) Snapshot() PowerSnapshot {
	s := PowerSnapshot{State: p.state, Since: p.since, OBSince: p.obSince, FSD: p.fsd, Acked: p.acked, Ran: p.ran, GenOn: p.genOn, GenOff: p.genOff, GenFailed: p.gen.failed}
	for _, id := range p.order {
		u := p.ups[id]
		us := UPSSnapshot{OB: hasFlag(u.status, "OB"), Silent: u.silent}
		// The discharge is worth keeping only on battery: a UPS that falls silent after a
		// restart is then shut down on its extrapolated runtime, the time the daemon was down
		// included. On mains the runtime wanders with the load and is not saved.
		if (u.silent || us.OB) && !u.chgAt.IsZero() {
			us.ChgVal, us.ChgAt, us.Rate = u.chgVal, u.chgAt, u.rate
		}
		if us != (UPSSnapshot{}) {
			if s.UPS == nil {
				s.UPS = map[string]UPSSnapshot{}
			}
			s.UPS[id] = us
		}
	}
	if !p.onBattery() && p.state != Recovered {
		s.OBSince = time.Time{}
	}
	return s
}

// Restore puts the policy back where a snapshot left it, at start, and returns the actions
// that put the outputs back: FSD on the covered UPSes, the generator relay. It raises no
// incident and runs no command: those were done (and stored) before the restart. The
// UPSes count as not polled yet; the first polls reconcile (a UPS back on mains while the
// daemon was down recovers through recover_for as usual).
func (p *Power) Restore(s PowerSnapshot, now time.Time) []Action {
	switch s.State {
	case Normal, OnBattery, GeneratorTimeout, Shutdown, Recovered:
	default:
		return nil
	}
	p.state, p.since, p.obSince = s.State, s.Since, s.OBSince
	p.fsd, p.acked, p.ran, p.genOff = s.FSD, s.Acked, s.Ran, s.GenOff
	p.gen.failed = s.GenFailed
	p.mainsSince = time.Time{}
	for id, us := range s.UPS {
		u, ok := p.ups[id]
		if !ok {
			continue
		}
		if us.OB {
			u.status = "OB"
		}
		u.silent = us.Silent
		if !us.ChgAt.IsZero() {
			u.chgVal, u.chgAt, u.rate = us.ChgVal, us.ChgAt, us.Rate
			if u.rate <= 0 {
				u.rate = 1
			}
		}
	}
	var out []Action
	if p.fsd {
		out = append(out, Action{Kind: FSD, Policy: "power", At: now, UPS: append([]string(nil), p.order...), On: true, Reason: "forced shutdown ordered before the restart"})
	}
	if s.GenOn {
		out = append(out, p.relay(true, now, "generator on before the restart")...)
	}
	return out
}

// CoolingSnapshot is what the cooling policy remembers across a restart: its state, when the
// median went above on_above, the relay it asked for and the sensors it left out (their
// incidents are open).
type CoolingSnapshot struct {
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	Above    time.Time `json:"above,omitzero"`
	RelayOn  bool      `json:"relay_on,omitempty"`
	Outliers []string  `json:"outliers,omitempty"`
}

// Snapshot is the policy's state to save.
func (c *Cooling) Snapshot() CoolingSnapshot {
	s := CoolingSnapshot{State: c.state, Since: c.since, Above: c.above, RelayOn: c.relayOn}
	for _, id := range c.order {
		if c.sensors[id].outlier {
			s.Outliers = append(s.Outliers, id)
		}
	}
	return s
}

// Restore puts the policy back where a snapshot left it and returns the action that puts the
// backup relay back. Sensors get their grace polls from now, as at any start.
func (c *Cooling) Restore(s CoolingSnapshot, now time.Time) []Action {
	switch s.State {
	case CoolNormal, CoolBackupOn, CoolNoSensors:
	default:
		return nil
	}
	c.state, c.since, c.above = s.State, s.Since, s.Above
	for _, id := range s.Outliers {
		if cs, ok := c.sensors[id]; ok {
			cs.outlier = true
		}
	}
	if s.RelayOn {
		return c.relay(true, now, "backup cooling on before the restart")
	}
	return nil
}

package failover

import (
	"fmt"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// KeyGenStart is the incident of a generator that did not start after its relay was
// energised.
const KeyGenStart = "power:generator-start"

// genVoltageMin is the generator voltage (V, any phase) that counts as "present": well above
// the residual a stopped alternator shows, well below any nominal voltage.
const genVoltageMin = 50

// genView is what the power policy knows of the generator controller
// (failover.power.generator_device): whether the engine runs and gives voltage, from the
// readings the dse-gencomm profile and sim.genset name (engine.running, generator.voltage*).
type genView struct {
	running bool
	volts   float64
	state   string // engine.state.text, for the incident's reason
	onAt    time.Time
	failed  bool
}

// observeGenerator takes one poll of the generator controller. A poll that fails leaves the
// engine unconfirmed: silence is not proof that it runs.
func (p *Power) observeGenerator(devState sensors.DeviceState, rs []sensors.Reading, at time.Time) []Action {
	g := &p.gen
	g.running, g.volts, g.state = false, 0, ""
	if devState == sensors.DeviceOK {
		r, ok := num(rs, "engine.running")
		g.running = ok && r == 1
		for _, x := range rs {
			if strings.HasPrefix(x.Metric, "generator.voltage") && !x.IsText && x.Quality == sensors.Good && x.Value > g.volts {
				g.volts = x.Value
			}
		}
		g.state, _ = text(rs, "engine.state.text")
	}
	return p.step(at)
}

// checkGenerator expects the engine running with voltage within generator_start_within of
// the relay being energised, else opens a critical incident, resolved when it runs or when
// the relay is released.
func (p *Power) checkGenerator(now time.Time) []Action {
	if p.cfg.GeneratorDevice == "" {
		return nil
	}
	g := &p.gen
	if !p.genOn {
		g.onAt = time.Time{}
		if g.failed {
			g.failed = false
			return []Action{{Kind: Resolve, Policy: "power", At: now, Key: KeyGenStart, Device: p.cfg.GeneratorDevice, Reason: "generator relay released"}}
		}
		return nil
	}
	if g.onAt.IsZero() {
		g.onAt = now
	}
	up := g.running && g.volts >= genVoltageMin
	switch {
	case up && g.failed:
		g.failed = false
		return []Action{{Kind: Resolve, Policy: "power", At: now, Key: KeyGenStart, Device: p.cfg.GeneratorDevice,
			Reason: fmt.Sprintf("generator running, %.0f V", g.volts)}}
	case !up && !g.failed && now.Sub(g.onAt) >= p.cfg.GeneratorStartWithin:
		g.failed = true
		seen := "engine not running"
		if g.running {
			seen = fmt.Sprintf("engine running but %.0f V", g.volts)
		} else if g.state != "" {
			seen = "engine " + g.state
		}
		return []Action{{Kind: Raise, Policy: "power", At: now, Key: KeyGenStart, Severity: incident.Critical, Device: p.cfg.GeneratorDevice,
			Metric: "engine.running", Value: 0.0, Thresh: 1.0,
			Reason: fmt.Sprintf("generator failed to start: %s %s after its relay was energised", seen, dur(now.Sub(g.onAt)))}}
	}
	return nil
}

package failover

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// Cooling policy states (CONTRACT.md §5).
const (
	CoolNormal    = "normal"
	CoolBackupOn  = "backup_on"
	CoolNoSensors = "no_sensors"
)

// Incident keys of the cooling policy.
const (
	KeyNoSensors = "cooling:no-sensors"
	KeyHot       = "cooling:backup-on"
	KeyOutlier   = "cooling:sensor-disagrees:" // + sensor id
)

// OutlierSpread is how far (°C) a sensor may read from the median of the others before it is
// taken for faulty: a probe that fell off its bracket or shorted reads far from its
// neighbours, while a real hot aisle warms them all.
const OutlierSpread = 8.0

// Cooling is the cooling policy: the backup cooling relay goes on when the median of the
// healthy sensors stays above on_above for `for`, off below off_below. A sensor that reads
// far from the others (three or more sensors) is left out and reported. With no healthy
// sensor left the relay goes on: fail safe.
type Cooling struct {
	cfg     config.Cooling
	sensors map[string]*coolSensor
	order   []string
	state   string
	since   time.Time
	start   time.Time
	above   time.Time // when the median went above on_above (zero when not)
	median  float64
	relayOn bool
}

type coolSensor struct {
	value   float64
	at      time.Time
	seen    bool // reported at least once (a poll, good or not)
	ok      bool // device ok and the last reading good
	outlier bool
	poll    time.Duration
}

// MaxAge is how old a sensor's last good reading may be before it no longer counts.
const MaxAge = 3

// NewCooling makes the cooling policy. polls gives each sensor's poll interval.
func NewCooling(cfg config.Cooling, polls map[string]time.Duration, now time.Time) *Cooling {
	c := &Cooling{cfg: cfg, sensors: map[string]*coolSensor{}, state: CoolNormal, since: now, start: now, median: math.NaN()}
	for _, id := range cfg.Sensors {
		c.sensors[id] = &coolSensor{poll: polls[id]}
		c.order = append(c.order, id)
	}
	if c.cfg.Metric == "" {
		c.cfg.Metric = "temperature"
	}
	return c
}

// State is the policy's state and since when.
func (c *Cooling) State() (string, time.Time) { return c.state, c.since }

// Covers reports whether the policy watches this sensor.
func (c *Cooling) Covers(id string) bool { _, ok := c.sensors[id]; return ok }

// Median is the value the policy decides on (NaN when no sensor is healthy).
func (c *Cooling) Median() float64 { return c.median }

// Observe takes one poll of a device.
func (c *Cooling) Observe(id string, devState sensors.DeviceState, rs []sensors.Reading, at time.Time) []Action {
	s, ok := c.sensors[id]
	if !ok {
		return nil
	}
	v, good := num(rs, c.cfg.Metric)
	s.seen = true
	switch {
	case devState == sensors.DeviceOK && good:
		s.value, s.at, s.ok = v, at, true
	case devState != sensors.DeviceOK:
		s.ok = false
	}
	return c.decide(at)
}

// Tick re-decides on time: sensors age out, `for` completes.
func (c *Cooling) Tick(now time.Time) []Action { return c.decide(now) }

func (c *Cooling) healthy(s *coolSensor, now time.Time) bool {
	maxAge := MaxAge * s.poll
	if maxAge == 0 {
		maxAge = MaxAge * 5 * time.Second
	}
	return s.ok && now.Sub(s.at) <= maxAge
}

// allLost: every sensor has failed, or never answered within MaxAge polls of the start (so a
// restart does not switch the backup cooling on before the first polls).
func (c *Cooling) allLost(now time.Time) bool {
	for _, s := range c.sensors {
		if !s.seen && now.Sub(c.start) < MaxAge*max(s.poll, time.Second) {
			return false
		}
	}
	return true
}

func median(vs []float64) float64 {
	sort.Float64s(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func (c *Cooling) decide(now time.Time) []Action {
	var out []Action
	var ids []string
	var vals []float64
	for _, id := range c.order {
		s := c.sensors[id]
		if c.healthy(s, now) {
			ids = append(ids, id)
			vals = append(vals, s.value)
		}
	}
	// Outliers: only with three or more healthy sensors can one be told wrong.
	var use []float64
	if len(vals) >= 3 {
		m := median(append([]float64(nil), vals...))
		for i, id := range ids {
			s := c.sensors[id]
			out_ := math.Abs(vals[i]-m) > OutlierSpread
			if out_ != s.outlier {
				s.outlier = out_
				if out_ {
					out = append(out, Action{Kind: Raise, Policy: "cooling", At: now, Key: KeyOutlier + id, Severity: incident.Warning, Device: id, Metric: c.cfg.Metric, Value: vals[i], Thresh: m,
						Reason: fmt.Sprintf("%s reads %.1f, %.1f from the median %.1f of the sensors: left out of the cooling decision", id, vals[i], math.Abs(vals[i]-m), m)})
				} else {
					out = append(out, Action{Kind: Resolve, Policy: "cooling", At: now, Key: KeyOutlier + id, Reason: id + " agrees with the others again"})
				}
			}
			if !out_ {
				use = append(use, vals[i])
			}
		}
	} else {
		use = vals
	}
	if len(use) == 0 {
		c.median = math.NaN()
		if c.state != CoolNoSensors && c.allLost(now) {
			reason := "no healthy cooling sensor left (" + strings.Join(c.order, ", ") + "): backup cooling on, fail safe"
			c.state, c.since = CoolNoSensors, now
			out = append(out, Action{Kind: Decision, Policy: "cooling", At: now, State: CoolNoSensors, Reason: reason})
			out = append(out, Action{Kind: Raise, Policy: "cooling", At: now, Key: KeyNoSensors, Severity: incident.Critical, Metric: c.cfg.Metric, Reason: reason})
			out = append(out, c.relay(true, now, reason)...)
		}
		return out
	}
	m := median(use)
	c.median = m
	if c.state == CoolNoSensors {
		reason := fmt.Sprintf("%d cooling sensor(s) healthy again (median %.1f)", len(use), m)
		out = append(out, Action{Kind: Resolve, Policy: "cooling", At: now, Key: KeyNoSensors, Reason: reason})
		// Stay on until the median says otherwise.
		c.state, c.since = CoolBackupOn, now
		out = append(out, Action{Kind: Decision, Policy: "cooling", At: now, State: CoolBackupOn, Reason: reason})
	}
	onAbove, offBelow := math.Inf(1), math.Inf(-1)
	if c.cfg.OnAbove != nil {
		onAbove = *c.cfg.OnAbove
	}
	if c.cfg.OffBelow != nil {
		offBelow = *c.cfg.OffBelow
	} else if c.cfg.OnAbove != nil {
		offBelow = *c.cfg.OnAbove - 1
	}
	switch c.state {
	case CoolNormal:
		if m > onAbove {
			if c.above.IsZero() {
				c.above = now
			}
			if now.Sub(c.above) >= c.cfg.For {
				reason := fmt.Sprintf("inlet median %.1f above %.1f", m, onAbove)
				if c.cfg.For > 0 {
					reason += " for " + dur(now.Sub(c.above))
				}
				c.state, c.since = CoolBackupOn, now
				out = append(out, Action{Kind: Decision, Policy: "cooling", At: now, State: CoolBackupOn, Reason: reason})
				out = append(out, Action{Kind: Raise, Policy: "cooling", At: now, Key: KeyHot, Severity: incident.Warning, Metric: c.cfg.Metric, Value: m, Thresh: onAbove, Reason: reason + ": backup cooling on"})
				out = append(out, c.relay(true, now, reason)...)
			}
		} else {
			c.above = time.Time{}
		}
	case CoolBackupOn:
		if m < offBelow {
			reason := fmt.Sprintf("inlet median %.1f below %.1f", m, offBelow)
			c.state, c.since, c.above = CoolNormal, now, time.Time{}
			out = append(out, Action{Kind: Decision, Policy: "cooling", At: now, State: CoolNormal, Reason: reason})
			out = append(out, Action{Kind: Resolve, Policy: "cooling", At: now, Key: KeyHot, Reason: reason})
			out = append(out, c.relay(false, now, reason)...)
		}
	}
	return out
}

func (c *Cooling) relay(on bool, at time.Time, reason string) []Action {
	if c.relayOn == on {
		return nil
	}
	c.relayOn = on
	return []Action{{Kind: Relay, Policy: "cooling", At: at, Relay: c.cfg.BackupRelay, On: on, Reason: reason}}
}

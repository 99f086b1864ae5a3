package site

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/failover"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/sim"
)

// Timeline is what -replay reads: timed changes of device readings, fed through the real
// rules and policies on a virtual clock.
//
//	start: 2026-01-01T03:00:00Z      # optional; the virtual clock's start
//	until: 30m                       # optional; default 5m after the last event
//	events:
//	  - {at: 0s, device: ups1, set: {ups.status: OL, battery.runtime: 1800}}
//	  - {at: 20s, device: ups1, set: {ups.status: OB DISCHRG}}
//	  - {at: 5m, device: ups1, fail: true}     # stops answering
//	  - {at: 9m, ack: power:shutdown}           # an operator acknowledges that incident
//
// Every device of the config is polled at its own interval with the values set so far; a
// failing device fails its polls and turns stale as a real one would.
type Timeline struct {
	Start  time.Time       `yaml:"start"`
	Until  time.Duration   `yaml:"until"`
	Events []TimelineEvent `yaml:"events"`
}

// TimelineEvent is one step of a timeline.
type TimelineEvent struct {
	At     time.Duration            `yaml:"at"`
	Device string                   `yaml:"device"`
	Set    map[string]sensors.Value `yaml:"set"`
	Fail   *bool                    `yaml:"fail"`
	Ack    string                   `yaml:"ack"`
}

// Line is one JSON line of the replay's output.
type Line struct {
	TS       string            `json:"ts"`
	Type     string            `json:"type"` // decision, relay, fsd, command, incident
	Policy   string            `json:"policy,omitempty"`
	State    string            `json:"state,omitempty"`
	Relay    string            `json:"relay,omitempty"`
	On       *bool             `json:"on,omitempty"`
	UPS      []string          `json:"ups,omitempty"`
	Command  string            `json:"command,omitempty"`
	Event    string            `json:"event,omitempty"`
	ID       string            `json:"id,omitempty"`
	Key      string            `json:"key,omitempty"`
	Rule     string            `json:"rule,omitempty"`
	Severity incident.Severity `json:"severity,omitempty"`
	Device   string            `json:"device,omitempty"`
	Value    any               `json:"value,omitempty"`
	Reason   string            `json:"reason,omitempty"`
}

// ReadTimeline reads a timeline file.
func ReadTimeline(path string) (*Timeline, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTimeline(path, b)
}

// ParseTimeline parses a timeline; name is used in errors.
func ParseTimeline(name string, b []byte) (*Timeline, error) {
	var tl Timeline
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&tl); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &tl, nil
}

// Replay runs a timeline through the site's rules, incidents and policies on a virtual clock
// and writes each decision and incident event as a JSON line. Nothing is switched or run: the
// relays are simulated and the shutdown command is printed.
func Replay(cfg *config.Config, tl *Timeline, out io.Writer) error {
	c := *cfg
	dir, err := os.MkdirTemp("", "rackwatch-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c.DataDir = dir
	start := tl.Start
	if start.IsZero() {
		start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	vt := start
	now := func() time.Time { return vt }
	s, err := open(&c, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now})
	if err != nil {
		return err
	}
	defer s.close()
	enc := json.NewEncoder(out)
	emit := func(l Line) { enc.Encode(l) }
	s.inc.SetPublisher(func(e incident.Event) error {
		in := e.Incident
		emit(Line{TS: fmtTime(e.TS), Type: "incident", Event: e.Event, ID: in.ID, Key: in.Key, Rule: in.Rule, Severity: in.Severity,
			Device: in.Device, Value: in.Value, Reason: in.Summary})
		return nil
	})

	type devSim struct {
		spec     sensors.Spec
		units    map[string]string
		vals     map[string]sensors.Value
		fail     bool
		next     time.Time
		lastGood time.Time
	}
	var devs []*devSim
	byID := map[string]*devSim{}
	for _, spec := range c.Devices {
		s.specs[spec.ID] = spec
		s.store.AddDevice(spec.ID, spec.Driver)
		d := &devSim{spec: spec, vals: map[string]sensors.Value{}, next: start, lastGood: start}
		if drv, ok := sensors.Lookup(spec.Driver); ok {
			d.units = drv.Metrics
		}
		for k, v := range sim.StoryOf(spec).Values {
			d.vals[k] = v
		}
		if sensors.SpecClass(spec) == sensors.ClassRelay {
			s.devs[spec.ID] = sim.Relay{Device: sim.New("sim.relay", spec, now)}
		}
		devs = append(devs, d)
		byID[spec.ID] = d
	}
	s.relays = newRelays(s)
	s.policies = newPolicies(s)
	s.policies.runCommands = false
	s.policies.onAction = func(a failover.Action) {
		l := Line{TS: fmtTime(a.At), Type: a.Kind, Policy: a.Policy, Reason: a.Reason}
		switch a.Kind {
		case failover.Decision:
			l.State = a.State
		case failover.Relay:
			on := a.On
			l.Relay, l.On = a.Relay, &on
		case failover.FSD:
			on := a.On
			l.UPS, l.On = a.UPS, &on
		case failover.Command:
			l.Command = a.Cmd
		default:
			return // raise/resolve show as incident events
		}
		emit(l)
	}

	events := append([]TimelineEvent(nil), tl.Events...)
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
	for _, e := range events {
		if e.Device != "" && byID[e.Device] == nil {
			return fmt.Errorf("timeline: no device %q in the config", e.Device)
		}
	}
	end := tl.Until
	if end == 0 && len(events) > 0 {
		end = events[len(events)-1].At + 5*time.Minute
	}
	step := time.Second
	for _, d := range devs {
		if d.spec.Poll < step {
			step = d.spec.Poll
		}
	}
	next := 0
	lastTick := start
	tick := tickEvery(s.cfg.Devices) // as the running daemon's housekeeping
	for t := time.Duration(0); t <= end; t += step {
		vt = start.Add(t)
		for next < len(events) && events[next].At <= t {
			e := events[next]
			next++
			if d := byID[e.Device]; d != nil {
				for k, v := range e.Set {
					d.vals[k] = v
				}
				if e.Fail != nil {
					d.fail = *e.Fail
				}
			}
			if e.Ack != "" {
				for _, in := range s.inc.OpenIncidents() {
					if in.Key == e.Ack || in.ID == e.Ack {
						if err := s.Ack(in.ID, "replay"); err != nil {
							return fmt.Errorf("timeline: ack %s: %w", e.Ack, err)
						}
					}
				}
			}
		}
		for _, d := range devs {
			if vt.Before(d.next) || sensors.SpecClass(d.spec) == sensors.ClassRelay {
				continue
			}
			d.next = d.next.Add(d.spec.Poll)
			res := poll.Result{Device: d.spec.ID, At: vt}
			if d.fail {
				res.Err = sim.ErrNoAnswer
				res.State = sensors.DeviceError
				if vt.Sub(d.lastGood) >= poll.StaleAfter*d.spec.Poll {
					res.State = sensors.DeviceStale
				}
			} else if len(d.vals) > 0 {
				d.lastGood = vt
				res.State = sensors.DeviceOK
				keys := make([]string, 0, len(d.vals))
				for k := range d.vals {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					v := d.vals[k]
					if v.IsText {
						res.Readings = append(res.Readings, sensors.Text(d.spec.ID, k, v.Text, vt))
					} else {
						res.Readings = append(res.Readings, sensors.Num(d.spec.ID, k, v.Num, d.units[k], vt))
					}
				}
			} else {
				continue // nothing set for it yet: it is not part of the story
			}
			s.ingest(res)
		}
		if vt.Sub(lastTick) >= tick {
			lastTick = vt
			s.inc.Tick(vt)
			s.mu.Lock()
			s.policies.tick(vt)
			s.mu.Unlock()
		}
	}
	return nil
}

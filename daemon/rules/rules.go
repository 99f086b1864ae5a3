// Package rules evaluates threshold and state rules (CONTRACT.md §2 rules) on readings and
// reports level changes. It is a pure state machine on the time it is given, so the replay and
// the tests drive it on a virtual clock. It must not import the site's other parts.
package rules

import (
	"fmt"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// Level of a rule.
type Level int

const (
	None Level = iota
	Warning
	Critical
)

func (l Level) String() string {
	switch l {
	case Warning:
		return string(incident.Warning)
	case Critical:
		return string(incident.Critical)
	}
	return "none"
}

// Severity is the severity of an incident at level l ("" for None).
func (l Level) Severity() incident.Severity {
	switch l {
	case Warning:
		return incident.Warning
	case Critical:
		return incident.Critical
	}
	return ""
}

// ParseLevel gives the level of an incident's severity (None for none).
func ParseLevel(s incident.Severity) Level {
	switch s {
	case incident.Warning:
		return Warning
	case incident.Critical:
		return Critical
	}
	return None
}

// Change is a rule moving from one level to another.
type Change struct {
	Rule      string
	Device    string
	Metric    string
	From, To  Level
	Value     any // the reading's value (number or text)
	Threshold any // the threshold crossed (number), or the status flag / value matched
	At        time.Time
}

type rule struct {
	config.Rule
	level   Level
	pending Level     // level the condition asks for, waiting out `for`
	since   time.Time // when pending started

	// Boxing a float64 or a string into an interface allocates. A Change carries its value and
	// threshold as interfaces, so the thresholds are boxed once here, and the last two values
	// a change carried are kept boxed: a contact, a status or a flapping reading goes back and
	// forth between two values, and the hot path stays free of allocations (BenchmarkEval*).
	fixed any    // StatusHas or Equals as published
	thr   [4]any // CritAbove, CritBelow, WarnAbove, WarnBelow boxed (nil when unset)
	vals  [2]any // the last two values carried, newest first
}

// Threshold slots in rule.thr.
const (
	thrCritAbove = iota
	thrCritBelow
	thrWarnAbove
	thrWarnBelow
	thrNone = -1
)

// Engine holds every rule's state.
type Engine struct {
	rules []*rule
	by    map[[2]string][]*rule
}

// New compiles the rules.
func New(rs []config.Rule) *Engine {
	e := &Engine{by: map[[2]string][]*rule{}}
	for _, r := range rs {
		c := &rule{Rule: r}
		switch {
		case r.StatusHas != "":
			c.fixed = r.StatusHas
		case r.Equals != nil:
			c.fixed = r.Equals.JSON()
		}
		for i, t := range []*float64{r.CritAbove, r.CritBelow, r.WarnAbove, r.WarnBelow} {
			if t != nil {
				c.thr[i] = *t
			}
		}
		e.rules = append(e.rules, c)
		k := [2]string{r.Device, r.Metric}
		e.by[k] = append(e.by[k], c)
	}
	return e
}

// Seed sets a rule's level without a change: after a restart, from the open incidents, so a
// condition that cleared while the daemon was down resolves, and one that holds does not open
// a second incident.
func (e *Engine) Seed(name string, l Level) {
	for _, r := range e.rules {
		if r.Name == name {
			r.level, r.pending = l, l
		}
	}
}

// Level returns a rule's current level.
func (e *Engine) Level(name string) Level {
	for _, r := range e.rules {
		if r.Name == name {
			return r.level
		}
	}
	return None
}

// Eval applies one reading and appends the changes it causes to out. Stale and error readings
// change nothing: a rule never fires, nor clears, on data it cannot trust. out lets the hot
// path run without allocating.
func (e *Engine) Eval(rd sensors.Reading, now time.Time, out []Change) []Change {
	rs := e.by[[2]string{rd.Device, rd.Metric}]
	if len(rs) == 0 || rd.Quality != sensors.Good {
		return out
	}
	for _, r := range rs {
		want, thr := r.want(rd)
		if want == r.level {
			r.pending = want
			continue
		}
		if want < r.level {
			// Clearing (or stepping down) is immediate once out of the hysteresis band.
			out = append(out, r.change(rd, want, thr, now))
			continue
		}
		if r.For > 0 {
			if r.pending != want {
				r.pending, r.since = want, now
			}
			if now.Sub(r.since) < r.For {
				continue
			}
		}
		out = append(out, r.change(rd, want, thr, now))
	}
	return out
}

func (r *rule) change(rd sensors.Reading, to Level, thr int, now time.Time) Change {
	var threshold any = 0.0
	switch {
	case r.fixed != nil:
		threshold = r.fixed
	case thr != thrNone:
		threshold = r.thr[thr]
	}
	c := Change{Rule: r.Name, Device: r.Device, Metric: r.Metric, From: r.level, To: to, Value: r.value(rd), Threshold: threshold, At: now}
	r.level, r.pending = to, to
	return c
}

// value is rd.JSONValue(), reusing a boxed copy when the value is one of the last two.
func (r *rule) value(rd sensors.Reading) any {
	if rd.Quality == sensors.Error {
		return nil
	}
	for i, v := range r.vals {
		same := false
		switch v := v.(type) {
		case float64:
			same = !rd.IsText && v == rd.Value
		case string:
			same = rd.IsText && v == rd.Text
		}
		if same {
			if i == 1 {
				r.vals[0], r.vals[1] = r.vals[1], r.vals[0]
			}
			return v
		}
	}
	v := rd.JSONValue()
	r.vals[0], r.vals[1] = v, r.vals[0]
	return v
}

// want is the level the reading asks for, with hysteresis against the current level, and the
// threshold (a slot of rule.thr) it was judged against.
func (r *rule) want(rd sensors.Reading) (Level, int) {
	switch {
	case r.StatusHas != "":
		if hasFlag(rd.Text, r.StatusHas) {
			return sev(r.Severity), thrNone
		}
		return None, thrNone
	case r.Equals != nil:
		eq := false
		if r.Equals.IsText {
			eq = rd.IsText && rd.Text == r.Equals.Text
		} else {
			eq = !rd.IsText && rd.Value == r.Equals.Num
		}
		if eq {
			return sev(r.Severity), thrNone
		}
		return None, thrNone
	}
	if rd.IsText {
		return r.level, thrNone
	}
	v, h := rd.Value, r.Hysteresis
	// above: entering at > t; staying while > t - h (if already at or beyond that level).
	above := func(t *float64, lvl Level) bool {
		if t == nil {
			return false
		}
		if r.level >= lvl {
			return v > *t-h
		}
		return v > *t
	}
	below := func(t *float64, lvl Level) bool {
		if t == nil {
			return false
		}
		if r.level >= lvl {
			return v < *t+h
		}
		return v < *t
	}
	switch {
	case above(r.CritAbove, Critical):
		return Critical, thrCritAbove
	case below(r.CritBelow, Critical):
		return Critical, thrCritBelow
	case above(r.WarnAbove, Warning):
		return Warning, thrWarnAbove
	case below(r.WarnBelow, Warning):
		return Warning, thrWarnBelow
	}
	switch {
	case r.CritAbove != nil:
		return None, thrCritAbove
	case r.WarnAbove != nil:
		return None, thrWarnAbove
	case r.CritBelow != nil:
		return None, thrCritBelow
	case r.WarnBelow != nil:
		return None, thrWarnBelow
	}
	return None, thrNone
}

func sev(s incident.Severity) Level {
	if s == incident.Warning {
		return Warning
	}
	return Critical
}

// hasFlag reports whether a NUT status ("OB DISCHRG LB") has a flag, as a whole word.
func hasFlag(status, flag string) bool {
	for len(status) > 0 {
		i := strings.IndexByte(status, ' ')
		w := status
		if i >= 0 {
			w, status = status[:i], status[i+1:]
		} else {
			status = ""
		}
		if w == flag {
			return true
		}
	}
	return false
}

// HasFlag is hasFlag for the other parts of the daemon.
func HasFlag(status, flag string) bool { return hasFlag(status, flag) }

func (c Change) String() string {
	return fmt.Sprintf("%s %s/%s %s→%s value=%v threshold=%v", c.Rule, c.Device, c.Metric, c.From, c.To, c.Value, c.Threshold)
}

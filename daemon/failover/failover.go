// Package failover holds the local policies as explicit state machines: the power policy
// (mains lost → generator → shutdown → recovered) and the cooling policy (backup cooling on
// the median of the healthy inlet sensors). They see readings and time, and answer with
// Actions (switch a relay, raise FSD, run the shutdown command, open or resolve an incident,
// record a decision); the site carries the actions out. Nothing here touches hardware or the
// clock, so the replay and the tests drive them on a virtual clock.
//
// It must not import the site's wiring, the web, NUT or the uplink.
package failover

import (
	"fmt"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/rules"
	"github.com/rackwatch/rackwatch/sensors"
)

// Action kinds.
const (
	Relay    = "relay"    // switch Relay to On
	FSD      = "fsd"      // raise (On) or clear forced shutdown on UPS
	Command  = "command"  // run the shutdown command once
	Raise    = "raise"    // open or escalate the incident Key
	Resolve  = "resolve"  // resolve the incident Key
	Decision = "decision" // a state change, for the timeline
)

// Action is one thing a policy decided.
type Action struct {
	Kind     string            `json:"kind"`
	Policy   string            `json:"policy"`
	At       time.Time         `json:"ts"`
	Relay    string            `json:"relay,omitempty"`
	On       bool              `json:"on,omitempty"`
	UPS      []string          `json:"ups,omitempty"`
	Cmd      string            `json:"command,omitempty"`
	Key      string            `json:"key,omitempty"`
	Severity incident.Severity `json:"severity,omitempty"`
	Device   string            `json:"device,omitempty"`
	Metric   string            `json:"metric,omitempty"`
	Value    any               `json:"value,omitempty"`
	Thresh   any               `json:"threshold,omitempty"`
	State    string            `json:"state,omitempty"` // Decision: the new state
	Reason   string            `json:"reason"`
}

// hasFlag reports whether a NUT status has a flag, as a whole word.
func hasFlag(status, flag string) bool { return rules.HasFlag(status, flag) }

func num(rs []sensors.Reading, metric string) (float64, bool) {
	for _, r := range rs {
		if r.Metric == metric && !r.IsText && r.Quality == sensors.Good {
			return r.Value, true
		}
	}
	return 0, false
}

func text(rs []sensors.Reading, metric string) (string, bool) {
	for _, r := range rs {
		if r.Metric == metric && r.IsText && r.Quality == sensors.Good {
			return r.Text, true
		}
	}
	return "", false
}

func dur(d time.Duration) string {
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

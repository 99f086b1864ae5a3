// Package sensors holds the device models: each turns what a driver in drivers/ reads into
// readings named as CONTRACT.md §3 names them. It knows buses, frames and PDUs only through
// drivers/, and nothing of sites, rules, MQTT or the web: it must not import daemon/ or uplink/.
//
// The registry is the one place that says what a driver is. To add a driver: make its
// package (sensors/<name>, with its bus code in drivers/<name> if it has any); define an
// option struct with a yaml tag for each of its keys (Options); call Register from init with
// the driver's Name, its Class (what the daemon treats it as: a UPS for NUT and the power
// policy, a relay for the policies, a section of the page; DeviceClass if it depends on a
// device's options), Options as a zero value, the
// Required keys, its Metrics, a Check that judges a spec without touching hardware (return a
// *KeyError to point at a key's line) and New; read the keys back with Opts[Options](spec).
// Then add one import to sensors/all. The common keys (id, driver, poll, timeout,
// description) stay in Spec; a key the option struct has no field for is refused at its line
// by the config check, and nothing in daemon/ needs to change.
package sensors

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Quality says how far a reading can be trusted.
type Quality string

const (
	Good  Quality = "good"
	Stale Quality = "stale" // not refreshed by the last poll
	Error Quality = "error" // the device answered, but this value could not be read
)

// DeviceState is what the poller makes of a device's recent polls (CONTRACT.md §3), as the
// page, /api/v1/devices, the policies and NUT see it.
type DeviceState string

const (
	DeviceOK    DeviceState = "ok"
	DeviceError DeviceState = "error" // the last poll failed
	DeviceStale DeviceState = "stale" // no good poll for three intervals
)

// Reading is one value of one metric of one device (CONTRACT.md §3).
//
// Most metrics are numbers and use Value. A few, like NUT's ups.status ("OL", "OB LB") or
// ups.type, are words and use Text; IsText tells which. Keeping both in a flat struct, not an
// interface{}, keeps the hot path free of allocations.
type Reading struct {
	Device  string
	Metric  string
	Value   float64
	Text    string
	IsText  bool
	Unit    string
	Quality Quality
	TS      time.Time
}

// Num returns a numeric reading.
func Num(device, metric string, v float64, unit string, ts time.Time) Reading {
	return Reading{Device: device, Metric: metric, Value: v, Unit: unit, Quality: Good, TS: ts}
}

// Text returns a textual reading.
func Text(device, metric, text string, ts time.Time) Reading {
	return Reading{Device: device, Metric: metric, Text: text, IsText: true, Quality: Good, TS: ts}
}

// Failed returns an error reading: the metric exists but this poll could not read it.
func Failed(device, metric, unit string, ts time.Time) Reading {
	return Reading{Device: device, Metric: metric, Unit: unit, Quality: Error, TS: ts}
}

// FailedAll returns an error reading for each of metrics, in that order, with its unit from
// units: what a device returns when a whole poll failed.
func FailedAll(device string, metrics []string, units map[string]string, ts time.Time) []Reading {
	out := make([]Reading, 0, len(metrics))
	for _, m := range metrics {
		out = append(out, Failed(device, m, units[m], ts))
	}
	return out
}

// Round keeps decimals digits after the point: a chip's resolution, and no float noise
// beyond it.
func Round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}

// String renders the value the way NUT and the status page show it.
func (r Reading) String() string {
	if r.IsText {
		return r.Text
	}
	return strconv.FormatFloat(r.Value, 'f', -1, 64)
}

// JSONValue is the value as it goes into JSON: a string for text, a number otherwise, and
// null for an error reading, so that a consumer never mistakes a failed read for a zero.
func (r Reading) JSONValue() any {
	switch {
	case r.Quality == Error:
		return nil
	case r.IsText:
		return r.Text
	default:
		return r.Value
	}
}

type readingJSON struct {
	Device  string  `json:"device"`
	Metric  string  `json:"metric"`
	Value   any     `json:"value"`
	Unit    string  `json:"unit"`
	Quality Quality `json:"quality"`
	TS      string  `json:"ts"`
}

// MarshalJSON writes the CONTRACT.md §3/§4 form.
func (r Reading) MarshalJSON() ([]byte, error) {
	return json.Marshal(readingJSON{r.Device, r.Metric, r.JSONValue(), r.Unit, r.Quality, FormatTime(r.TS)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (r *Reading) UnmarshalJSON(b []byte) error {
	var j readingJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Reading{Device: j.Device, Metric: j.Metric, Unit: j.Unit, Quality: j.Quality}
	switch v := j.Value.(type) {
	case string:
		r.Text, r.IsText = v, true
	case float64:
		r.Value = v
	}
	if j.TS != "" {
		t, err := time.Parse(time.RFC3339Nano, j.TS)
		if err != nil {
			return err
		}
		r.TS = t
	}
	return nil
}

// FormatTime is the one time format on the wire: RFC 3339, UTC, millisecond precision.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

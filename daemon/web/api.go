// Package web serves the local status page, the JSON API, server-sent events, /metrics and
// /healthz (CONTRACT.md §5), and the browser login that guards control actions.
//
// It talks to the site only through Backend, so it knows nothing of drivers or MQTT: it must
// not import drivers/, uplink/ or daemon/site (the site imports web, not the other way), and
// of sensors/ only the reading types. The page is written by render.go (its CSS and script in
// assets/) on the server, so it works without JavaScript; a small inline script keeps it live
// from /events by fetching the server's own rendering of the live part again, so there is one
// renderer.
package web

import (
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/sensors"
)

// Status is GET /api/v1/status.
type Status struct {
	Site      string              `json:"site"`
	Node      string              `json:"node"`
	Version   string              `json:"version"`
	UptimeS   int64               `json:"uptime_s"`
	Devices   []DeviceStatus      `json:"devices"`
	Incidents []incident.Incident `json:"incidents"`
	Uplink    Uplink              `json:"uplink"`
	Failover  Failover            `json:"failover"`
	Relays    []Relay             `json:"relays"`
	NUT       NUTStatus           `json:"nut"`
	// Rules are the configured rules, so the page can draw each metric against its
	// thresholds; the site fills it from cfg.Rules.
	Rules []RuleView `json:"rules,omitempty"`
	// Firmware is the running firmware and its last update (CONTRACT.md §8), as the site's
	// updater reports it; nil: not reported.
	Firmware any `json:"firmware,omitempty"`
}

// RuleView is one configured rule as the page shows it: the thresholds of a numeric rule,
// or the flag / value that a status_has / equals rule looks for.
type RuleView struct {
	Name       string            `json:"name"`
	Device     string            `json:"device"`
	Metric     string            `json:"metric"`
	WarnAbove  *float64          `json:"warn_above,omitempty"`
	CritAbove  *float64          `json:"crit_above,omitempty"`
	WarnBelow  *float64          `json:"warn_below,omitempty"`
	CritBelow  *float64          `json:"crit_below,omitempty"`
	StatusHas  string            `json:"status_has,omitempty"`
	Equals     any               `json:"equals,omitempty"`
	Severity   incident.Severity `json:"severity,omitempty"`
	Hysteresis float64           `json:"hysteresis,omitempty"`
}

// DeviceStatus is one device in the status.
type DeviceStatus struct {
	ID       string              `json:"id"`
	Driver   string              `json:"driver"`
	State    sensors.DeviceState `json:"state"`
	LastSeen string              `json:"last_seen"`
	// Description is the config's description of the device, if any.
	Description string `json:"description,omitempty"`
	// Class is the device's class (sensors.Class) for the page's sections; "" means its
	// driver's.
	Class    string                   `json:"-"`
	Error    string                   `json:"error,omitempty"`
	Readings map[string]ReadingStatus `json:"readings"`
}

// ReadingStatus is one reading in the status.
type ReadingStatus struct {
	Value   any    `json:"value"`
	Unit    string `json:"unit"`
	Quality string `json:"quality"`
	TS      string `json:"ts"`
}

// Uplink is the MQTT uplink's state.
type Uplink struct {
	Connected bool   `json:"connected"`
	Broker    string `json:"broker"`
	Queued    int    `json:"queued"`
	Dropped   uint64 `json:"dropped"`
	LastError string `json:"last_error,omitempty"`
}

// Failover is the policies' state.
type Failover struct {
	Power   *PolicyState `json:"power"`
	Cooling *PolicyState `json:"cooling"`
}

// PolicyState is one policy's state and its recent decisions.
type PolicyState struct {
	State     string     `json:"state"`
	Since     string     `json:"since"`
	Reason    string     `json:"reason,omitempty"`
	Decisions []Decision `json:"decisions,omitempty"`
	// Relay is the relay the policy drives (failover.power.generator_relay,
	// failover.cooling.backup_relay) and Devices the devices it watches (power: ups, cooling:
	// sensors), so the page can put them next to the policy. Added for the page.
	Relay   string   `json:"relay,omitempty"`
	Devices []string `json:"devices,omitempty"`
	// Metric, OnAbove and OffBelow are the cooling policy's (failover.cooling.metric,
	// on_above, off_below), drawn on its sensors' charts. Added for the page.
	Metric   string   `json:"metric,omitempty"`
	OnAbove  *float64 `json:"on_above,omitempty"`
	OffBelow *float64 `json:"off_below,omitempty"`
}

// Decision is one thing a policy decided.
type Decision struct {
	TS     string `json:"ts"`
	Action string `json:"action"`
	Reason string `json:"reason"`
}

// Relay is a relay's output and who set it.
type Relay struct {
	ID        string `json:"id"`
	On        bool   `json:"on"`
	Mode      string `json:"mode"` // auto, on, off (operator override)
	ChangedBy string `json:"changed_by,omitempty"`
	Why       string `json:"why,omitempty"`
	Changed   string `json:"changed,omitempty"`
	// Engine is what the generator controller behind this relay reports
	// (failover.power.generator_device): its engine state and voltage.
	Engine string `json:"engine,omitempty"`
}

// NUTStatus lists the NUT clients logged in.
type NUTStatus struct {
	Listen  string   `json:"listen,omitempty"`
	Clients []string `json:"clients"`
}

// Event is one server-sent event.
type Event struct {
	Type string // reading, incident, state, relay
	Data any
}

// Backend is what the web server needs from the site.
type Backend interface {
	Status() Status
	Incidents(all bool) []incident.Incident
	Ack(id, by string) error
	SetRelay(id, mode, by string) error
	History(device, metric string, since time.Time) []state.Point
	KPIs() any
	// Subscribe returns a channel of events and a cancel func; a slow reader misses events
	// rather than slowing the site.
	Subscribe() (<-chan Event, func())
	// Healthy is nil while the daemon's loops are alive.
	Healthy() error
}

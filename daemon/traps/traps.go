// Package traps decides what an SNMP trap means for the site: which senders may open
// incidents, how many and how fast, and which incident a trap opens, refreshes or resolves.
//
// A trap is evidence, not an order. UDP senders are easy to spoof, so a trap only ever
// becomes an incident shown to people; nothing here reaches a policy, a relay or a forced
// shutdown. Those follow polls alone.
//
// Meaning:
//
//   - upsTrapOnBattery (repeated each minute by the UPS) opens a critical incident on the
//     sender, resolved when a poll of that device shows it off battery, or after
//     ResolveAfter without a repeat;
//   - upsTrapAlarmEntryAdded opens one incident per well-known alarm (critical for the battery
//     and output alarms, warning for the rest), upsTrapAlarmEntryRemoved resolves it;
//   - upsTrapTestCompleted is logged and shown on the page, not an incident;
//   - any other trap opens a warning incident named after the trap, resolved after
//     ResolveAfter.
//
// Limits: only configured devices' addresses and Config.Sources may open incidents. Each
// sender has a token bucket (Rate, Burst) and at most MaxOpen open trap incidents; a trap
// past either is dropped, counted (Limited), and counted again by the sender's one
// trap-storm incident, which turns critical when a dropped trap would have opened a
// critical incident, so no critical trap is lost without a critical incident saying so.
//
// It knows traps (drivers/snmptrap) and returns actions for the site to carry out; it must
// not import the site's other parts.
package traps

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
)

// Defaults of Config's limits.
const (
	DefaultRate    = 1.0 // traps per second per sender, sustained
	DefaultBurst   = 20  // traps per sender at once
	DefaultMaxOpen = 20  // open trap incidents per sender
	// maxSenders bounds the token buckets kept for traps.sources senders (devices always
	// have theirs, so a flood from a listed prefix cannot starve them): a bucket that has
	// refilled is forgotten, so only senders that are sending right now count.
	maxSenders = 1024
	// maxOpenTotal bounds the open trap incidents of all traps.sources senders together
	// (storms included).
	maxOpenTotal = 4096
)

// Rule names of trap incidents.
const (
	RuleTrap  = "snmp-trap"
	RuleStorm = "trap-storm"
)

// Config is what the tracker needs from the site's config.
type Config struct {
	// Devices maps configured device ids to their SNMP targets ("host:port" or "host").
	Devices map[string]string
	// Sources are senders allowed besides the devices (addresses or CIDR prefixes).
	Sources []netip.Prefix
	// Rate (traps/s) and Burst make each sender's token bucket.
	Rate  float64
	Burst int
	// MaxOpen is how many trap incidents one sender may have open, its storm not counted.
	MaxOpen int
	// ResolveAfter closes an incident whose trap was not repeated.
	ResolveAfter time.Duration
	// Lookup resolves a device's host name (default: the system resolver, 5 s at most per
	// name); it runs once, in New.
	Lookup func(host string) ([]net.IP, error)
}

// Kind of an Action.
type Kind int

const (
	Raise Kind = iota + 1
	Resolve
	Log // nothing to store: the site logs Summary
)

// Action is what the site does for a trap or a tick.
type Action struct {
	Kind                      Kind
	Key, Rule, Device, Metric string
	Severity                  incident.Severity
	Summary                   string
	Value, Threshold          any
}

// Outcome says what became of one trap.
type Outcome string

const (
	Accepted      Outcome = "accepted"       // its meaning was applied
	UnknownSource Outcome = "unknown_source" // not from a device or a listed source: ignored
	RateLimited   Outcome = "rate_limited"   // past the sender's rate or open cap: counted by its storm
)

var criticalAlarms = map[string]bool{"BatteryBad": true, "OnBattery": true, "LowBattery": true, "DepletedBattery": true,
	"OutputOverload": true, "OutputBad": true, "ChargerFailed": true, "UpsOutputOff": true, "UpsSystemOff": true, "ShutdownPending": true, "ShutdownImminent": true}

type open struct {
	sender string // device id or address: whose cap it counts against
	device string // configured device id, "" for a listed source
	last   time.Time
	onBatt bool
}

type bucket struct {
	tokens float64
	at     time.Time
}

type storm struct {
	key       string
	listed    bool // a traps.sources sender, not a device
	dropped   int
	reported  int
	severity  incident.Severity
	last      time.Time
	lastTrap  string
	committed bool
}

// Tracker turns traps into incident actions. It is not safe for concurrent use: the site
// calls it under the lock that orders its incidents.
type Tracker struct {
	cfg     Config
	devices map[netip.Addr]string
	buckets map[string]*bucket
	opened  map[string]open
	perSend map[string]int
	storms  map[string]*storm
	listed  int // open incidents and storms of traps.sources senders

	unknown, limited atomic.Uint64
}

// New makes a tracker; device host names are resolved here, once.
func New(cfg Config) *Tracker {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = DefaultMaxOpen
	}
	if cfg.ResolveAfter <= 0 {
		cfg.ResolveAfter = 15 * time.Minute
	}
	if cfg.Lookup == nil {
		cfg.Lookup = lookupIP
	}
	t := &Tracker{cfg: cfg, devices: map[netip.Addr]string{}, buckets: map[string]*bucket{},
		opened: map[string]open{}, perSend: map[string]int{}, storms: map[string]*storm{}}
	ids := make([]string, 0, len(cfg.Devices))
	for id := range cfg.Devices {
		ids = append(ids, id)
	}
	slices.Sort(ids) // an address shared by two devices goes to the first by name
	for _, id := range ids {
		for _, a := range t.resolve(cfg.Devices[id]) {
			if _, taken := t.devices[a]; !taken {
				t.devices[a] = id
			}
		}
	}
	return t
}

func lookupIP(host string) ([]net.IP, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupIP(ctx, "ip", host)
}

func (t *Tracker) resolve(target string) []netip.Addr {
	if target == "" {
		return nil
	}
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	if strings.HasPrefix(host, "/") {
		return nil // a serial port, not a network device
	}
	ips, err := t.cfg.Lookup(host)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Communities is the v1/v2c community list to accept: the configured one, or only "public"
// when none is configured, with a warning to log.
func Communities(configured []string) (list []string, warning string) {
	if len(configured) > 0 {
		return configured, ""
	}
	return []string{"public"}, `traps.communities is empty: only SNMPv1/v2c traps with the community "public" are accepted; list the communities your devices use`
}

// Unknown counts traps from senders that are no device and no listed source.
func (t *Tracker) Unknown() uint64 { return t.unknown.Load() }

// Limited counts traps dropped by a sender's rate limit or open-incident cap.
func (t *Tracker) Limited() uint64 { return t.limited.Load() }

// Admit reports whether a trap from addr may open incidents at all, and counts it in
// Unknown when not. It reads only what New set, so it is safe for concurrent use: the site
// turns strangers away without taking its lock.
func (t *Tracker) Admit(addr netip.Addr) bool {
	if who, _ := t.sender(addr); who != "" {
		return true
	}
	t.unknown.Add(1)
	return false
}

// sender names a trap's sender: its device id, its address for a listed source, "" when
// it may not open incidents.
func (t *Tracker) sender(a netip.Addr) (who, device string) {
	a = a.Unmap()
	if id, ok := t.devices[a]; ok {
		return id, id
	}
	for _, p := range t.cfg.Sources {
		if p.Contains(a) {
			return a.String(), ""
		}
	}
	return "", ""
}

// take spends one token of who's bucket.
func (t *Tracker) take(who string, listed bool, now time.Time) bool {
	b, ok := t.buckets[who]
	if !ok {
		if bound := maxSenders + len(t.cfg.Devices); listed && len(t.buckets) >= bound {
			t.forgetFull(now)
			if len(t.buckets) >= bound {
				return false
			}
		}
		b = &bucket{tokens: float64(t.cfg.Burst), at: now}
		t.buckets[who] = b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = math.Min(float64(t.cfg.Burst), b.tokens+el*t.cfg.Rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forgetFull drops the buckets that have refilled: a new one would be the same.
func (t *Tracker) forgetFull(now time.Time) {
	for who, b := range t.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*t.cfg.Rate >= float64(t.cfg.Burst) {
			delete(t.buckets, who)
		}
	}
}

// Handle applies one trap and returns what became of it and what the site must do.
func (t *Tracker) Handle(tr snmptrap.Trap, now time.Time) (Outcome, []Action) {
	who, device := t.sender(tr.Source)
	if who == "" {
		t.unknown.Add(1)
		return UnknownSource, nil
	}
	a := t.meaning(tr, who)
	listed := device == ""
	if !t.take(who, listed, now) {
		return RateLimited, t.drop(who, listed, tr, a, now)
	}
	switch a.Kind {
	case Log:
		return Accepted, []Action{a}
	case Resolve:
		if o, ok := t.opened[a.Key]; ok {
			t.forget(a.Key, o)
		}
		return Accepted, []Action{a}
	}
	if o, ok := t.opened[a.Key]; ok {
		o.last = now
		t.opened[a.Key] = o
		return Accepted, []Action{a}
	}
	if t.perSend[who] >= t.cfg.MaxOpen || (listed && t.listed >= maxOpenTotal) {
		return RateLimited, t.drop(who, listed, tr, a, now)
	}
	t.track(a.Key, open{sender: who, device: device, last: now, onBatt: tr.Name == "upsTrapOnBattery"})
	return Accepted, []Action{a}
}

func (t *Tracker) track(key string, o open) {
	t.opened[key] = o
	t.perSend[o.sender]++
	if o.device == "" {
		t.listed++
	}
}

func (t *Tracker) forget(key string, o open) {
	delete(t.opened, key)
	if o.device == "" {
		t.listed--
	}
	if t.perSend[o.sender]--; t.perSend[o.sender] <= 0 {
		delete(t.perSend, o.sender)
	}
}

// meaning is the incident a trap from who stands for.
func (t *Tracker) meaning(tr snmptrap.Trap, who string) Action {
	a := Action{Kind: Raise, Rule: RuleTrap, Device: who, Severity: incident.Warning, Value: tr.Name, Threshold: tr.TrapOID}
	switch tr.Name {
	case "upsTrapOnBattery":
		a.Key, a.Severity, a.Metric = "trap:"+who+":on-battery", incident.Critical, "ups.status"
		a.Summary = fmt.Sprintf("%s sent upsTrapOnBattery: running on battery", who)
	case "upsTrapAlarmEntryAdded", "upsTrapAlarmEntryRemoved":
		alarm := tr.Alarm
		if alarm == "" {
			alarm = "unknown"
		}
		a.Key, a.Metric = "trap:"+who+":alarm:"+alarm, "ups.alarm"
		if tr.Name == "upsTrapAlarmEntryRemoved" {
			a.Kind, a.Value = Resolve, tr.Name
			return a
		}
		if criticalAlarms[alarm] {
			a.Severity = incident.Critical
		}
		a.Summary = fmt.Sprintf("%s raised the UPS alarm %s", who, alarm)
	case "upsTrapTestCompleted":
		a.Kind, a.Summary = Log, "UPS self-test completed"
	default:
		name := tr.Name
		if name == "" {
			name = tr.TrapOID
		}
		a.Key = "trap:" + who + ":" + name
		a.Summary = fmt.Sprintf("%s sent the trap %s", who, name)
	}
	return a
}

// drop counts a trap that was not applied, in the metric and in who's storm incident.
func (t *Tracker) drop(who string, listed bool, tr snmptrap.Trap, a Action, now time.Time) []Action {
	t.limited.Add(1)
	s := t.storms[who]
	if s == nil {
		if listed && t.listed >= maxOpenTotal {
			return nil // the metric still counts it
		}
		s = &storm{key: "trap:" + who + ":storm", severity: incident.Warning, listed: listed}
		t.storms[who] = s
		if listed {
			t.listed++
		}
	}
	s.dropped++
	s.last = now
	name := tr.Name
	if name == "" {
		name = tr.TrapOID
	}
	s.lastTrap = name
	// A dropped repeat of an open critical incident loses nothing; a dropped new one would.
	_, isOpen := t.opened[a.Key]
	escalate := a.Kind == Raise && a.Severity == incident.Critical && !isOpen && s.severity != incident.Critical
	if escalate {
		s.severity = incident.Critical
	}
	if s.committed && !escalate {
		return nil // Tick reports the count
	}
	s.committed = true
	return []Action{t.stormAction(who, s)}
}

func (t *Tracker) stormAction(who string, s *storm) Action {
	s.reported = s.dropped
	return Action{Kind: Raise, Key: s.key, Rule: RuleStorm, Device: who, Severity: s.severity, Value: s.dropped,
		Threshold: fmt.Sprintf("rate %g/s, burst %d, %d open", t.cfg.Rate, t.cfg.Burst, t.cfg.MaxOpen),
		Summary:   fmt.Sprintf("%s sends more traps than allowed: %d dropped (last %s)", who, s.dropped, s.lastTrap)}
}

// Observe resolves on-battery trap incidents of device once a poll shows it off battery.
func (t *Tracker) Observe(device string, rs []sensors.Reading) []Action {
	var out []Action
	for _, r := range rs {
		if r.Metric != "ups.status" || r.Quality != sensors.Good || hasFlag(r.Text, "OB") {
			continue
		}
		for key, o := range t.opened {
			if o.onBatt && o.device == device {
				t.forget(key, o)
				out = append(out, Action{Kind: Resolve, Key: key, Device: device, Value: r.Text})
			}
		}
	}
	return out
}

// Tick resolves trap incidents not repeated for ResolveAfter, storms that have been quiet
// as long, and reports the storms' counts.
func (t *Tracker) Tick(now time.Time) []Action {
	var out []Action
	for key, o := range t.opened {
		if now.Sub(o.last) >= t.cfg.ResolveAfter {
			t.forget(key, o)
			out = append(out, Action{Kind: Resolve, Key: key, Device: o.device})
		}
	}
	for who, s := range t.storms {
		switch {
		case now.Sub(s.last) >= t.cfg.ResolveAfter:
			delete(t.storms, who)
			if s.listed {
				t.listed--
			}
			out = append(out, Action{Kind: Resolve, Key: s.key, Device: who, Value: s.dropped})
		case s.dropped != s.reported:
			out = append(out, t.stormAction(who, s))
		}
	}
	return out
}

// Adopt takes back an open trap incident found at start (the incident store keeps it across
// a restart), so that it resolves as if this process had opened it. sender is the
// incident's device: a device id, or the address of a listed source.
func (t *Tracker) Adopt(key, sender string, last time.Time, onBatt bool) {
	if _, ok := t.opened[key]; ok || !strings.HasPrefix(key, "trap:") {
		return
	}
	device := ""
	if _, ok := t.cfg.Devices[sender]; ok {
		device = sender
	}
	if key == "trap:"+sender+":storm" {
		if _, ok := t.storms[sender]; !ok {
			t.storms[sender] = &storm{key: key, severity: incident.Warning, last: last, committed: true, listed: device == ""}
			if device == "" {
				t.listed++
			}
		}
		return
	}
	t.track(key, open{sender: sender, device: device, last: last, onBatt: onBatt})
}

func hasFlag(status, flag string) bool { return slices.Contains(strings.Fields(status), flag) }

// OpenTrap is an open trap incident as the tracker follows it: whose cap it counts against,
// when the sender last repeated it (its deadline runs from there), and whether a poll off
// battery resolves it.
type OpenTrap struct {
	Sender string    `json:"device"`
	Last   time.Time `json:"last"`
	OnBatt bool      `json:"on_battery,omitempty"`
}

// Open lists the open trap incidents (storms excepted), for the site to save.
func (t *Tracker) Open() map[string]OpenTrap {
	m := make(map[string]OpenTrap, len(t.opened))
	for k, o := range t.opened {
		m[k] = OpenTrap{Sender: o.sender, Last: o.last, OnBatt: o.onBatt}
	}
	return m
}

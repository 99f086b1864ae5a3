package site

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
	snmpdev "github.com/rackwatch/rackwatch/sensors/snmp"
)

// Traps become incidents:
//
//   - upsTrapOnBattery (repeated each minute by the UPS) opens a critical incident on the
//     sending device, resolved when a poll of that device shows it off battery, or after
//     traps.resolve_after without a repeat;
//   - upsTrapAlarmEntryAdded opens one incident per well-known alarm (critical for the battery
//     and output alarms, warning for the rest), upsTrapAlarmEntryRemoved resolves it;
//   - upsTrapTestCompleted is logged and shown on the page, not an incident;
//   - any other trap from a configured device's address opens a warning incident named after
//     the trap, resolved after traps.resolve_after.
//
// Traps from addresses that are no configured device are accepted only when they are RFC 1628
// traps (a UPS not polled, but still worth knowing about).

type trapState struct {
	recv   *snmptrap.Receiver      // nil until launch when it replaces a receiver on the same address
	opened map[string]trapIncident // incident key → last refresh
	listen string
	key    string
	cfg    snmptrap.Config
}

type trapIncident struct {
	device string
	last   time.Time
	onBatt bool
}

var criticalAlarms = map[string]bool{"BatteryBad": true, "OnBattery": true, "LowBattery": true, "DepletedBattery": true,
	"OutputOverload": true, "OutputBad": true, "ChargerFailed": true, "UpsOutputOff": true, "UpsSystemOff": true, "ShutdownPending": true, "ShutdownImminent": true}

// buildTraps binds traps.listen when it is set: the receiver stays the running one when the
// listen address and the accepted communities and users stay (trapKey).
func (s *Site) buildTraps() error {
	c := s.cfg.Traps
	if c.Listen == "" {
		return nil
	}
	tc := snmptrap.Config{Communities: c.Communities, Logger: s.sh.log.With("part", "traps")}
	for _, u := range c.Users {
		u := u
		cc, err := snmpdev.ClientConfig(sensors.Spec{Target: "trap-sender", Version: "3", V3: &u})
		if err != nil {
			return fmt.Errorf("traps: user %s: %w", u.User, err)
		}
		usm := *cc.V3
		usm.EngineID = u.EngineID
		tc.Users = append(tc.Users, usm)
	}
	s.traps = &trapState{opened: map[string]trapIncident{}, listen: c.Listen, key: trapKey(c), cfg: tc}
	r, err := s.sh.trapReceiver(s.traps)
	if err != nil {
		return fmt.Errorf("traps: %w", err)
	}
	s.traps.recv = r
	return nil
}

// TrapAddr is where the trap receiver listens (nil when off).
func (s *Site) TrapAddr() net.Addr {
	if s.traps == nil || s.traps.recv == nil {
		return nil
	}
	return s.traps.recv.Addr()
}

func (s *Site) trapReceiver() *snmptrap.Receiver {
	if s.traps == nil {
		return nil
	}
	return s.traps.recv
}

// deviceAt finds the configured device whose SNMP target is at addr.
func (s *Site) deviceAt(addr netip.Addr) string {
	for _, d := range s.cfg.Devices {
		if d.Target == "" {
			continue
		}
		host := d.Target
		if h, _, err := net.SplitHostPort(d.Target); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err == nil && a.Unmap() == addr.Unmap() {
			return d.ID
		}
		if ips, err := net.LookupIP(host); err == nil {
			for _, ip := range ips {
				if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == addr.Unmap() {
					return d.ID
				}
			}
		}
	}
	return ""
}

func (s *Site) trap(t snmptrap.Trap) {
	if s.traps == nil {
		return
	}
	dev := s.deviceAt(t.Source)
	ups := strings.HasPrefix(t.Name, "upsTrap")
	if dev == "" && !ups {
		s.log.Debug("trap from an unknown sender dropped", "from", t.Source, "trap", t.TrapOID)
		return
	}
	who := dev
	if who == "" {
		who = t.Source.String()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return
	}
	s.hub.publishTrap(t, who)
	now := s.now()
	raise := func(key, sev, metric, summary string, onBatt bool) {
		s.traps.opened[key] = trapIncident{device: dev, last: now, onBatt: onBatt}
		s.raise(incident.Raise{Key: key, Rule: "snmp-trap", Device: who, Metric: metric, Severity: sev, Source: "trap",
			Summary: summary, Value: t.Name, Threshold: t.TrapOID}, now)
	}
	switch t.Name {
	case "upsTrapOnBattery":
		raise("trap:"+who+":on-battery", "critical", "ups.status", fmt.Sprintf("%s sent upsTrapOnBattery: running on battery", who), true)
	case "upsTrapAlarmEntryAdded", "upsTrapAlarmEntryRemoved":
		alarm := t.Alarm
		if alarm == "" {
			alarm = "unknown"
		}
		key := "trap:" + who + ":alarm:" + alarm
		if t.Name == "upsTrapAlarmEntryRemoved" {
			delete(s.traps.opened, key)
			s.resolve(key, t.Name, now)
			return
		}
		sev := "warning"
		if criticalAlarms[alarm] {
			sev = "critical"
		}
		raise(key, sev, "ups.alarm", fmt.Sprintf("%s raised the UPS alarm %s", who, alarm), false)
	case "upsTrapTestCompleted":
		s.log.Info("UPS self-test completed", "device", who)
	default:
		name := t.Name
		if name == "" {
			name = t.TrapOID
		}
		raise("trap:"+who+":"+name, "warning", "", fmt.Sprintf("%s sent the trap %s", who, name), false)
	}
}

// trapsObserve resolves a trap's on-battery incident once a poll shows the UPS off battery.
// Called with s.mu held.
func (s *Site) trapsObserve(id string, rs []sensors.Reading, at time.Time) {
	if s.traps == nil {
		return
	}
	for key, ti := range s.traps.opened {
		if !ti.onBatt || ti.device != id {
			continue
		}
		for _, r := range rs {
			if r.Metric == "ups.status" && r.Quality == sensors.Good && !hasFlag(r.Text, "OB") {
				delete(s.traps.opened, key)
				s.resolve(key, r.Text, at)
			}
		}
	}
}

// trapsTick resolves trap incidents that were not repeated for traps.resolve_after.
func (s *Site) trapsTick(now time.Time) {
	if s.traps == nil {
		return
	}
	for key, ti := range s.traps.opened {
		if now.Sub(ti.last) >= s.cfg.Traps.ResolveAfter {
			delete(s.traps.opened, key)
			s.resolve(key, nil, now)
		}
	}
}

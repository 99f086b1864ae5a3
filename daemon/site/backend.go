package site

import (
	"fmt"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/sensors"
)

// backend is the site as the web server sees it.
type backend struct{ s *Site }

func (b backend) Status() web.Status { return b.s.Status() }

// Status is the /api/v1/status document.
func (s *Site) Status() web.Status {
	st := web.Status{Site: s.cfg.Site, Node: s.cfg.Node, Version: s.opt.Version, UptimeS: int64(s.now().Sub(s.started).Seconds())}
	for _, d := range s.store.Devices() {
		ds := web.DeviceStatus{ID: d.ID, Driver: d.Driver, State: d.State, LastSeen: sensors.FormatTime(d.LastSeen), Error: d.LastErr,
			Description: s.specs[d.ID].Description,
			Class:       string(sensors.SpecClass(s.specs[d.ID])),
			Readings:    make(map[string]web.ReadingStatus, len(d.Readings))}
		for m, r := range d.Readings {
			ds.Readings[m] = web.ReadingStatus{Value: r.JSONValue(), Unit: r.Unit, Quality: string(r.Quality), TS: sensors.FormatTime(r.TS)}
		}
		st.Devices = append(st.Devices, ds)
	}
	for _, r := range s.cfg.Rules {
		rv := web.RuleView{Name: r.Name, Device: r.Device, Metric: r.Metric, WarnAbove: r.WarnAbove, CritAbove: r.CritAbove,
			WarnBelow: r.WarnBelow, CritBelow: r.CritBelow, StatusHas: r.StatusHas, Severity: r.Severity, Hysteresis: r.Hysteresis}
		if r.Equals != nil {
			rv.Equals = r.Equals.JSON()
		}
		st.Rules = append(st.Rules, rv)
	}
	if s.sh.upd != nil {
		st.Firmware = s.sh.upd.Status()
	}
	st.Incidents = s.withSent(s.inc.OpenIncidents())
	if st.Incidents == nil {
		st.Incidents = []incident.Incident{}
	}
	if up := s.sh.uplink(); up != nil {
		u := up.Status()
		st.Uplink = web.Uplink{Connected: u.Connected, Broker: u.Broker, Queued: u.Queued, Dropped: u.Dropped, LastError: u.LastError}
	}
	s.mu.Lock()
	if s.policies != nil {
		st.Failover = s.policies.status()
	}
	if s.relays != nil {
		st.Relays = s.relays.list()
	}
	s.mu.Unlock()
	st.NUT.Listen = s.cfg.NUT.Listen
	st.NUT.Clients = []string{}
	if s.nut != nil {
		st.NUT.Clients = append(st.NUT.Clients, s.nut.Clients()...)
	}
	return st
}

func (b backend) Incidents(all bool) []incident.Incident {
	if all {
		return b.s.withSent(b.s.inc.All(1000))
	}
	return b.s.withSent(b.s.inc.OpenIncidents())
}

func (b backend) Ack(id, by string) error { return b.s.Ack(id, by) }

func (b backend) SetRelay(id, mode, by string) error { return b.s.SetRelay(id, mode, by) }

func (b backend) History(device, metric string, since time.Time) []state.Point {
	return b.s.store.History(device, metric, since)
}

func (b backend) KPIs() any { return b.s.KPIs() }

func (b backend) Subscribe() (<-chan web.Event, func()) { return b.s.hub.subscribe() }

// Healthy is nil while every poller has reported recently.
func (b backend) Healthy() error {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, spec := range s.specs {
		if s.devs[id] == nil {
			continue
		}
		last, ok := s.lastRes[id]
		if !ok {
			last = s.started
		}
		limit := max(10*spec.Poll, 2*time.Minute)
		if now.Sub(last) > limit {
			return fmt.Errorf("the poller of %s has not reported for %v", id, now.Sub(last).Round(time.Second))
		}
	}
	return nil
}

// KPIs is the /api/v1/kpis document (and R/kpis).
func (s *Site) KPIs() any {
	return kpi.Compute(s.inc.All(0), s.kpis, s.now(), s.cfg.Failover.Power != nil, s.cfg.Failover.Cooling != nil)
}

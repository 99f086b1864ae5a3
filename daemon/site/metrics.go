package site

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/sensors"
)

// upsFlags are the ups.status flags exported as rackwatch_ups_status{flag} (RFC 9271 and
// NUT's docs), so a flag that is absent reads 0 rather than vanishing.
var upsFlags = strings.Fields("OL OB LB HB RB CHRG DISCHRG BYPASS CAL OFF OVER TRIM BOOST FSD ALARM")

type metrics struct {
	s        *Site
	reg      *prometheus.Registry
	pollDur  *prometheus.HistogramVec
	pollErrs *prometheus.CounterVec
	reading  *prometheus.Desc
	upsFlag  *prometheus.Desc
	devUp    *prometheus.Desc
	open     *prometheus.Desc
	queued   *prometheus.Desc
	dropped  *prometheus.Desc
	upConn   *prometheus.Desc
	upCmds   *prometheus.Desc
	upCmdRep *prometheus.Desc
	traps    *prometheus.Desc
	evDrop   *prometheus.Desc
	spb      [3]*prometheus.Desc // births, rebirths, unreadable
	notify   [5]*prometheus.Desc // sent, failed, dropped, queued, audit records
}

func newMetrics(s *Site) *metrics {
	m := &metrics{s: s, reg: prometheus.NewRegistry()}
	m.pollDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rackwatch_poll_duration_seconds", Help: "Time one poll of a device took.",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"device"})
	m.pollErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rackwatch_poll_errors_total", Help: "Failed polls per device."}, []string{"device"})
	m.reading = prometheus.NewDesc("rackwatch_reading", "Latest good value of each numeric reading.", []string{"device", "metric", "unit"}, nil)
	m.upsFlag = prometheus.NewDesc("rackwatch_ups_status", "1 when the UPS's ups.status has the flag.", []string{"device", "flag"}, nil)
	m.devUp = prometheus.NewDesc("rackwatch_device_up", "1 when the device's last poll succeeded.", []string{"device", "driver", "state"}, nil)
	m.open = prometheus.NewDesc("rackwatch_incidents_open", "Open incidents by severity.", []string{"severity"}, nil)
	m.queued = prometheus.NewDesc("rackwatch_uplink_queued_messages", "Messages on disk waiting for the broker's acknowledgement.", nil, nil)
	m.dropped = prometheus.NewDesc("rackwatch_uplink_dropped_total", "Telemetry messages dropped because the queue was full.", nil, nil)
	m.upConn = prometheus.NewDesc("rackwatch_uplink_connected", "1 while connected to a broker.", nil, nil)
	m.upCmds = prometheus.NewDesc("rackwatch_uplink_commands_total", "Messages on R/cmd by outcome: ok, failed (handler error), refused (invalid), repeated (id already answered), busy (queue full, dropped), abandoned (queued at stop, not run).", []string{"outcome"}, nil)
	m.upCmdRep = prometheus.NewDesc("rackwatch_uplink_command_replies_dropped_total", "Replies to refused or busy commands not sent: too many at once.", nil, nil)
	m.traps = prometheus.NewDesc("rackwatch_traps_total", "SNMP trap packets by outcome: accepted, malformed (dropped), rejected (unknown community or user), unknown_source (no device, not in traps.sources), rate_limited (past the sender's rate or open cap), queue_full (the handler fell behind).", []string{"outcome"}, nil)
	m.evDrop = prometheus.NewDesc("rackwatch_events_dropped_total", "Server-sent events (/events) dropped because a slow client's queue was full.", nil, nil)
	m.spb = [3]*prometheus.Desc{
		prometheus.NewDesc("rackwatch_sparkplug_births_total", "NBIRTHs the Sparkplug B edge node published, rebirths included.", nil, nil),
		prometheus.NewDesc("rackwatch_sparkplug_rebirths_total", "Rebirth requests (NCMD Node Control/Rebirth) the edge node honoured.", nil, nil),
		prometheus.NewDesc("rackwatch_sparkplug_unreadable_total", "Messages to the edge node that could not be read and were dropped: NCMD commands, or the primary host's STATE.", []string{"topic"}, nil),
	}
	m.notify = [5]*prometheus.Desc{
		prometheus.NewDesc("rackwatch_notify_sent_total", "Incident events delivered, per notify target.", []string{"target"}, nil),
		prometheus.NewDesc("rackwatch_notify_failed_total", "Delivery attempts that failed (retried later), per notify target.", []string{"target"}, nil),
		prometheus.NewDesc("rackwatch_notify_dropped_total", "Warning events dropped because the target's queue was full.", []string{"target"}, nil),
		prometheus.NewDesc("rackwatch_notify_queued", "Events on disk waiting for delivery, per notify target.", []string{"target"}, nil),
		prometheus.NewDesc("rackwatch_notify_audit_records_total", "Audit records sent to a notify target with audit: true, by outcome (failed ones are retried).", []string{"target", "outcome"}, nil),
	}
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rackwatch_build_info", Help: "Build information."}, []string{"version", "site", "node"})
	bi.WithLabelValues(s.opt.Version, s.cfg.Site, s.cfg.Node).Set(1)
	m.reg.MustRegister(m.pollDur, m.pollErrs, bi, m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(res poll.Result) {
	if res.Pushed {
		return
	}
	if res.Took > 0 {
		m.pollDur.WithLabelValues(res.Device).Observe(res.Took.Seconds())
	}
	if res.Err != nil {
		m.pollErrs.WithLabelValues(res.Device).Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(append([]*prometheus.Desc{m.reading, m.upsFlag, m.devUp, m.open, m.queued, m.dropped, m.upConn, m.upCmds, m.upCmdRep, m.traps, m.evDrop}, m.notify[:]...), m.spb[:]...) {
		ch <- d
	}
}

// Collect implements prometheus.Collector: values are read from the store at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	for _, d := range s.store.Devices() {
		up := 0.0
		if d.State == sensors.DeviceOK {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(m.devUp, prometheus.GaugeValue, up, d.ID, d.Driver, string(d.State))
		for _, name := range d.Metrics() {
			r := d.Readings[name]
			if r.Quality != sensors.Good {
				continue
			}
			if r.IsText {
				if name == "ups.status" {
					flags := " " + r.Text + " "
					for _, f := range upsFlags {
						v := 0.0
						if strings.Contains(flags, " "+f+" ") {
							v = 1
						}
						ch <- prometheus.MustNewConstMetric(m.upsFlag, prometheus.GaugeValue, v, d.ID, f)
					}
				}
				continue
			}
			ch <- prometheus.MustNewConstMetric(m.reading, prometheus.GaugeValue, r.Value, d.ID, name, r.Unit)
		}
	}
	counts := map[incident.Severity]float64{incident.Warning: 0, incident.Critical: 0}
	for _, in := range s.inc.OpenIncidents() {
		counts[in.Severity]++
	}
	for sev, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, n, string(sev))
	}
	ch <- prometheus.MustNewConstMetric(m.evDrop, prometheus.CounterValue, float64(s.hub.dropped.Load()))
	if r := s.trapReceiver(); r != nil {
		// Read the later stages first: every trap they count was received before.
		unknown, limited := s.trapCounts()
		dropped := r.Dropped()
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(r.Received()-unknown-limited), "accepted")
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(unknown), "unknown_source")
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(limited), "rate_limited")
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(dropped), "queue_full")
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(r.Malformed()), "malformed")
		ch <- prometheus.MustNewConstMetric(m.traps, prometheus.CounterValue, float64(r.Rejected()), "rejected")
	}
	if s.notify != nil {
		for _, st := range s.notify.Stats() {
			ch <- prometheus.MustNewConstMetric(m.notify[0], prometheus.CounterValue, float64(st.Sent), st.Target)
			ch <- prometheus.MustNewConstMetric(m.notify[1], prometheus.CounterValue, float64(st.Failed), st.Target)
			ch <- prometheus.MustNewConstMetric(m.notify[2], prometheus.CounterValue, float64(st.Dropped), st.Target)
			ch <- prometheus.MustNewConstMetric(m.notify[3], prometheus.GaugeValue, float64(st.Queued), st.Target)
			ch <- prometheus.MustNewConstMetric(m.notify[4], prometheus.CounterValue, float64(st.AuditSent), st.Target, "sent")
			ch <- prometheus.MustNewConstMetric(m.notify[4], prometheus.CounterValue, float64(st.AuditFailed), st.Target, "failed")
		}
	}
	if up := s.sh.uplink(); up != nil {
		u := up.Status()
		ch <- prometheus.MustNewConstMetric(m.queued, prometheus.GaugeValue, float64(u.Queued))
		ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(u.Dropped))
		c := 0.0
		if u.Connected {
			c = 1
		}
		ch <- prometheus.MustNewConstMetric(m.upConn, prometheus.GaugeValue, c)
		for outcome, n := range map[string]uint64{"ok": u.Commands.OK, "failed": u.Commands.Failed, "refused": u.Commands.Refused,
			"repeated": u.Commands.Repeated, "busy": u.Commands.Busy, "abandoned": u.Commands.Abandoned} {
			ch <- prometheus.MustNewConstMetric(m.upCmds, prometheus.CounterValue, float64(n), outcome)
		}
		ch <- prometheus.MustNewConstMetric(m.upCmdRep, prometheus.CounterValue, float64(u.Commands.RepliesDropped))
		if c := u.Sparkplug; c != nil {
			ch <- prometheus.MustNewConstMetric(m.spb[0], prometheus.CounterValue, float64(c.Births))
			ch <- prometheus.MustNewConstMetric(m.spb[1], prometheus.CounterValue, float64(c.Rebirths))
			ch <- prometheus.MustNewConstMetric(m.spb[2], prometheus.CounterValue, float64(c.BadCommands), "NCMD")
			ch <- prometheus.MustNewConstMetric(m.spb[2], prometheus.CounterValue, float64(c.BadStates), "STATE")
		}
	}
}

package site

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/uplink"
)

// sourceOf says where an actor's request came from: "mqtt:<id>" over MQTT, "nut:<user>" over
// NUT, "signal:…" and the daemon itself from the system, anyone else is a web user.
func sourceOf(by string) string {
	switch {
	case strings.HasPrefix(by, "mqtt:"):
		return audit.MQTT
	case strings.HasPrefix(by, "nut:"):
		return audit.NUT
	case by == "" || strings.HasPrefix(by, "signal:") || by == "system":
		return audit.System
	}
	return audit.Web
}

// record writes rec in a transaction of its own (nothing when the site has no trail: the
// replay).
func (sh *shared) record(rec audit.Record) {
	if sh.audit != nil {
		sh.audit.Append(rec)
	}
}

// refused records a failure outsiders can repeat, rate-limited per address.
func (sh *shared) refused(addr string, rec audit.Record) {
	if sh.audit != nil {
		sh.audit.Refused(addr, rec)
	}
}

// recordTx writes rec inside tx, the transaction of the action it records.
func (s *Site) recordTx(tx *bolt.Tx, rec audit.Record) error {
	if s.sh.audit == nil {
		return nil
	}
	_, err := s.sh.audit.AppendTx(tx, rec)
	return err
}

// auditIncident records an acknowledgement in the incident's own transaction.
func (s *Site) auditIncident(tx *bolt.Tx, e incident.Event) error {
	if e.Event != incident.AckedEvent {
		return nil
	}
	return s.recordTx(tx, audit.Record{Actor: e.By, Source: sourceOf(e.By), Action: audit.ActionAck, Target: e.Incident.ID,
		Detail: fmt.Sprintf("%s %s incident (rule %s)", e.Incident.Severity, e.Incident.Rule, e.Incident.Key)})
}

// auditCommand records an MQTT command that was not applied. The applied ones are recorded
// by what they did (acknowledgement, relay override, reload), in its transaction.
func (s *Site) auditCommand(c uplink.Command, err error) {
	if err == nil {
		return
	}
	target := c.Incident
	if c.Device != "" {
		target = c.Device
	}
	s.sh.refused("mqtt", audit.Record{Actor: "mqtt:" + c.ID, Source: audit.MQTT, Action: audit.ActionCommandRefused,
		Target: target, Detail: cut(c.Action+": "+err.Error(), 300)})
}

// auditRefusedCommand records a command the uplink refused before it ran. MQTT does not say
// who sent it: the trail counts them under the address "mqtt".
func (sh *shared) auditRefusedCommand(id, why string) {
	sh.refused("mqtt", audit.Record{Actor: "mqtt:" + cut(id, 64), Source: audit.MQTT, Action: audit.ActionCommandRefused, Detail: cut(why, 300)})
}

// auditReload records a reload, applied or refused, with the SHA-256 of the file read.
func (sh *shared) auditReload(path, by string, err error) {
	src := audit.Config
	if strings.HasPrefix(by, "mqtt:") {
		src = audit.MQTT
	}
	detail := "file " + path
	if b, rerr := os.ReadFile(path); rerr == nil {
		sum := sha256.Sum256(b)
		detail += " sha256 " + hex.EncodeToString(sum[:])
	}
	rec := audit.Record{Actor: by, Source: src, Action: audit.ActionReload, Target: path, Detail: detail}
	if err != nil {
		rec.Action, rec.Detail = audit.ActionReloadRefused, cut(detail+": "+err.Error(), 500)
	}
	sh.record(rec)
}

// auditLogin records a web login; failed ones are rate-limited per client address.
func (sh *shared) auditLogin(user, client string, ok bool) {
	rec := audit.Record{Actor: cut(user, 64), Source: audit.Web, Action: audit.ActionLogin, Target: client, Detail: "from " + client}
	if ok {
		sh.record(rec)
		return
	}
	rec.Action = audit.ActionLoginFailed
	sh.refused(client, rec)
}

// auditNUT records a NUT client's PRIMARY, FSD or INSTCMD; refused ones are rate-limited per
// client address.
func (sh *shared) auditNUT(user, addr, action, ups, detail string, ok bool) {
	rec := audit.Record{Actor: "nut:" + cut(user, 64), Source: audit.NUT, Action: "nut." + action, Target: ups, Detail: cut(detail, 300) + " from " + addr}
	if ok {
		sh.record(rec)
		return
	}
	rec.Action = audit.ActionCommandRefused
	rec.Detail = "nut." + action + " " + rec.Detail
	sh.refused(addr, rec)
}

// auditRecords serves GET /api/v1/audit.
func (sh *shared) auditRecords(limit int) (any, error) {
	if sh.audit == nil {
		return []audit.Record{}, nil
	}
	return sh.audit.Records(limit)
}

// backup writes a consistent copy of the database (one read transaction), and records who
// took it.
func (sh *shared) backup(w io.Writer, user, client string) error {
	sh.record(audit.Record{Actor: user, Source: audit.Web, Action: audit.ActionBackup, Target: "database", Detail: "from " + client})
	return sh.db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(w)
		return err
	})
}

// auditMetrics are the trail's counters on /metrics.
func (sh *shared) auditMetrics() []prometheus.Collector {
	if sh.audit == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackwatch_audit_suppressed_total",
			Help: "Failed logins and refused commands counted in a suppressed audit record rather than recorded one by one."},
			func() float64 { return float64(sh.audit.Suppressed()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackwatch_audit_write_errors_total",
			Help: "Audit records that could not be written (logged)."},
			func() float64 { return float64(sh.audit.Dropped()) }),
	}
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// publishAudit sends the trail on R/audit through whichever uplink runs, until ctx ends.
func (sh *shared) publishAudit(ctx context.Context) {
	sh.audit.Publish(ctx, func(ctx context.Context, r audit.Record) error {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if !sh.hasUplink() {
			return audit.ErrWait
		}
		return sh.withUplink(func(up *uplink.Uplink) error { return up.Publish(ctx, "audit", b) })
	})
}

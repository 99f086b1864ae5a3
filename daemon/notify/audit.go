package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/rackwatch/rackwatch/daemon/audit"
)

// auditSender is a sender that also carries audit records (a target with audit: true). Every
// type does, but webhooks only in the generic format: Alertmanager and PagerDuty take alerts,
// and an audit record is not one.
type auditSender interface {
	SendAudit(ctx context.Context, r audit.Record, m Message) error
}

// AuditTargets are the names of the targets that take the audit trail, in config order.
func (n *Notifier) AuditTargets() []string {
	var out []string
	for _, name := range n.order {
		if n.targets[name].cfg.Audit {
			out = append(out, name)
		}
	}
	return out
}

// SendAudit sends one audit record to the target name, once; the caller (the trail's
// publisher) keeps what was sent and retries.
func (n *Notifier) SendAudit(ctx context.Context, name string, r audit.Record) error {
	t := n.targets[name]
	if t == nil {
		return fmt.Errorf("notify target %s: not configured", name)
	}
	as, ok := t.send.(auditSender)
	if !ok {
		return fmt.Errorf("notify target %s: type %s does not carry audit records", name, t.cfg.Type)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	err := as.SendAudit(ctx, r, Message{Site: n.opt.Site, Node: n.opt.Node, Enterprise: n.cfg.Enterprise})
	t.mu.Lock()
	if err != nil {
		t.auditFailed++
		t.lastErr = err.Error()
	} else {
		t.auditSent++
	}
	t.mu.Unlock()
	return err
}

// FormatAuditSyslog is the RFC 5424 message of an audit record, without transport framing:
// severity notice, MSGID "audit", the record's fields (hash included, so the SIEM can check
// the chain) as [audit@<enterprise> ...], and the detail as the free text.
func FormatAuditSyslog(r audit.Record, m Message, facility int, host string, now time.Time, synced bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s rackwatch %d audit ", facility*8+5, now.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), host, os.Getpid())
	isSynced := "0"
	if synced {
		isSynced = "1"
	}
	fmt.Fprintf(&b, `[timeQuality tzKnown="1" isSynced="%s"]`, isSynced)
	fmt.Fprintf(&b, "[audit@%d", m.Enterprise)
	for _, p := range [][2]string{{"seq", fmt.Sprint(r.Seq)}, {"ts", r.TS}, {"actor", r.Actor}, {"source", r.Source},
		{"action", r.Action}, {"target", r.Target}, {"site", m.Site}, {"node", m.Node}, {"hash", r.Hash}} {
		if p[1] == "" {
			continue
		}
		fmt.Fprintf(&b, ` %s="%s"`, p[0], sdEscape(cutText(p[1], 255)))
	}
	b.WriteString("] ")
	b.WriteString(r.Action)
	if r.Target != "" {
		b.WriteString(" " + r.Target)
	}
	b.WriteString(" by " + r.Actor)
	if r.Detail != "" {
		b.WriteString(": " + r.Detail)
	}
	return b.String()
}

func (s *syslogSender) SendAudit(ctx context.Context, r audit.Record, m Message) error {
	return s.write(ctx, FormatAuditSyslog(r, m, s.facility, s.host, time.Now(), clockSynced()))
}

// AuditWebhook is the body a generic webhook gets for an audit record: the record as
// /api/v1/audit serves it, with "type":"audit" to tell it from an incident event.
type AuditWebhook struct {
	Type string `json:"type"`
	Site string `json:"site"`
	Node string `json:"node"`
	audit.Record
}

func (w *webhook) SendAudit(ctx context.Context, r audit.Record, m Message) error {
	if len(r.Detail) > MaxRequest/2 {
		r.Detail = cutText(r.Detail, MaxRequest/2)
	}
	body, err := json.Marshal(AuditWebhook{Type: "audit", Site: m.Site, Node: m.Node, Record: r})
	if err != nil {
		return err
	}
	return w.post(ctx, body)
}

// AuditVarbinds are the rwAuditRecord notification's OID and varbinds (RACKWATCH-MIB).
func AuditVarbinds(r audit.Record, m Message) (trapOID string, vbs []gosnmp.SnmpPDU) {
	base := fmt.Sprintf(".1.3.6.1.4.1.%d", m.Enterprise)
	str := func(i int, v string) gosnmp.SnmpPDU {
		return gosnmp.SnmpPDU{Name: fmt.Sprintf("%s.3.%d.0", base, i), Type: gosnmp.OctetString, Value: []byte(text(v))}
	}
	vbs = []gosnmp.SnmpPDU{
		{Name: base + ".3.1.0", Type: gosnmp.Gauge32, Value: uint(r.Seq & 0xffffffff)},
		str(2, r.TS), str(3, r.Actor), str(4, r.Source), str(5, r.Action), str(6, r.Target), str(7, r.Detail),
		str(8, r.Hash), str(9, m.Site), str(10, m.Node),
	}
	return base + ".0.5", vbs
}

func (s *snmpSender) SendAudit(ctx context.Context, r audit.Record, m Message) error {
	oid, vbs := AuditVarbinds(r, m)
	return s.trap(ctx, oid, vbs)
}

// AuditEmailSubject and AuditEmailBody are the e-mail of an audit record.
func AuditEmailSubject(r audit.Record, m Message) string {
	s := fmt.Sprintf("[rackwatch %s/%s] audit: %s", m.Site, m.Node, r.Action)
	if r.Target != "" {
		s += " " + r.Target
	}
	return s + " by " + r.Actor
}

func AuditEmailBody(r audit.Record, m Message) string {
	var b strings.Builder
	for _, f := range [][2]string{{"Seq", fmt.Sprint(r.Seq)}, {"At", r.TS}, {"Actor", r.Actor}, {"Source", r.Source},
		{"Action", r.Action}, {"Target", r.Target}, {"Detail", r.Detail}, {"Site", m.Site}, {"Node", m.Node}, {"Hash", r.Hash}} {
		if f[1] != "" {
			fmt.Fprintf(&b, "%-8s %s\n", f[0]+":", f[1])
		}
	}
	return b.String()
}

func (e *emailSender) SendAudit(ctx context.Context, r audit.Record, m Message) error {
	// A resent record keeps its Message-ID: the trail's seq and hash name it.
	id := fmt.Sprintf("audit.%s.%d.%.16s@%s.rackwatch", m.Site, r.Seq, r.Hash, m.Node)
	return e.send(ctx, AuditEmailSubject(r, m), id, AuditEmailBody(r, m))
}

package notify

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gosnmp/gosnmp"

	snmpdrv "github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/sensors"
	snmpdev "github.com/rackwatch/rackwatch/sensors/snmp"
)

// The RACKWATCH-MIB (contrib/mibs/RACKWATCH-MIB.txt), under 1.3.6.1.4.1.<enterprise>:
// notifications at .0.<n>, the incident's fields at .1.<n>.0.
var snmpNotification = map[string]int{Opened: 1, Escalated: 2, Acknowledged: 3, Resolved: 4}

const (
	rwID = iota + 1
	rwEvent
	rwSeverity
	rwRule
	rwDevice
	rwMetric
	rwValue
	rwThreshold
	rwSite
	rwNode
	rwOpenedAt
	rwTime
	rwBy
	rwSummary
	rwRepeat
)

// maxSNMPText bounds a text varbind to the MIB's SIZE.
const maxSNMPText = 255

type snmpSender struct {
	cfg     Target
	started time.Time
	g       *gosnmp.GoSNMP
	mu      sync.Mutex
}

func newSNMP(t Target) (*snmpSender, error) {
	host, port, err := net.SplitHostPort(t.Target)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("target port %q", port)
	}
	g := &gosnmp.GoSNMP{Target: host, Port: uint16(p), Transport: "udp", Community: t.Community, Version: gosnmp.Version2c,
		Timeout: t.Timeout / 3, Retries: 2, MaxOids: gosnmp.MaxOids}
	if t.Version == "3" {
		cc, err := snmpdev.ClientConfig(snmpdev.Agent{Target: t.Target, Version: "3", V3: t.V3})
		if err != nil {
			return nil, err
		}
		params, flags, err := cc.V3.Params()
		if err != nil {
			return nil, err
		}
		g.Version, g.SecurityModel, g.MsgFlags, g.SecurityParameters = gosnmp.Version3, gosnmp.UserSecurityModel, flags, params
	}
	return &snmpSender{cfg: t, started: time.Now(), g: g}, nil
}

// checkSNMPUser checks a v3 sender's USM settings without reading its password files.
func checkSNMPUser(u *sensors.SNMPv3) error {
	usm := snmpdrv.USM{User: u.User, AuthProtocol: u.AuthProtocol, AuthPass: u.AuthPass, PrivProtocol: u.PrivProtocol, PrivPass: u.PrivPass}
	if u.AuthPassFile != "" {
		usm.AuthPass = "(file)"
	}
	if u.PrivPassFile != "" {
		usm.PrivPass = "(file)"
	}
	_, _, err := usm.Params()
	return err
}

func text(s string) string { return cutText(s, maxSNMPText) }

// Varbinds are the notification's OID and varbinds of m (after sysUpTime.0 and
// snmpTrapOID.0).
func Varbinds(m Message) (trapOID string, vbs []gosnmp.SnmpPDU) {
	base := fmt.Sprintf(".1.3.6.1.4.1.%d", m.Enterprise)
	n := snmpNotification[m.Event.Event]
	if n == 0 {
		n = 1
	}
	str := func(i int, v string) gosnmp.SnmpPDU {
		return gosnmp.SnmpPDU{Name: fmt.Sprintf("%s.1.%d.0", base, i), Type: gosnmp.OctetString, Value: []byte(text(v))}
	}
	integer := func(i, v int) gosnmp.SnmpPDU {
		return gosnmp.SnmpPDU{Name: fmt.Sprintf("%s.1.%d.0", base, i), Type: gosnmp.Integer, Value: v}
	}
	sev := 1
	if m.critical() {
		sev = 2
	}
	vbs = []gosnmp.SnmpPDU{
		str(rwID, m.ID), integer(rwEvent, n), integer(rwSeverity, sev), str(rwRule, m.Rule), str(rwDevice, m.Device),
		str(rwMetric, m.Metric), str(rwValue, sdValue(m.Value)), str(rwThreshold, sdValue(m.Threshold)), str(rwSite, m.Site),
		str(rwNode, m.Node), str(rwOpenedAt, m.OpenedAt), str(rwTime, m.TS), str(rwBy, m.By), str(rwSummary, summary(m)),
		{Name: fmt.Sprintf("%s.1.%d.0", base, rwRepeat), Type: gosnmp.Gauge32, Value: uint(m.Repeat)},
	}
	return fmt.Sprintf("%s.0.%d", base, n), vbs
}

func (s *snmpSender) Send(ctx context.Context, m Message) error {
	oid, vbs := Varbinds(m)
	return s.trap(ctx, oid, vbs)
}

// trap sends one notification (an inform with version 3).
func (s *snmpSender) trap(ctx context.Context, trapOID string, vbs []gosnmp.SnmpPDU) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	up := uint32(time.Since(s.started) / (10 * time.Millisecond))
	pdus := append([]gosnmp.SnmpPDU{
		{Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: up},
		{Name: ".1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: trapOID},
	}, vbs...)
	s.g.Context = ctx
	if s.g.Conn == nil {
		if err := s.g.Connect(); err != nil {
			return fmt.Errorf("snmp %s: %w", s.cfg.Target, err)
		}
	}
	// A v3 sender sends informs, which the receiver answers; gosnmp retries them within the
	// timeout, the queue after it.
	_, err := s.g.SendTrap(gosnmp.SnmpTrap{Variables: pdus, IsInform: s.cfg.Version == "3"})
	if err != nil {
		s.g.Conn.Close()
		s.g.Conn = nil
		return fmt.Errorf("snmp %s: %w", s.cfg.Target, err)
	}
	return nil
}

func (s *snmpSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.g.Conn != nil {
		s.g.Conn.Close()
		s.g.Conn = nil
	}
	return nil
}

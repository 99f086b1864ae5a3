// Package snmptrap receives SNMP traps (v1, v2c and v3 USM with several users) on a UDP
// socket and hands each one, decoded, to a callback. SNMPv1 traps are converted to the
// SNMPv2 form of RFC 3584 §3.1, so that a UPS sending upsTrapOnBattery as v1 and one sending
// it as v2c look the same; the RFC 1628 UPS-MIB traps and well-known alarms are named.
//
// Anything that is not a trap we accept is counted and dropped: malformed packets (Malformed)
// and traps with an unknown community or user or a bad signature (Rejected). A packet never
// stops the receiver. Accepted traps wait in a bounded queue for the handler, so a slow
// handler never stalls the socket; what does not fit is counted (Dropped), not kept.
//
// It knows PDUs, not incidents or devices: it must not import sensors/, daemon/ or uplink/.
package snmptrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/rackwatch/rackwatch/drivers/snmp"
)

// Well-known OIDs of traps (RFC 3416, RFC 3584).
const (
	oidSysUpTime = "1.3.6.1.2.1.1.3.0"
	oidTrapOID   = "1.3.6.1.6.3.1.1.4.1.0"
	// snmpTraps: generic trap N (v1 generic-trap N-1) is snmpTraps.N.
	oidSnmpTraps = "1.3.6.1.6.3.1.1.5."
	// upsTraps of RFC 1628; vendors send trap N as upsTraps.N or upsTraps.0.N (the second is
	// also what an SNMPv1 trap with enterprise upsTraps becomes under RFC 3584).
	oidUPSTraps = "1.3.6.1.2.1.33.2."
)

// UPSTraps names the RFC 1628 traps by N.
var UPSTraps = map[int]string{
	1: "upsTrapOnBattery", 2: "upsTrapTestCompleted", 3: "upsTrapAlarmEntryAdded", 4: "upsTrapAlarmEntryRemoved",
}

var genericTraps = map[int]string{
	1: "coldStart", 2: "warmStart", 3: "linkDown", 4: "linkUp", 5: "authenticationFailure", 6: "egpNeighborLoss",
}

// Config says which traps to accept.
type Config struct {
	// Communities accepted from v1 and v2c senders; empty accepts any community.
	Communities []string
	// Users are the SNMPv3 users whose traps are accepted. Each needs EngineID: a trap's
	// sender is the authoritative engine, and its keys are localised to the sender's engine
	// ID, as for Net-SNMP's snmptrapd (createUser -e). The same user name may be listed
	// once per sending engine.
	Users []snmp.USM
	// Logger gets one debug line per dropped packet; default slog.Default().
	Logger *slog.Logger
	// Queue is how many accepted traps may wait for the handler (default DefaultQueue).
	Queue int
}

// DefaultQueue is the handler queue's length when Config.Queue is 0.
const DefaultQueue = 256

// Trap is one received trap or inform, in SNMPv2 form.
type Trap struct {
	Source    netip.Addr // the sender's IP address as seen on the socket
	Version   string     // "1", "2c" or "3"
	Community string     // v1 and v2c
	User      string     // v3
	// TrapOID is snmpTrapOID.0; for SNMPv1 traps, converted as RFC 3584 §3.1 says.
	TrapOID string
	// Name is the trap's name when known: RFC 1628's upsTrapOnBattery,
	// upsTrapTestCompleted, upsTrapAlarmEntryAdded, upsTrapAlarmEntryRemoved, or a generic
	// trap (coldStart, linkDown, …).
	Name string
	// Alarm is the first RFC 1628 well-known alarm named by a varbind value (the
	// upsAlarmDescr of an AlarmEntryAdded/Removed trap), without "upsAlarm": "OnBattery".
	Alarm string
	// Uptime is the sender's sysUpTime (hundredths of a second), or the v1 time-stamp.
	Uptime uint32
	// Varbinds are the trap's variables, without sysUpTime.0 and snmpTrapOID.0.
	Varbinds []Varbind
	// Enterprise and AgentAddress are the v1 header fields (empty for v2c and v3).
	Enterprise   string
	AgentAddress string
	Inform       bool
	Time         time.Time // when it was received
}

// Varbind is one variable of a trap.
type Varbind struct {
	OID   string
	Value snmp.Value
	// Alarm names the value when it is an RFC 1628 well-known alarm OID.
	Alarm string
}

// Receiver is a running trap listener.
type Receiver struct {
	conn   net.PacketConn
	cfg    Config
	handle func(Trap)
	log    *slog.Logger
	v2     *gosnmp.GoSNMP // decodes v1 and v2c
	v3     *gosnmp.GoSNMP // decodes v3 with the user table; nil without users
	queue  chan Trap
	done   chan struct{}

	received, malformed, rejected, dropped atomic.Uint64
	closeOnce                              sync.Once
}

// Listen binds addr ("0.0.0.0:162", "127.0.0.1:0") and receives traps until ctx ends,
// calling handle for each accepted trap in arrival order, one at a time, from a goroutine of
// its own. The socket is bound when Listen returns.
func Listen(ctx context.Context, addr string, cfg Config, handle func(Trap)) (*Receiver, error) {
	if handle == nil {
		return nil, errors.New("snmptrap: no handler")
	}
	if cfg.Queue < 0 {
		return nil, fmt.Errorf("snmptrap: queue length %d", cfg.Queue)
	}
	if cfg.Queue == 0 {
		cfg.Queue = DefaultQueue
	}
	r := &Receiver{cfg: cfg, handle: handle, log: cfg.Logger, done: make(chan struct{}), queue: make(chan Trap, cfg.Queue)}
	if r.log == nil {
		r.log = slog.Default()
	}
	quiet := gosnmp.NewLogger(log.New(io.Discard, "", 0))
	r.v2 = &gosnmp.GoSNMP{Version: gosnmp.Version2c, Logger: quiet}
	if len(cfg.Users) > 0 {
		table := gosnmp.NewSnmpV3SecurityParametersTable(quiet)
		for _, u := range cfg.Users {
			if err := CheckUser(u); err != nil {
				return nil, err
			}
			p, err := usmParams(u)
			if err != nil {
				return nil, fmt.Errorf("snmptrap: %w", err)
			}
			if err := table.Add(u.User, p); err != nil {
				return nil, fmt.Errorf("snmptrap: v3 user %s: %w", u.User, err)
			}
		}
		r.v3 = &gosnmp.GoSNMP{Version: gosnmp.Version3, SecurityModel: gosnmp.UserSecurityModel, Logger: quiet}
		r.v3.SetTrapSecurityParametersTable(table)
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("snmptrap: listen %s: %w", addr, err)
	}
	r.conn = conn
	go func() {
		select {
		case <-ctx.Done():
			r.closeOnce.Do(func() { r.conn.Close() })
		case <-r.done: // closed by Close
		}
	}()
	go r.loop()
	return r, nil
}

// usmParams builds gosnmp's USM parameters for one trap user, localised to its engine ID.
// CheckUser reports why u cannot be a v3 user of the receiver: a trap's sender is the
// authoritative engine, so its engine ID must be known.
func CheckUser(u snmp.USM) error {
	if u.User == "" || u.EngineID == "" {
		return fmt.Errorf("snmptrap: v3 user %q: user and engine_id are required", u.User)
	}
	if _, _, err := u.Params(); err != nil {
		return fmt.Errorf("snmptrap: %w", err)
	}
	return nil
}

func usmParams(u snmp.USM) (*gosnmp.UsmSecurityParameters, error) {
	p, _, err := u.Params()
	return p, err
}

// Addr is the bound address (useful with port 0).
func (r *Receiver) Addr() net.Addr { return r.conn.LocalAddr() }

// Received counts the traps accepted and handed to the callback.
func (r *Receiver) Received() uint64 { return r.received.Load() }

// Dropped counts accepted traps dropped because the handler's queue was full.
func (r *Receiver) Dropped() uint64 { return r.dropped.Load() }

// Malformed counts packets that could not be decoded as an SNMP trap.
func (r *Receiver) Malformed() uint64 { return r.malformed.Load() }

// Rejected counts traps dropped for an unknown community or user or a failed
// authentication or decryption.
func (r *Receiver) Rejected() uint64 { return r.rejected.Load() }

// Close stops the receiver and waits until the receiving goroutine has ended.
func (r *Receiver) Close() error {
	var err error
	r.closeOnce.Do(func() { err = r.conn.Close() })
	<-r.done
	return err
}

// Done is closed when the receiver has stopped.
func (r *Receiver) Done() <-chan struct{} { return r.done }

func (r *Receiver) loop() {
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		for t := range r.queue {
			r.received.Add(1)
			r.handle(t)
		}
	}()
	defer func() {
		close(r.queue)
		<-handled
		close(r.done)
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("snmptrap: read", "err", err)
			continue
		}
		src := netip.Addr{}
		if ua, ok := from.(*net.UDPAddr); ok {
			src, _ = netip.AddrFromSlice(ua.IP)
			src = src.Unmap()
		}
		pkt := slices.Clone(buf[:n])
		trap, reply, err := r.decode(pkt, src)
		if err != nil {
			r.log.Debug("snmptrap: dropped", "from", from.String(), "err", err)
			continue
		}
		if reply != nil {
			if _, err := r.conn.WriteTo(reply, from); err != nil {
				r.log.Warn("snmptrap: inform response", "to", from.String(), "err", err)
			}
		}
		select {
		case r.queue <- trap:
		default:
			r.dropped.Add(1)
			r.log.Debug("snmptrap: queue full, trap dropped", "from", from.String(), "trap", trap.TrapOID)
		}
	}
}

// errRejected marks a well-formed packet we do not accept.
var errRejected = errors.New("rejected")

// decode turns one datagram into a Trap, counting what it drops. reply is the response to
// an inform, when one is due.
func (r *Receiver) decode(pkt []byte, src netip.Addr) (t Trap, reply []byte, err error) {
	defer func() {
		// gosnmp's BER decoder is not ours to trust with hostile bytes: a panic in it is a
		// malformed packet, not a dead receiver.
		if p := recover(); p != nil {
			err = fmt.Errorf("decode panic: %v", p)
		}
		if err != nil {
			if errors.Is(err, errRejected) {
				r.rejected.Add(1)
			} else {
				r.malformed.Add(1)
			}
		}
	}()
	version, ok := peekVersion(pkt)
	if !ok {
		return t, nil, errors.New("not an SNMP message")
	}
	var p *gosnmp.SnmpPacket
	switch version {
	case 0, 1:
		p, err = r.v2.UnmarshalTrap(pkt, false)
		if err != nil {
			return t, nil, err
		}
		if len(r.cfg.Communities) > 0 && !slices.Contains(r.cfg.Communities, p.Community) {
			return t, nil, fmt.Errorf("%w: community %q", errRejected, p.Community)
		}
	case 3:
		if r.v3 == nil {
			return t, nil, fmt.Errorf("%w: SNMPv3 trap and no v3 user configured", errRejected)
		}
		p, err = r.v3.UnmarshalTrap(pkt, true)
		if err != nil {
			// The user table answers "no security parameters found" for an unknown user
			// and "no credentials successfully unmarshaled" when no password fits.
			if s := err.Error(); strings.Contains(s, "no security parameters") || strings.Contains(s, "no credentials") {
				return t, nil, fmt.Errorf("%w: %v", errRejected, err)
			}
			return t, nil, err
		}
	default:
		return t, nil, fmt.Errorf("SNMP version field %d", version)
	}
	t, err = convert(p, src)
	if err != nil {
		return t, nil, err
	}
	if p.PDUType == gosnmp.InformRequest && p.Version != gosnmp.Version3 {
		// An inform wants its varbinds back in a Response (RFC 3416 §4.2.7). v3 informs
		// would need this receiver to be an authoritative engine; they are accepted but not
		// answered, and the sender will retry.
		resp := *p
		resp.PDUType = gosnmp.GetResponse
		resp.Error, resp.ErrorIndex = gosnmp.NoError, 0
		if reply, err = resp.MarshalMsg(); err != nil {
			reply = nil
		}
	}
	return t, reply, nil
}

// peekVersion reads the msgVersion of an SNMP message (SEQUENCE { INTEGER version, … })
// without decoding the rest.
func peekVersion(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != 0x30 {
		return 0, false
	}
	i := 2
	if b[1]&0x80 != 0 {
		i += int(b[1] & 0x7f)
	}
	if i+3 > len(b) || b[i] != 0x02 || b[i+1] != 1 {
		return 0, false
	}
	return int(b[i+2]), true
}

// convert makes the SNMPv2 form of a decoded trap.
func convert(p *gosnmp.SnmpPacket, src netip.Addr) (Trap, error) {
	t := Trap{Source: src, Time: time.Now(), Inform: p.PDUType == gosnmp.InformRequest}
	switch p.Version {
	case gosnmp.Version1:
		t.Version, t.Community = "1", p.Community
	case gosnmp.Version2c:
		t.Version, t.Community = "2c", p.Community
	case gosnmp.Version3:
		t.Version = "3"
		if usm, ok := p.SecurityParameters.(*gosnmp.UsmSecurityParameters); ok {
			t.User = usm.UserName
		}
	}
	switch p.PDUType {
	case gosnmp.Trap:
		t.Enterprise = strings.TrimPrefix(p.Enterprise, ".")
		t.AgentAddress = p.AgentAddress
		t.Uptime = uint32(p.Timestamp)
		// RFC 3584 §3.1 (2): generic traps 0..5 become snmpTraps.(generic+1); an
		// enterprise-specific trap becomes enterprise.0.specific.
		if p.GenericTrap >= 0 && p.GenericTrap <= 5 {
			t.TrapOID = oidSnmpTraps + strconv.Itoa(p.GenericTrap+1)
		} else if p.GenericTrap == 6 && t.Enterprise != "" {
			t.TrapOID = t.Enterprise + ".0." + strconv.Itoa(p.SpecificTrap)
		} else {
			return t, fmt.Errorf("v1 trap with generic-trap %d", p.GenericTrap)
		}
		for _, v := range p.Variables {
			t.Varbinds = append(t.Varbinds, varbind(v))
		}
	case gosnmp.SNMPv2Trap, gosnmp.InformRequest:
		for _, v := range p.Variables {
			name := strings.TrimPrefix(v.Name, ".")
			switch name {
			case oidSysUpTime:
				if d := snmp.Decode(v); d.IsNum {
					t.Uptime = uint32(d.Num)
				}
			case oidTrapOID:
				s, _ := v.Value.(string)
				t.TrapOID = strings.TrimPrefix(s, ".")
			default:
				t.Varbinds = append(t.Varbinds, varbind(v))
			}
		}
		if t.TrapOID == "" {
			return t, errors.New("v2 trap without snmpTrapOID.0")
		}
	default:
		return t, fmt.Errorf("PDU type %s is not a trap", p.PDUType)
	}
	t.Name = Name(t.TrapOID)
	for _, v := range t.Varbinds {
		if v.Alarm != "" {
			t.Alarm = v.Alarm
			break
		}
	}
	return t, nil
}

func varbind(p gosnmp.SnmpPDU) Varbind {
	v := Varbind{Value: snmp.Decode(p)}
	v.OID = v.Value.OID
	if v.Value.Type == "ObjectIdentifier" {
		if _, name, ok := snmp.UPSAlarm(v.Value.Text); ok {
			v.Alarm = name
		}
	}
	return v
}

// Name names a trap OID: the RFC 1628 UPS traps in both forms vendors use (upsTraps.N and
// upsTraps.0.N) and the generic traps; "" for others.
func Name(trapOID string) string {
	trapOID = strings.TrimPrefix(trapOID, ".")
	if rest, ok := strings.CutPrefix(trapOID, oidUPSTraps); ok {
		rest = strings.TrimPrefix(rest, "0.")
		if n, err := strconv.Atoi(rest); err == nil {
			return UPSTraps[n]
		}
		return ""
	}
	if rest, ok := strings.CutPrefix(trapOID, oidSnmpTraps); ok {
		if n, err := strconv.Atoi(rest); err == nil {
			return genericTraps[n]
		}
	}
	return ""
}

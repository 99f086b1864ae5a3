// Package snmp is rackwatch's SNMP manager side: a small client around
// github.com/gosnmp/gosnmp that GETs many OIDs at once (SNMPv1, v2c and v3 USM), splitting the
// request when the agent answers tooBig, and reporting objects the agent does not have one by
// one instead of failing the whole request. Values come back as numbers where the agent meant
// a number (INTEGER, Counter32/64, Gauge32, TimeTicks, and OCTET STRINGs that hold a number,
// which some UPS cards send).
//
// It knows PDUs and OIDs, nothing of UPSes, sites, rules or MQTT: it must not import sensors/,
// daemon/ or uplink/.
package snmp

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gosnmp/gosnmp"
)

// Config says how to reach one agent.
type Config struct {
	// Target is "host:port"; the port defaults to 161.
	Target    string
	Community string // v1 and v2c; default "public"
	Version   string // "1", "2c" (default) or "3"
	V3        *USM   // required for version 3
	// Timeout bounds one request try; the caller's context bounds the whole call.
	// Default 2s.
	Timeout time.Duration
	// Retries is how often a request that got no answer is sent again. Default 1.
	Retries int
	// MaxOids is the most OIDs put into one GET. Default 60 (gosnmp's). Agents that answer
	// tooBig make the client use fewer from then on.
	MaxOids int
}

// USM holds SNMPv3 User-based Security Model parameters. Auth and priv are used when their
// protocol is set: both set is authPriv, auth alone authNoPriv, neither noAuthNoPriv.
type USM struct {
	User         string
	AuthProtocol string // MD5, SHA, SHA224, SHA256, SHA384, SHA512
	AuthPass     string
	PrivProtocol string // DES, AES (AES128), AES192, AES256, AES192C, AES256C
	PrivPass     string
	// Context is the SNMPv3 context name; empty for most devices.
	Context string
	// EngineID is the sender's authoritative engine ID in hex, used by the trap receiver to
	// localise keys (a trap's sender is authoritative). Ignored by the client, which learns
	// the agent's engine ID by discovery.
	EngineID string
}

// Value is what the agent answered for one OID.
type Value struct {
	OID  string // without a leading dot
	Type string // the ASN.1 type as gosnmp names it: Integer, Counter32, OctetString, …
	// Num is the value as a number when IsNum.
	Num   float64
	IsNum bool
	// Text is the value as text: the string of an OCTET STRING (hex when not printable), an
	// OID or IP address, or the decimal form of a number.
	Text string
	// Missing is set when the agent has no such object or instance (or, in SNMPv1, answered
	// noSuchName), or could not return this object alone; Err says why.
	Missing bool
	Err     string
}

// Client talks to one agent. It is safe for concurrent use: calls are serialised, because a
// gosnmp.GoSNMP value is not.
type Client struct {
	cfg Config

	mu        sync.Mutex
	g         *gosnmp.GoSNMP
	connected bool
	maxOids   int
}

// CheckTarget reports why target cannot be an agent's address ("host:port", or "host" for
// port 161).
func CheckTarget(target string) error {
	_, _, err := splitTarget(target)
	return err
}

func splitTarget(target string) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		// No port given.
		host, portStr = target, "161"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("snmp: target %q: want host:port", target)
	}
	if port == 0 {
		return "", 0, fmt.Errorf("snmp: target %q: port 0 is not 1-65535", target)
	}
	return host, uint16(port), nil
}

// CheckVersion reports why v cannot be an SNMP version ("" is 2c); version 3 needs a user.
func CheckVersion(v string, v3 *USM) error {
	switch v {
	case "1", "", "2c", "2":
		return nil
	case "3":
		if v3 == nil || v3.User == "" {
			return errors.New("snmp: version 3 needs a v3 user")
		}
		return nil
	}
	return fmt.Errorf("snmp: unknown version %q (want 1, 2c or 3)", v)
}

// New checks cfg and makes a client. It does not send anything yet: an agent that is down
// now fails the calls, not New.
func New(cfg Config) (*Client, error) {
	if cfg.Target == "" {
		return nil, errors.New("snmp: no target")
	}
	host, port, err := splitTarget(cfg.Target)
	if err != nil {
		return nil, err
	}
	if err := CheckVersion(cfg.Version, cfg.V3); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 1
	}
	if cfg.MaxOids <= 0 {
		cfg.MaxOids = gosnmp.MaxOids
	}
	if cfg.Community == "" {
		cfg.Community = "public"
	}
	g := &gosnmp.GoSNMP{
		Target:    host,
		Port:      port,
		Transport: "udp",
		Community: cfg.Community,
		Timeout:   cfg.Timeout,
		Retries:   cfg.Retries,
		MaxOids:   cfg.MaxOids,
		// Large answers are normal (a UPS GET is ~20 varbinds); gosnmp's default buffer
		// is 64 KiB already, which is plenty.
	}
	switch cfg.Version {
	case "1":
		g.Version = gosnmp.Version1
	case "", "2c", "2":
		g.Version = gosnmp.Version2c
	case "3":
		g.Version = gosnmp.Version3
		usm, flags, err := cfg.V3.Params()
		if err != nil {
			return nil, fmt.Errorf("snmp %s: %w", cfg.Target, err)
		}
		g.SecurityModel = gosnmp.UserSecurityModel
		g.MsgFlags = flags
		g.SecurityParameters = usm
		g.ContextName = cfg.V3.Context
	}
	return &Client{cfg: cfg, g: g, maxOids: cfg.MaxOids}, nil
}

// Params checks the USM settings and turns them into gosnmp's, with the security level they
// imply. The trap receiver uses it too.
func (u *USM) Params() (*gosnmp.UsmSecurityParameters, gosnmp.SnmpV3MsgFlags, error) {
	p := &gosnmp.UsmSecurityParameters{UserName: u.User}
	flags := gosnmp.NoAuthNoPriv
	if u.AuthProtocol != "" {
		ap, err := AuthProtocol(u.AuthProtocol)
		if err != nil {
			return nil, 0, err
		}
		if u.AuthPass == "" {
			return nil, 0, fmt.Errorf("v3 user %s: auth protocol without a password", u.User)
		}
		p.AuthenticationProtocol, p.AuthenticationPassphrase = ap, u.AuthPass
		flags = gosnmp.AuthNoPriv
	}
	if u.PrivProtocol != "" {
		if flags == gosnmp.NoAuthNoPriv {
			return nil, 0, fmt.Errorf("v3 user %s: privacy needs authentication too", u.User)
		}
		pp, err := PrivProtocol(u.PrivProtocol)
		if err != nil {
			return nil, 0, err
		}
		if u.PrivPass == "" {
			return nil, 0, fmt.Errorf("v3 user %s: priv protocol without a password", u.User)
		}
		p.PrivacyProtocol, p.PrivacyPassphrase = pp, u.PrivPass
		flags = gosnmp.AuthPriv
	}
	if u.EngineID != "" {
		id, err := EngineID(u.EngineID)
		if err != nil {
			return nil, 0, fmt.Errorf("v3 user %s: %w", u.User, err)
		}
		p.AuthoritativeEngineID = id
	}
	return p, flags, nil
}

// EngineID decodes an SNMP engine ID written in hex ("0x8000…" or "8000…") into its bytes.
func EngineID(s string) (string, error) {
	id, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil || len(id) < 5 || len(id) > 32 {
		return "", fmt.Errorf("engine ID %q: want 5 to 32 bytes in hex", s)
	}
	return string(id), nil
}

// AuthProtocol maps a name (MD5, SHA, SHA224, SHA256, SHA384, SHA512) to gosnmp's constant.
func AuthProtocol(name string) (gosnmp.SnmpV3AuthProtocol, error) {
	switch strings.ToUpper(strings.ReplaceAll(name, "-", "")) {
	case "MD5":
		return gosnmp.MD5, nil
	case "SHA", "SHA1":
		return gosnmp.SHA, nil
	case "SHA224":
		return gosnmp.SHA224, nil
	case "SHA256":
		return gosnmp.SHA256, nil
	case "SHA384":
		return gosnmp.SHA384, nil
	case "SHA512":
		return gosnmp.SHA512, nil
	}
	return 0, fmt.Errorf("unknown SNMPv3 auth protocol %q", name)
}

// PrivProtocol maps a name (DES, AES, AES128, AES192, AES256, AES192C, AES256C) to gosnmp's
// constant. AES192C/AES256C are the Cisco ("Blumenthal") key extension; plain AES192/AES256
// follow draft-reeder, which Net-SNMP calls AES192/AES256 too.
func PrivProtocol(name string) (gosnmp.SnmpV3PrivProtocol, error) {
	switch strings.ToUpper(strings.ReplaceAll(name, "-", "")) {
	case "DES":
		return gosnmp.DES, nil
	case "AES", "AES128":
		return gosnmp.AES, nil
	case "AES192":
		return gosnmp.AES192, nil
	case "AES256":
		return gosnmp.AES256, nil
	case "AES192C":
		return gosnmp.AES192C, nil
	case "AES256C":
		return gosnmp.AES256C, nil
	}
	return 0, fmt.Errorf("unknown SNMPv3 priv protocol %q", name)
}

// Target is the agent's address as configured, for messages.
func (c *Client) Target() string { return c.cfg.Target }

// Close releases the socket. The client may not be used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.connected {
		return nil
	}
	c.connected = false
	return c.g.Conn.Close()
}

// connect opens the UDP socket once; with c.mu held.
func (c *Client) connect(ctx context.Context) error {
	c.g.Context = ctx
	if c.connected {
		return nil
	}
	if err := c.g.Connect(); err != nil {
		return fmt.Errorf("snmp %s: connect: %w", c.cfg.Target, err)
	}
	c.connected = true
	return nil
}

// Get reads oids in as few GET requests as the agent allows and returns a Value for every
// OID asked for, keyed by the OID without a leading dot. Objects the agent does not have are
// Missing in the map; the error is non-nil only when the agent did not answer (timeout,
// network error, authentication failure), and names the target.
func (c *Client) Get(ctx context.Context, oids []string) (map[string]Value, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	defer func() { c.g.Context = context.Background() }()

	out := make(map[string]Value, len(oids))
	clean := make([]string, 0, len(oids))
	for _, o := range oids {
		o = strings.TrimPrefix(strings.TrimSpace(o), ".")
		if _, dup := out[o]; dup {
			continue
		}
		if !ValidOID(o) {
			out[o] = Value{OID: o, Missing: true, Err: "not a numeric OID"}
			continue
		}
		out[o] = Value{OID: o, Missing: true, Err: "no answer"}
		clean = append(clean, o)
	}
	for len(clean) > 0 {
		n := min(c.maxOids, len(clean))
		if err := c.getChunk(clean[:n], out); err != nil {
			return nil, err
		}
		clean = clean[n:]
	}
	return out, nil
}

// getChunk GETs one request's worth of OIDs into out; with c.mu held.
func (c *Client) getChunk(oids []string, out map[string]Value) error {
	for len(oids) > 0 {
		pkt, err := c.g.Get(oids)
		if err != nil {
			return c.wrap(fmt.Sprintf("get %d OIDs", len(oids)), err)
		}
		switch pkt.Error {
		case gosnmp.NoError:
			for i, v := range pkt.Variables {
				val := Decode(v)
				if _, asked := out[val.OID]; !asked && len(pkt.Variables) == len(oids) {
					// RFC 3416 §4.2.1: the response lists the varbinds in the order asked.
					// A few agents rename an instance (drop the .0); trust the position.
					val.OID = oids[i]
				}
				if _, asked := out[val.OID]; asked {
					out[val.OID] = val
				}
			}
			return nil
		case gosnmp.TooBig:
			if len(oids) == 1 {
				out[oids[0]] = Value{OID: oids[0], Missing: true, Err: "tooBig alone"}
				return nil
			}
			// Remember the smaller size so the next poll does not pay for the tooBig again.
			half := len(oids) / 2
			c.maxOids = max(1, min(c.maxOids, half))
			if err := c.getChunk(oids[:half], out); err != nil {
				return err
			}
			oids = oids[half:]
			continue
		case gosnmp.NoSuchName:
			// SNMPv1: the whole request fails on the first unknown object, named by the
			// error index (1-based). Mark it and ask again without it.
			i := int(pkt.ErrorIndex) - 1
			if i < 0 || i >= len(oids) {
				return c.isolate(oids, pkt.Error, out)
			}
			out[oids[i]] = Value{OID: oids[i], Missing: true, Err: "noSuchName"}
			oids = append(append([]string(nil), oids[:i]...), oids[i+1:]...)
			continue
		default:
			return c.isolate(oids, pkt.Error, out)
		}
	}
	return nil
}

// isolate handles an error status that applies to the whole request (genErr and the like,
// which some agents send for one bad object): ask again in halves until the failing objects
// stand alone, so that one odd object does not hide the rest.
func (c *Client) isolate(oids []string, status gosnmp.SNMPError, out map[string]Value) error {
	if len(oids) == 1 {
		out[oids[0]] = Value{OID: oids[0], Missing: true, Err: status.String()}
		return nil
	}
	half := len(oids) / 2
	if err := c.getChunk(oids[:half], out); err != nil {
		return err
	}
	return c.getChunk(oids[half:], out)
}

// Walk reads the subtree under root (GETBULK for v2c and v3, GETNEXT for v1).
func (c *Client) Walk(ctx context.Context, root string) ([]Value, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	defer func() { c.g.Context = context.Background() }()
	root = strings.TrimPrefix(root, ".")
	var pdus []gosnmp.SnmpPDU
	var err error
	if c.g.Version == gosnmp.Version1 {
		pdus, err = c.g.WalkAll(root)
	} else {
		pdus, err = c.g.BulkWalkAll(root)
	}
	if err != nil {
		return nil, c.wrap("walk "+root, err)
	}
	vals := make([]Value, 0, len(pdus))
	for _, p := range pdus {
		vals = append(vals, Decode(p))
	}
	return vals, nil
}

// wrap names the target and what was being done; timeouts say so plainly.
func (c *Client) wrap(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
		return fmt.Errorf("snmp %s: %s: no answer (timeout): %w", c.cfg.Target, what, err)
	}
	return fmt.Errorf("snmp %s: %s: %w", c.cfg.Target, what, err)
}

// ValidOID says whether o is a numeric OID ("1.3.6.1.2.1.33.1.2.4.0", no leading dot).
func ValidOID(o string) bool {
	if o == "" {
		return false
	}
	for _, part := range strings.Split(o, ".") {
		if part == "" {
			return false
		}
		if _, err := strconv.ParseUint(part, 10, 32); err != nil {
			return false
		}
	}
	return true
}

// Decode turns one varbind, as gosnmp unmarshals it, into a Value.
func Decode(p gosnmp.SnmpPDU) Value {
	v := Value{OID: strings.TrimPrefix(p.Name, "."), Type: p.Type.String()}
	switch p.Type {
	case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.EndOfMibView:
		v.Missing, v.Err = true, p.Type.String()
		return v
	case gosnmp.Null:
		// Some agents answer NULL for an object they list but cannot read (the Minuteman
		// walk has upsBatteryCurrent as NULL): that is no value.
		v.Missing, v.Err = true, "Null"
		return v
	case gosnmp.OctetString:
		b, _ := p.Value.([]byte)
		v.Text = octetText(b)
		// Numbers in strings ("230.0", " 49 ") are how some cards send readings.
		if f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimRight(v.Text, "\x00")), 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			v.Num, v.IsNum = f, true
		}
		return v
	case gosnmp.ObjectIdentifier, gosnmp.IPAddress:
		s, _ := p.Value.(string)
		v.Text = strings.TrimPrefix(s, ".")
		return v
	}
	switch x := p.Value.(type) {
	case int:
		v.Num, v.IsNum = float64(x), true
	case int64:
		v.Num, v.IsNum = float64(x), true
	case uint:
		v.Num, v.IsNum = float64(x), true
	case uint32:
		v.Num, v.IsNum = float64(x), true
	case uint64:
		v.Num, v.IsNum = float64(x), true
	case float32:
		v.Num, v.IsNum = float64(x), true
	case float64:
		v.Num, v.IsNum = x, true
	case []byte:
		v.Text = octetText(x)
		return v
	case string:
		v.Text = x
		return v
	default:
		v.Missing, v.Err = true, fmt.Sprintf("unsupported type %s", p.Type)
		return v
	}
	v.Text = strconv.FormatFloat(v.Num, 'f', -1, 64)
	return v
}

// octetText is an OCTET STRING as text, or as hex when it is not printable UTF-8.
func octetText(b []byte) string {
	if utf8.Valid(b) {
		printable := true
		for _, r := range string(b) {
			if r < 0x20 && r != '\t' && r != '\n' && r != '\r' && r != 0 {
				printable = false
				break
			}
		}
		if printable {
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return hex.EncodeToString(b)
}

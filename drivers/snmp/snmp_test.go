package snmp

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

const ent = "1.3.6.1.4.1.99999.1."

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t *testing.T, c *Client, oids ...string) map[string]Value {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	vals, err := c.Get(ctx, oids)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// want is one expected value: a number, a text, or missing.
type want struct {
	oid     string
	num     float64
	isNum   bool
	text    string
	missing bool
}

func check(t *testing.T, vals map[string]Value, wants []want) {
	t.Helper()
	for _, w := range wants {
		v, ok := vals[w.oid]
		if !ok {
			t.Errorf("%s: not in the answer", w.oid)
			continue
		}
		switch {
		case w.missing:
			if !v.Missing {
				t.Errorf("%s: got %+v, want missing", w.oid, v)
			}
		case w.isNum:
			if v.Missing || !v.IsNum || v.Num != w.num {
				t.Errorf("%s: got %+v, want number %v", w.oid, v, w.num)
			}
		default:
			if v.Missing || v.Text != w.text {
				t.Errorf("%s: got %+v, want text %q", w.oid, v, w.text)
			}
		}
	}
}

func TestGetTypesV2c(t *testing.T) {
	addr := testpeer.StartSnmpsim(t, "testdata/types.snmprec")
	c := newClient(t, Config{Target: addr, Community: "types", Version: "2c"})
	vals := get(t, c,
		"1.3.6.1.2.1.1.1.0", ".1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0",
		ent+"1.0", ent+"2.0", ent+"3.0", ent+"4.0", ent+"5.0", ent+"6.0", ent+"7.0", ent+"8.0",
		ent+"9.0", "1.3.6.1.2.1.33.1.2.1.0", "not.an.oid")
	check(t, vals, []want{
		{oid: "1.3.6.1.2.1.1.1.0", text: "rackwatch types walk"},
		{oid: "1.3.6.1.2.1.1.2.0", text: "1.3.6.1.4.1.318.1.3.4.5"},
		{oid: "1.3.6.1.2.1.1.3.0", num: 123456, isNum: true}, // TimeTicks
		{oid: ent + "1.0", num: -42, isNum: true},            // negative Integer
		{oid: ent + "2.0", num: 4294967295, isNum: true},     // Counter32 at its top
		{oid: ent + "3.0", num: 27, isNum: true},             // Gauge32
		{oid: ent + "4.0", num: 18446744073709551615, isNum: true},
		{oid: ent + "5.0", num: 230.5, isNum: true}, // a number in an OCTET STRING
		{oid: ent + "6.0", text: "10.0.0.1"},
		{oid: ent + "7.0", text: "00ff10"}, // binary OCTET STRING as hex
		{oid: ent + "8.0", missing: true},  // NULL
		{oid: ent + "9.0", missing: true},  // noSuchObject
		{oid: "1.3.6.1.2.1.33.1.2.1.0", missing: true},
		{oid: "not.an.oid", missing: true},
	})
	if v := vals[ent+"1.0"]; v.Type != "Integer" {
		t.Errorf("type of %s = %q, want Integer", v.OID, v.Type)
	}
}

// SNMPv1 fails a whole GET with noSuchName on the first unknown object: the client must
// still read the others.
func TestGetV1NoSuchName(t *testing.T) {
	addr := testpeer.StartSnmpsim(t, "testdata/types.snmprec")
	c := newClient(t, Config{Target: addr, Community: "types", Version: "1"})
	vals := get(t, c, ent+"1.0", "1.3.6.1.2.1.33.1.2.1.0", ent+"3.0", ent+"99.0", ent+"5.0")
	check(t, vals, []want{
		{oid: ent + "1.0", num: -42, isNum: true},
		{oid: "1.3.6.1.2.1.33.1.2.1.0", missing: true},
		{oid: ent + "3.0", num: 27, isNum: true},
		{oid: ent + "99.0", missing: true},
		{oid: ent + "5.0", num: 230.5, isNum: true},
	})
}

// An agent that answers under other names (without the .0) is matched by position, as
// RFC 3416 orders the answer.
func TestGetRenamedAnswer(t *testing.T) {
	addr, _ := tooBigAgent(t, 60, true)
	c := newClient(t, Config{Target: addr})
	check(t, get(t, c, "1.3.6.1.4.1.99999.2.7.0", "1.3.6.1.4.1.99999.2.9.0"), []want{
		{oid: "1.3.6.1.4.1.99999.2.7.0", num: 7, isNum: true},
		{oid: "1.3.6.1.4.1.99999.2.9.0", num: 9, isNum: true},
	})
}

// tooBigAgent is a minimal v2c agent for the one case snmpsim cannot play: it answers tooBig
// to any GET of more than limit OIDs, and the OID's last arc as an Integer otherwise. It
// counts the requests it got.
func tooBigAgent(t *testing.T, limit int, rename bool) (addr string, requests func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		codec := &gosnmp.GoSNMP{Version: gosnmp.Version2c, Logger: gosnmp.NewLogger(nil)}
		buf := make([]byte, 65536)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := codec.SnmpDecodePacket(buf[:k])
			if err != nil {
				continue
			}
			mu.Lock()
			n++
			mu.Unlock()
			resp := *req
			resp.PDUType = gosnmp.GetResponse
			if len(req.Variables) > limit {
				resp.Error, resp.ErrorIndex = gosnmp.TooBig, 0
			} else {
				resp.Variables = nil
				for _, v := range req.Variables {
					arcs := strings.Split(v.Name, ".")
					x, _ := strconv.Atoi(arcs[len(arcs)-2])
					name := v.Name
					if rename {
						name = strings.TrimSuffix(name, ".0") // a buggy agent's instance
					}
					resp.Variables = append(resp.Variables, gosnmp.SnmpPDU{Name: name, Type: gosnmp.Integer, Value: x})
				}
			}
			out, err := resp.MarshalMsg()
			if err != nil {
				t.Errorf("agent: marshal: %v", err)
				continue
			}
			pc.WriteTo(out, from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// More OIDs than fit one request (MaxOids) and an agent that answers tooBig: every OID is
// still read, and the client remembers the smaller size for the next poll.
func TestGetSplitsOnTooBig(t *testing.T) {
	addr, requests := tooBigAgent(t, 8, false)
	c := newClient(t, Config{Target: addr, Community: "public", MaxOids: 12})
	var oids []string
	var wants []want
	for i := 1; i <= 30; i++ {
		o := fmt.Sprintf("1.3.6.1.4.1.99999.2.%d.0", i)
		oids = append(oids, o)
		wants = append(wants, want{oid: o, num: float64(i), isNum: true})
	}
	check(t, get(t, c, oids...), wants)
	if c.maxOids > 8 {
		t.Errorf("after tooBig the client still sends %d OIDs a request", c.maxOids)
	}
	first := requests()
	check(t, get(t, c, oids...), wants)
	if second := requests() - first; second != 5 {
		t.Errorf("second poll took %d requests, want 5 (30 OIDs, 6 a request)", second)
	}
}

func TestGetV3AuthPriv(t *testing.T) {
	addr := testpeer.StartSnmpsimArgs(t, []string{
		"--v3-user=rack", "--v3-auth-key=authpass123", "--v3-auth-proto=SHA",
		"--v3-priv-key=privpass123", "--v3-priv-proto=AES",
	}, "testdata/types.snmprec")
	c := newClient(t, Config{Target: addr, Version: "3", V3: &USM{
		User: "rack", AuthProtocol: "SHA", AuthPass: "authpass123",
		PrivProtocol: "AES", PrivPass: "privpass123", Context: "types",
	}})
	check(t, get(t, c, ent+"3.0", ent+"9.0"), []want{
		{oid: ent + "3.0", num: 27, isNum: true},
		{oid: ent + "9.0", missing: true},
	})

	// A wrong password is a failure of the whole request, not a value.
	bad := newClient(t, Config{Target: addr, Version: "3", Timeout: 500 * time.Millisecond, V3: &USM{
		User: "rack", AuthProtocol: "SHA", AuthPass: "wrongpass123",
		PrivProtocol: "AES", PrivPass: "privpass123", Context: "types",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if vals, err := bad.Get(ctx, []string{ent + "3.0"}); err == nil {
		t.Fatalf("wrong auth password: got %+v, want an error", vals)
	}
}

// An agent that does not answer is an error that names the target, within the caller's
// deadline.
func TestGetTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // a socket that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	c := newClient(t, Config{Target: addr, Timeout: 200 * time.Millisecond, Retries: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Get(ctx, []string{ent + "1.0"})
	if err == nil {
		t.Fatal("no error from a silent agent")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("error %q should name the target %s and say timeout", err, addr)
	}
	if d := time.Since(start); d > 3*time.Second+time.Second {
		t.Errorf("Get took %v, past the caller's deadline", d)
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Target: "host:notaport"},
		{Target: "h:161", Version: "4"},
		{Target: "h:161", Version: "3"},
		{Target: "h:161", Version: "3", V3: &USM{User: "u", AuthProtocol: "MD4", AuthPass: "x"}},
		{Target: "h:161", Version: "3", V3: &USM{User: "u", PrivProtocol: "AES", PrivPass: "x"}},
		{Target: "h:161", Version: "3", V3: &USM{User: "u", AuthProtocol: "SHA"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
	c, err := New(Config{Target: "192.0.2.1"})
	if err != nil || c.g.Port != 161 {
		t.Errorf("target without port: %v, port %d", err, c.g.Port)
	}
}

// FuzzDecodeOctetString: whatever bytes an agent puts into an OCTET STRING, decoding them
// never panics and a number is only reported when the text is one.
func FuzzDecodeOctetString(f *testing.F) {
	for _, s := range []string{"230.5", " 49 ", "", "\x00\x01", "NaN", "1e400", "12\x00", "OL"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v := Decode(gosnmp.SnmpPDU{Name: ".1.2.3", Type: gosnmp.OctetString, Value: b})
		if v.OID != "1.2.3" || v.Missing {
			t.Fatalf("got %+v", v)
		}
	})
}

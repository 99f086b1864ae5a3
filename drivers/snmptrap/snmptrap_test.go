package snmptrap

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

const engineID = "0x8000000001020304"

// collector receives traps for a test.
type collector struct {
	mu    sync.Mutex
	traps []Trap
}

func (c *collector) add(t Trap) { c.mu.Lock(); c.traps = append(c.traps, t); c.mu.Unlock() }

func (c *collector) all() []Trap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Trap(nil), c.traps...)
}

func start(t *testing.T, cfg Config) (*Receiver, *collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{}
	r, err := Listen(ctx, "127.0.0.1:0", cfg, c.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.Done():
		case <-time.After(10 * time.Second):
			t.Error("receiver did not stop after its context ended")
		}
	})
	return r, c
}

// snmptrap runs Debian's snmptrap with args against the receiver.
func snmptrap(t *testing.T, r *Receiver, args ...string) {
	t.Helper()
	bin := testpeer.Require(t, "snmptrap", "snmp")
	// A private persistent dir: snmptrap -v3 writes engine boots there.
	env := append(os.Environ(), "SNMP_PERSISTENT_DIR="+t.TempDir(), "MIBS=")
	full := make([]string, 0, len(args))
	for _, a := range args {
		if a == "ADDR" {
			a = r.Addr().String()
		}
		full = append(full, a)
	}
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snmptrap %v: %v\n%s", full, err, out)
	}
}

func waitTraps(t *testing.T, c *collector, n int) []Trap {
	t.Helper()
	testpeer.Eventually(t, 20*time.Second, "traps", func() bool { return len(c.all()) >= n })
	return c.all()
}

func findVar(tr Trap, oid string) (snmp.Value, bool) {
	for _, v := range tr.Varbinds {
		if v.OID == oid {
			return v.Value, true
		}
	}
	return snmp.Value{}, false
}

// upsTrapOnBattery from Debian's snmptrap, as v2c and as v1: both decode to the same
// SNMPv2 trap OID form and name, with their varbinds.
func TestOnBatteryV2cAndV1(t *testing.T) {
	r, c := start(t, Config{Communities: []string{"public"}})
	snmptrap(t, r, "-v", "2c", "-c", "public", "ADDR", "", "1.3.6.1.2.1.33.2.1",
		"1.3.6.1.2.1.33.1.2.3.0", "i", "12", // upsEstimatedMinutesRemaining
		"1.3.6.1.2.1.33.1.2.2.0", "i", "30") // upsSecondsOnBattery
	snmptrap(t, r, "-v", "1", "-c", "public", "ADDR", "1.3.6.1.2.1.33.2", "127.0.0.1", "6", "1", "",
		"1.3.6.1.2.1.33.1.2.3.0", "i", "11")
	traps := waitTraps(t, c, 2)

	v2 := traps[0]
	if v2.Version != "2c" || v2.Community != "public" || v2.TrapOID != "1.3.6.1.2.1.33.2.1" || v2.Name != "upsTrapOnBattery" {
		t.Errorf("v2c trap: %+v", v2)
	}
	if v, ok := findVar(v2, "1.3.6.1.2.1.33.1.2.3.0"); !ok || v.Num != 12 {
		t.Errorf("v2c minutes remaining: %+v %v", v, ok)
	}
	if v, ok := findVar(v2, "1.3.6.1.2.1.33.1.2.2.0"); !ok || v.Num != 30 {
		t.Errorf("v2c seconds on battery: %+v %v", v, ok)
	}
	if len(v2.Varbinds) != 2 || v2.Uptime == 0 || v2.Source.String() != "127.0.0.1" || v2.Time.IsZero() {
		t.Errorf("v2c: varbinds %+v, uptime %d, source %s", v2.Varbinds, v2.Uptime, v2.Source)
	}

	v1 := traps[1]
	// RFC 3584 §3.1: enterprise upsTraps, specific 1 → upsTraps.0.1.
	if v1.Version != "1" || v1.TrapOID != "1.3.6.1.2.1.33.2.0.1" || v1.Name != "upsTrapOnBattery" ||
		v1.Enterprise != "1.3.6.1.2.1.33.2" || v1.AgentAddress != "127.0.0.1" {
		t.Errorf("v1 trap: %+v", v1)
	}
	if v, ok := findVar(v1, "1.3.6.1.2.1.33.1.2.3.0"); !ok || v.Num != 11 {
		t.Errorf("v1 minutes remaining: %+v %v", v, ok)
	}
	if r.Received() != 2 || r.Malformed() != 0 || r.Rejected() != 0 {
		t.Errorf("counters: received %d malformed %d rejected %d", r.Received(), r.Malformed(), r.Rejected())
	}
}

// Alarm traps in the .2.0.N form with a well-known alarm as upsAlarmDescr are named.
func TestAlarmEntryAdded(t *testing.T) {
	r, c := start(t, Config{})
	snmptrap(t, r, "-v", "2c", "-c", "any", "ADDR", "", "1.3.6.1.2.1.33.2.0.3",
		"1.3.6.1.2.1.33.1.6.2.1.1.7", "i", "7",
		"1.3.6.1.2.1.33.1.6.2.1.2.7", "o", "1.3.6.1.2.1.33.1.6.3.3")
	tr := waitTraps(t, c, 1)[0]
	if tr.Name != "upsTrapAlarmEntryAdded" || tr.Alarm != "LowBattery" || tr.Community != "any" {
		t.Errorf("trap: %+v", tr)
	}
}

// An SNMPv1 generic trap becomes snmpTraps.(generic+1) (RFC 3584 §3.1): coldStart.
func TestV1Generic(t *testing.T) {
	r, c := start(t, Config{})
	snmptrap(t, r, "-v", "1", "-c", "public", "ADDR", "1.3.6.1.4.1.318", "192.0.2.10", "0", "0", "")
	tr := waitTraps(t, c, 1)[0]
	if tr.TrapOID != "1.3.6.1.6.3.1.1.5.1" || tr.Name != "coldStart" || tr.AgentAddress != "192.0.2.10" {
		t.Errorf("v1 coldStart: %+v", tr)
	}
}

// A v2c inform is acknowledged: snmptrap -Ci waits for the response and fails without it.
func TestInform(t *testing.T) {
	r, c := start(t, Config{})
	snmptrap(t, r, "-Ci", "-t", "5", "-r", "0", "-v", "2c", "-c", "public", "ADDR", "", "1.3.6.1.2.1.33.2.0.4",
		"1.3.6.1.2.1.33.1.6.2.1.2.3", "o", "1.3.6.1.2.1.33.1.6.3.2")
	tr := waitTraps(t, c, 1)[0]
	if !tr.Inform || tr.Name != "upsTrapAlarmEntryRemoved" || tr.Alarm != "OnBattery" {
		t.Errorf("inform: %+v", tr)
	}
}

// Garbage on the socket only moves the Malformed counter; the receiver goes on working.
func TestMalformed(t *testing.T) {
	r, c := start(t, Config{})
	conn, err := net.Dial("udp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A real v2c trap cut short, a wrong version, plain text and a lone byte.
	full := v2cTrap(t)
	bad := [][]byte{full[:len(full)-6], {0x30, 0x03, 0x02, 0x01, 0x07}, []byte("hello, trap receiver"), {0x30}}
	for _, b := range bad {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	testpeer.Eventually(t, 20*time.Second, "5 malformed packets counted", func() bool { return r.Malformed() == uint64(len(bad)) })
	if n := len(c.all()); n != 0 {
		t.Errorf("%d traps handed on from garbage", n)
	}
	// The whole packet, and one from snmptrap, still get through.
	if _, err := conn.Write(full); err != nil {
		t.Fatal(err)
	}
	snmptrap(t, r, "-v", "2c", "-c", "public", "ADDR", "", "1.3.6.1.2.1.33.2.2")
	traps := waitTraps(t, c, 2)
	if traps[0].Name != "upsTrapOnBattery" || traps[1].Name != "upsTrapTestCompleted" {
		t.Errorf("after garbage: %+v", traps)
	}
	if r.Malformed() != uint64(len(bad)) {
		t.Errorf("malformed = %d, want %d", r.Malformed(), len(bad))
	}
}

// v3 authPriv traps from configured users are accepted; an unknown user, a wrong password
// and a community not listed are rejected and counted.
func TestV3Users(t *testing.T) {
	r, c := start(t, Config{
		Communities: []string{"public"},
		Users: []snmp.USM{
			{User: "ups-a", AuthProtocol: "SHA", AuthPass: "authpass-a1", PrivProtocol: "AES", PrivPass: "privpass-a1", EngineID: engineID},
			{User: "ups-b", AuthProtocol: "SHA256", AuthPass: "authpass-b1", PrivProtocol: "AES", PrivPass: "privpass-b1", EngineID: engineID},
		},
	})
	v3 := func(user, auth, authPass, privPass string) {
		snmptrap(t, r, "-v", "3", "-e", engineID, "-u", user, "-l", "authPriv", "-a", auth, "-A", authPass,
			"-x", "AES", "-X", privPass, "ADDR", "", "1.3.6.1.2.1.33.2.1", "1.3.6.1.2.1.33.1.2.3.0", "i", "9")
	}
	v3("ups-a", "SHA", "authpass-a1", "privpass-a1")
	v3("ups-b", "SHA-256", "authpass-b1", "privpass-b1")
	traps := waitTraps(t, c, 2)
	for i, user := range []string{"ups-a", "ups-b"} {
		tr := traps[i]
		if tr.Version != "3" || tr.User != user || tr.Name != "upsTrapOnBattery" {
			t.Errorf("v3 trap %d: %+v", i, tr)
		}
		if v, ok := findVar(tr, "1.3.6.1.2.1.33.1.2.3.0"); !ok || v.Num != 9 {
			t.Errorf("v3 trap %d varbind: %+v", i, v)
		}
	}

	v3("intruder", "SHA", "authpass-a1", "privpass-a1")
	v3("ups-a", "SHA", "wrongpass-a1", "privpass-a1")
	snmptrap(t, r, "-v", "2c", "-c", "private", "ADDR", "", "1.3.6.1.2.1.33.2.1")
	testpeer.Eventually(t, 20*time.Second, "3 rejected traps", func() bool { return r.Rejected() == 3 })
	if n := len(c.all()); n != 2 {
		t.Errorf("%d traps handed on, want only the 2 good ones", n)
	}
}

func TestName(t *testing.T) {
	for oid, want := range map[string]string{
		"1.3.6.1.2.1.33.2.1":    "upsTrapOnBattery",
		".1.3.6.1.2.1.33.2.0.1": "upsTrapOnBattery",
		"1.3.6.1.2.1.33.2.2":    "upsTrapTestCompleted",
		"1.3.6.1.2.1.33.2.0.3":  "upsTrapAlarmEntryAdded",
		"1.3.6.1.2.1.33.2.4":    "upsTrapAlarmEntryRemoved",
		"1.3.6.1.2.1.33.2.9":    "",
		"1.3.6.1.6.3.1.1.5.1":   "coldStart",
		"1.3.6.1.4.1.318.0.5":   "",
	} {
		if got := Name(oid); got != want {
			t.Errorf("Name(%s) = %q, want %q", oid, got, want)
		}
	}
}

func TestListenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Users: []snmp.USM{{User: "u", AuthProtocol: "SHA", AuthPass: "12345678"}}}, // no engine ID
		{Users: []snmp.USM{{User: "u", AuthProtocol: "SHA", AuthPass: "12345678", EngineID: "0x12"}}},
		{Users: []snmp.USM{{User: "u", AuthProtocol: "XXX", AuthPass: "12345678", EngineID: engineID}}},
	} {
		if r, err := Listen(context.Background(), "127.0.0.1:0", cfg, func(Trap) {}); err == nil {
			r.Close()
			t.Errorf("Listen(%+v) accepted", cfg)
		}
	}
}

// v2cTrap is an upsTrapOnBattery v2c trap as bytes, made by gosnmp's encoder.
func v2cTrap(t testing.TB) []byte {
	g := &gosnmp.GoSNMP{Version: gosnmp.Version2c, Community: "public"}
	b, err := g.SnmpEncodePacket(gosnmp.SNMPv2Trap, []gosnmp.SnmpPDU{
		{Name: "1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(4242)},
		{Name: "1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: "1.3.6.1.2.1.33.2.1"},
		{Name: "1.3.6.1.2.1.33.1.2.3.0", Type: gosnmp.Integer, Value: 12},
	}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecode: no datagram makes the decoder panic, and each one either is a trap or moves
// exactly one counter.
func FuzzDecode(f *testing.F) {
	full := v2cTrap(f)
	f.Add(full)
	f.Add(full[:20])
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x03})
	f.Add([]byte{0x30, 0x82, 0x00, 0x05, 0x02, 0x01, 0x00, 0x04, 0x00})
	f.Add([]byte("garbage"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Listen(ctx, "127.0.0.1:0", Config{Users: []snmp.USM{{User: "u", AuthProtocol: "SHA", AuthPass: "12345678", EngineID: engineID}}}, func(Trap) {})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		before := r.Malformed() + r.Rejected()
		_, _, err := r.decode(b, netip.Addr{})
		after := r.Malformed() + r.Rejected()
		if (err != nil) != (after == before+1) {
			t.Fatalf("err %v, counters moved by %d", err, after-before)
		}
	})
}

// A handler that does not keep up: Queue traps wait, the rest are counted as dropped, and the
// receiver still reads the socket; once the handler is free the queued ones are handled.
func TestQueueBounded(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	handled := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Listen(ctx, "127.0.0.1:0", Config{Queue: 4}, func(Trap) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		mu.Lock()
		handled++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pkt := v2cTrap(t)
	conn.Write(pkt)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler never saw the first trap")
	}
	for i := 0; i < 9; i++ {
		conn.Write(pkt)
	}
	testpeer.Eventually(t, 20*time.Second, "5 traps dropped", func() bool { return r.Dropped() == 5 })
	close(release)
	testpeer.Eventually(t, 20*time.Second, "5 traps handled", func() bool { mu.Lock(); defer mu.Unlock(); return handled == 5 })
	cancel()
	<-r.Done()
	if r.Dropped() != 5 || r.Received() != 5 {
		t.Errorf("dropped %d, received %d; want 5 and 5", r.Dropped(), r.Received())
	}
}

package site

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/traps"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func metricsText(t *testing.T, s *Site) string {
	t.Helper()
	resp, err := http.Get("http://" + s.WebAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestTrapsBecomeIncidents: Debian's snmptrap sends upsTrapOnBattery as v2c and as v1; each
// opens an incident that reaches mosquitto; a malformed packet changes only a counter.
func TestTrapsBecomeIncidents(t *testing.T) {
	snmptrap := testpeer.Require(t, "snmptrap", "snmp")
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "")
	trapPort := testpeer.FreeUDPPort(t)
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"]}
traps: {listen: "127.0.0.1:%d", communities: [public]}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.1:16100", poll: 1s}
`, t.TempDir(), m.URL, trapPort))
	addr := fmt.Sprintf("127.0.0.1:%d", trapPort)
	send := func(args ...string) {
		t.Helper()
		out, err := exec.Command(snmptrap, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("snmptrap %v: %v\n%s", args, err, out)
		}
	}
	// v2c upsTrapOnBattery (1.3.6.1.2.1.33.2.1) from 127.0.0.1, which is ups2's address.
	send("-v", "2c", "-c", "public", addr, "", "1.3.6.1.2.1.33.2.1", "1.3.6.1.2.1.33.1.2.2.0", "i", "30")
	testpeer.Eventually(t, 30*time.Second, "on-battery trap incident on mosquitto", func() bool {
		return len(sub.Matching("/incidents", `"event":"opened"`, `"rule":"snmp-trap"`, `"device":"ups2"`, `upsTrapOnBattery`)) == 1
	})
	// The sim UPS is on mains: its next poll resolves the trap's incident.
	testpeer.Eventually(t, 30*time.Second, "the trap incident resolved by the poll", func() bool {
		return len(sub.Matching("/incidents", `"event":"resolved"`, `"rule":"snmp-trap"`)) == 1
	})
	// v1: enterprise upsTraps, specific trap 1 (RFC 3584 turns it into upsTraps.0.1).
	send("-v", "1", "-c", "public", addr, "1.3.6.1.2.1.33.2", "", "6", "1", "")
	testpeer.Eventually(t, 30*time.Second, "the v1 trap's incident", func() bool {
		return len(sub.Matching("/incidents", `"event":"opened"`, `"rule":"snmp-trap"`)) == 2
	})
	// Its resolution by ups2's next poll too: it must not land in the window checked below.
	testpeer.Eventually(t, 30*time.Second, "the v1 trap's incident resolved by the poll", func() bool {
		return len(sub.Matching("/incidents", `"event":"resolved"`, `"rule":"snmp-trap"`)) == 2
	})
	// A wrong community is rejected, garbage is malformed: counters move, nothing else.
	before := len(sub.Matching("/incidents"))
	send("-v", "2c", "-c", "wrong", addr, "", "1.3.6.1.2.1.33.2.1")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("\x30\x82\xff\xffnot an SNMP packet"))
	c.Close()
	testpeer.Eventually(t, 20*time.Second, "malformed and rejected counters", func() bool {
		mt := metricsText(t, s)
		return strings.Contains(mt, `rackwatch_traps_total{outcome="malformed"} 1`) && strings.Contains(mt, `rackwatch_traps_total{outcome="rejected"} 1`)
	})
	time.Sleep(500 * time.Millisecond)
	if after := len(sub.Matching("/incidents")); after != before {
		t.Fatalf("a rejected or malformed packet changed the incidents: %d → %d", before, after)
	}
}

// trapsTotal reads rackwatch_traps_total{outcome} from /metrics.
func trapsTotal(t *testing.T, s *Site, outcome string) int {
	t.Helper()
	m := regexp.MustCompile(`rackwatch_traps_total\{outcome="` + outcome + `"\} (\S+)`).FindStringSubmatch(metricsText(t, s))
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	return int(n)
}

// handledTraps is how many traps the site has decided on, whatever the outcome.
func handledTraps(t *testing.T, s *Site) int {
	n := 0
	for _, o := range []string{"accepted", "unknown_source", "rate_limited", "queue_full"} {
		n += trapsTotal(t, s, o)
	}
	return n
}

func incidentsAPI(t *testing.T, s *Site, state string) []map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + s.WebAddr().String() + "/api/v1/incidents?state=" + state)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// v2cTrapPacket encodes an SNMPv2c trap with gosnmp.
func v2cTrapPacket(t *testing.T, community, trapOID string) []byte {
	t.Helper()
	g := &gosnmp.GoSNMP{Version: gosnmp.Version2c, Community: community}
	b, err := g.SnmpEncodePacket(gosnmp.SNMPv2Trap, []gosnmp.SnmpPDU{
		{Name: "1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(4242)},
		{Name: "1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: trapOID},
	}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrapStormIsOneIncident: 500 distinct trap OIDs in real UDP packets from a device's
// address open at most traps.max_open incidents and one trap-storm incident, which counts the
// rest, as rackwatch_traps_total{outcome="rate_limited"} does.
func TestTrapStormIsOneIncident(t *testing.T) {
	trapPort := testpeer.FreeUDPPort(t)
	const maxOpen = 20
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
traps: {listen: "127.0.0.1:%d", max_open: %d}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.1:16100", poll: 1s}
`, t.TempDir(), trapPort, maxOpen))
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", trapPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n, batch = 500, 50
	for i := 0; i < n; i += batch {
		for j := i; j < i+batch; j++ {
			if _, err := c.Write(v2cTrapPacket(t, "public", fmt.Sprintf("1.3.6.1.4.1.99999.0.%d", j))); err != nil {
				t.Fatal(err)
			}
		}
		// A batch at a time, so that the kernel's socket buffer never overflows on a
		// loaded machine: every trap sent is one the site decides on.
		want := i + batch
		testpeer.Eventually(t, 60*time.Second, fmt.Sprintf("%d traps handled", want), func() bool { return handledTraps(t, s) >= want })
	}
	if got := handledTraps(t, s); got != n {
		t.Fatalf("%d traps handled, %d sent", got, n)
	}
	limited := trapsTotal(t, s, "rate_limited")
	if limited < n-maxOpen {
		t.Errorf("rate_limited = %d, want at least %d", limited, n-maxOpen)
	}
	var trapIncs, storms int
	for _, in := range incidentsAPI(t, s, "all") {
		switch in["rule"] {
		case traps.RuleTrap:
			trapIncs++
		case traps.RuleStorm:
			storms++
		}
	}
	if trapIncs > maxOpen || storms != 1 {
		t.Fatalf("state=all: %d trap incidents and %d storms, want at most %d and 1", trapIncs, storms, maxOpen)
	}
	testpeer.Eventually(t, 30*time.Second, "the storm incident counts every dropped trap", func() bool {
		for _, in := range incidentsAPI(t, s, "open") {
			if in["rule"] == traps.RuleStorm {
				return in["device"] == "ups2" && in["value"] == float64(limited)
			}
		}
		return false
	})
}

// TestTrapsOnlyFromKnownSenders: an on-battery trap from an address that is no device opens
// nothing; from a traps.sources address it does. With no traps.communities only "public"
// is accepted, and a startup warning says so.
func TestTrapsOnlyFromKnownSenders(t *testing.T) {
	snmptrap := testpeer.Require(t, "snmptrap", "snmp")
	trapPort := testpeer.FreeUDPPort(t)
	var logs syncBuffer
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
traps: {listen: "127.0.0.1:%d", sources: ["127.0.0.3"]}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.2:16100", poll: 1s}
`, t.TempDir(), trapPort)))
	if err != nil {
		t.Fatal(err)
	}
	s := runSiteOpts(t, cfg, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), `only SNMPv1/v2c traps with the community \"public\" are accepted`) {
		t.Errorf("no startup warning about the communities:\n%s", logs.String())
	}
	addr := fmt.Sprintf("127.0.0.1:%d", trapPort)
	send := func(from, community string) {
		t.Helper()
		out, err := exec.Command(snmptrap, "--clientaddr="+from, "-v", "2c", "-c", community, addr, "", "1.3.6.1.2.1.33.2.1").CombinedOutput()
		if err != nil {
			t.Fatalf("snmptrap: %v\n%s", err, out)
		}
	}
	// Traps are handled in arrival order: once the later ones are seen, the earlier ones
	// have been decided on.
	send("127.0.0.1", "public")  // no device, not listed
	send("127.0.0.2", "private") // ups2, but a community not accepted
	send("127.0.0.3", "public")  // a listed source
	send("127.0.0.2", "public")  // ups2
	testpeer.Eventually(t, 30*time.Second, "the listed source's and ups2's on-battery incidents", func() bool {
		n := 0
		for _, in := range incidentsAPI(t, s, "all") {
			if in["rule"] == traps.RuleTrap && (in["device"] == "ups2" || in["device"] == "127.0.0.3") {
				n++
			}
		}
		return n == 2
	})
	all := incidentsAPI(t, s, "all")
	if len(all) != 2 {
		t.Errorf("incidents: %v", all)
	}
	if u, r := trapsTotal(t, s, "unknown_source"), trapsTotal(t, s, "rejected"); u != 1 || r != 1 {
		t.Errorf("unknown_source %d, rejected %d; want 1 and 1", u, r)
	}
}

// TestTrapDrivesNoPolicy: an on-battery trap from the UPS the power policy watches is shown
// as a critical incident and changes nothing else: no policy decision, no FSD.
func TestTrapDrivesNoPolicy(t *testing.T) {
	trapPort := testpeer.FreeUDPPort(t)
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
traps: {listen: "127.0.0.1:%d", communities: [public]}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.1:16100", poll: 1h}
  - {id: genset, driver: sim.relay, safe_state: "off"}
failover:
  power: {ups: [ups2], generator_relay: genset, confirm_polls: 1}
`, t.TempDir(), trapPort))
	testpeer.Eventually(t, 30*time.Second, "ups2 read", func() bool { return readingText(s, "ups2", "ups.status") == "OL" })
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", trapPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(v2cTrapPacket(t, "public", "1.3.6.1.2.1.33.2.1"))
	testpeer.Eventually(t, 30*time.Second, "the trap's critical incident", func() bool {
		for _, in := range incidentsAPI(t, s, "open") {
			if in["rule"] == traps.RuleTrap && in["severity"] == "critical" {
				return true
			}
		}
		return false
	})
	st := status(t, s)
	fo := st["failover"].(map[string]any)["power"].(map[string]any)
	if fo["state"] != "normal" || fo["decisions"] != nil {
		t.Errorf("the power policy moved on a trap: %v", fo)
	}
	if r := st["relays"].([]any)[0].(map[string]any); r["on"] == true {
		t.Errorf("the generator relay went on for a trap: %v", r)
	}
	if got := readingText(s, "ups2", "ups.status"); got != "OL" {
		t.Errorf("ups2 status %q after a trap, want OL", got)
	}
}

// runSiteOpts runs a site with a parsed config and options until the test ends, and returns
// it once it listens (runSite and startBenchSite are it with YAML).
func runSiteOpts(t testing.TB, cfg *config.Config, opt Options) *Site {
	t.Helper()
	ready := make(chan *Site, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opt.Ready = func(s *Site) { ready <- s }
	go func() { done <- Run(ctx, cfg, opt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("site: %v", err)
		}
	})
	select {
	case s := <-ready:
		return s
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("site did not start in 30 s")
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// TestIncidentStormAcrossSenders: 100 listed senders, one trap each, are more incidents in a
// minute than incidents.storm_limit allows: the rest become one incident-storm incident.
func TestIncidentStormAcrossSenders(t *testing.T) {
	trapPort := testpeer.FreeUDPPort(t)
	const limit, senders = 10, 100
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
traps: {listen: "127.0.0.1:%d", sources: ["127.0.1.0/24"]}
incidents: {storm_limit: %d}
devices:
  - {id: ups2, driver: sim.ups, target: "127.0.0.1:16100", poll: 1s}
`, t.TempDir(), trapPort, limit))
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: trapPort}
	for i := 1; i <= senders; i++ {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(i))}, to)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(v2cTrapPacket(t, "public", "1.3.6.1.4.1.99999.0.1"))
		c.Close()
		if i%25 == 0 {
			want := i
			testpeer.Eventually(t, 60*time.Second, fmt.Sprintf("%d traps handled", want), func() bool { return handledTraps(t, s) >= want })
		}
	}
	if a := trapsTotal(t, s, "accepted"); a != senders {
		t.Fatalf("accepted %d of %d", a, senders)
	}
	testpeer.Eventually(t, 30*time.Second, "one storm incident counting the rest", func() bool {
		trapIncs, storms := 0, 0
		var value any
		for _, in := range incidentsAPI(t, s, "open") {
			switch in["rule"] {
			case traps.RuleTrap:
				trapIncs++
			case incident.RuleStorm:
				storms++
				value = in["value"]
			}
		}
		return trapIncs == limit && storms == 1 && value == float64(senders-limit)
	})
}

package site

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

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

package site

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/failover"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestModbusUPSShutdown: an APC Smart-UPS over Modbus TCP (pymodbus serving the apc-smart-ups
// profile's registers) is a UPS like a serial one: covered by failover.power, served over NUT;
// its status registers going on battery with shutdown imminent make the policy order the
// shutdown, and upsc shows OB LB FSD.
func TestModbusUPSShutdown(t *testing.T) {
	b, err := os.ReadFile("../../sensors/modbus/testdata/apc-smart-ups.json")
	if err != nil {
		t.Fatal(err)
	}
	online := string(b) // unit 1: an SMT750 online, as NUT's apc_modbus read it
	srv := testpeer.StartModbusTCP(t, online)
	nutPort := testpeer.FreePort(t)
	s := runSite(t, fmt.Sprintf(`site: mb
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
nut: {listen: "127.0.0.1:%d", users: [{name: upsmon, password: secret}]}
devices:
  - {id: ups4, driver: modbus, profile: apc-smart-ups, target: "%s", unit_id: 1, poll: 1s}
failover:
  power: {ups: [ups4]}
`, t.TempDir(), nutPort, srv.Addr))

	testpeer.Eventually(t, 30*time.Second, "the Modbus UPS read online", func() bool {
		return readingText(s, "ups4", "ups.status") == "OL"
	})
	testpeer.Eventually(t, 30*time.Second, "upsc to show the Modbus UPS", func() bool {
		vars, err := testpeer.Upsc(t, "ups4", s.NUTAddr().String())
		return err == nil && vars["ups.status"] == "OL" && vars["ups.model"] == "Smart-UPS 750" && vars["battery.charge"] == "100"
	})

	// Mains lost (status bit 2, on battery) and shutdown imminent (signaling bit 1: LB).
	onBattery := strings.Replace(online, `{"address": 0, "type": "uint32", "value": 8194}`, `{"address": 0, "type": "uint32", "value": 4}`, 1)
	onBattery = strings.Replace(onBattery, `{"address": 18, "raw": [0]}`, `{"address": 18, "raw": [2]}`, 1)
	if strings.Count(onBattery, `"value": 4}`) != 1 || strings.Count(onBattery, `{"address": 18, "raw": [2]}`) != 2 {
		t.Fatal("the testdata changed: the status registers were not found")
	}
	srv.SetMap(t, onBattery)
	testpeer.Eventually(t, 30*time.Second, "the policy to order the shutdown", func() bool {
		fo := status(t, s)["failover"].(map[string]any)["power"].(map[string]any)
		return fo["state"] == "shutdown"
	})
	testpeer.Eventually(t, 30*time.Second, "FSD through NUT", func() bool {
		vars, err := testpeer.Upsc(t, "ups4", s.NUTAddr().String())
		return err == nil && vars["ups.status"] == "OB LB FSD"
	})
}

// TestModbusGeneratorStart: the generator controller is a Deep Sea GenComm controller over
// Modbus TCP (pymodbus serving the dse-gencomm profile's registers). Mains lost: the relay is
// energised; the engine still stopped generator_start_within later opens the critical
// generator-start incident; the engine reported running closes it.
func TestModbusGeneratorStart(t *testing.T) {
	b, err := os.ReadFile("../../sensors/modbus/testdata/dse-gencomm.json")
	if err != nil {
		t.Fatal(err)
	}
	running := string(b)
	stopped := strings.Replace(running, `{"address": 1408, "raw": [3]}`, `{"address": 1408, "raw": [0]}`, 1)
	if stopped == running {
		t.Fatal("the testdata changed: the engine state register was not found")
	}
	srv := testpeer.StartModbusTCP(t, stopped)
	s := runSite(t, fmt.Sprintf(`site: mb
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
devices:
  - id: ups1
    driver: sim.ups
    poll: 1s
    script:
      - {at: 1s, set: {ups.status: OB}}
  - {id: genset, driver: sim.relay, safe_state: "off", poll: 1s}
  - {id: gen-ctl, driver: modbus, profile: dse-gencomm, target: "%s", poll: 1s}
failover:
  power: {ups: [ups1], generator_relay: genset, generator_device: gen-ctl, generator_start_within: 3s, confirm_polls: 1}
`, t.TempDir(), srv.Addr))

	open := func() *incident.Incident {
		for _, in := range s.Incidents().OpenIncidents() {
			if in.Rule == failover.KeyGenStart {
				return &in
			}
		}
		return nil
	}
	testpeer.Eventually(t, 60*time.Second, "the generator-start incident", func() bool { return open() != nil })
	if in := open(); in.Severity != "critical" || !strings.Contains(in.Summary, "generator failed to start") {
		t.Errorf("incident %+v", in)
	}
	srv.SetMap(t, running)
	testpeer.Eventually(t, 60*time.Second, "the incident resolved once the engine runs", func() bool { return open() == nil })
	// The page's relay shows the engine beside it.
	testpeer.Eventually(t, 30*time.Second, "the engine state beside the relay", func() bool {
		for _, r := range status(t, s)["relays"].([]any) {
			if rm := r.(map[string]any); rm["id"] == "genset" {
				return rm["engine"] == "running, 230 V"
			}
		}
		return false
	})
}

package site

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
	online := strings.Replace(string(b), `{"address": 22, "raw": [4]}`, `{"address": 22, "raw": [0]}`, 1)
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
		return err == nil && vars["ups.status"] == "OL" && vars["ups.model"] == "Smart-UPS 1500" && vars["battery.charge"] == "100"
	})

	// Mains lost (status bit 2, on battery) and shutdown imminent (signaling bit 1: LB).
	onBattery := strings.Replace(online, `{"address": 0, "type": "uint32", "value": 2}`, `{"address": 0, "type": "uint32", "value": 4}`, 1)
	onBattery = strings.Replace(onBattery, `{"address": 18, "raw": [0]}`, `{"address": 18, "raw": [2]}`, 1)
	if onBattery == online {
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

package site

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

// runSite runs a site from YAML in-process and returns it once it listens.
func runSite(t *testing.T, yaml string) *Site {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return runSiteOpts(t, cfg, Options{Version: "test"})
}

func status(t *testing.T, s *Site) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + s.WebAddr().String() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func deviceReadings(st map[string]any, id string) map[string]any {
	for _, d := range st["devices"].([]any) {
		dm := d.(map[string]any)
		if dm["id"] == id {
			return dm["readings"].(map[string]any)
		}
	}
	return nil
}

func readingText(s *Site, id, metric string) string {
	r, _ := s.Store().Reading(id, metric)
	return r.String()
}

// sameAsUpsc checks that upsc shows every reading of the device with the value the status
// API shows.
func sameAsUpsc(t *testing.T, s *Site, id string) {
	t.Helper()
	var vars map[string]string
	testpeer.Eventually(t, 30*time.Second, "upsc "+id, func() bool {
		var err error
		vars, err = testpeer.Upsc(t, id, s.NUTAddr().String())
		return err == nil && vars["ups.status"] != ""
	})
	rs := deviceReadings(status(t, s), id)
	if len(rs) < 5 {
		t.Fatalf("%s has only %d readings", id, len(rs))
	}
	for m, r := range rs {
		rm := r.(map[string]any)
		if rm["quality"] == "error" || rm["value"] == "" {
			continue // upsd shows neither failed reads nor empty values (no alarm)
		}
		got, ok := vars[m]
		if !ok {
			t.Errorf("%s: upsc lacks %s (status has %v)", id, m, rm["value"])
			continue
		}
		switch v := rm["value"].(type) {
		case string:
			if got != v {
				t.Errorf("%s %s: upsc %q, status %q", id, m, got, v)
			}
		case float64:
			f, err := strconv.ParseFloat(got, 64)
			if err != nil || f != v {
				t.Errorf("%s %s: upsc %q, status %v", id, m, got, v)
			}
		}
	}
}

// TestUPSEndToEnd: the Go Megatec emulator on a pty and snmpsim serving a UPS-MIB walk, read
// by the megatec and upsmib drivers; NUT's own upsc agrees with the status API; the emulator
// going OB LB and snmpset of upsOutputSource to battery(5) each give an incident on a real
// mosquitto; the power policy starts the generator and orders the shutdown; upsc sees FSD.
func TestUPSEndToEnd(t *testing.T) {
	emu := upsemu.StartT(t)
	walk, _ := filepath.Abs("../../sensors/upsmib/testdata/sim_writable.snmprec")
	snmp := testpeer.StartSnmpsim(t, walk)
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "")
	nutPort := testpeer.FreePort(t)
	const poll = time.Second
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"], telemetry_interval: 1s}
nut: {listen: "127.0.0.1:%d", users: [{name: upsmon, password: secret}]}
devices:
  - {id: ups1, driver: megatec, port: %s, poll: %s}
  - {id: ups2, driver: upsmib, target: "%s", community: sim_writable, version: 2c, poll: %s}
  - {id: genset, driver: sim.relay, safe_state: "off"}
rules:
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB}
  - {name: ups2-on-battery, device: ups2, metric: ups.status, status_has: OB}
failover:
  power: {ups: [ups1], generator_relay: genset, confirm_polls: 2}
`, t.TempDir(), m.URL, nutPort, emu.Path(), poll, snmp, poll))

	testpeer.Eventually(t, 30*time.Second, "both UPSes read", func() bool {
		return readingText(s, "ups1", "ups.status") == "OL" && readingText(s, "ups2", "ups.status") == "OL"
	})
	r, _ := s.Store().Reading("ups1", "input.voltage")
	if r.Value != upsemu.Defaults.InputVoltage {
		t.Fatalf("ups1 input.voltage %v, emulator %v", r.Value, upsemu.Defaults.InputVoltage)
	}
	sameAsUpsc(t, s, "ups1")
	sameAsUpsc(t, s, "ups2")

	// Utility fail + battery low on the serial UPS.
	switched := time.Now()
	emu.SetOnBattery(true)
	emu.SetLowBattery(true)
	testpeer.Eventually(t, 30*time.Second, "the ups1-on-battery incident on mosquitto", func() bool {
		return len(sub.Matching("/incidents", `"rule":"ups1-on-battery"`, `"event":"opened"`)) == 1
	})
	var ev struct {
		TS    time.Time `json:"ts"`
		Value string    `json:"value"`
	}
	json.Unmarshal([]byte(sub.Matching("/incidents", `"rule":"ups1-on-battery"`)[0]), &ev)
	if ev.Value != "OB LB" {
		t.Errorf("incident value %q, want OB LB", ev.Value)
	}
	// The daemon's decision came within two poll intervals of the switch (broker delivery
	// is not counted: the machines are shared).
	if d := ev.TS.Sub(switched); d > 2*poll+200*time.Millisecond {
		t.Errorf("incident raised %v after the switch, want within 2 polls (%v)", d, 2*poll)
	}
	testpeer.Eventually(t, 30*time.Second, "generator relay on and policy in shutdown", func() bool {
		st := status(t, s)
		fo := st["failover"].(map[string]any)["power"].(map[string]any)
		relays := st["relays"].([]any)
		return fo["state"] == "shutdown" && relays[0].(map[string]any)["on"] == true
	})
	// The generator relay went on one poll after OB was first read (the confirmation poll;
	// a second poll of slack for a loaded machine).
	var relayAt time.Time
	for _, r := range status(t, s)["relays"].([]any) {
		if rm := r.(map[string]any); rm["id"] == "genset" {
			relayAt, _ = time.Parse(time.RFC3339, rm["changed"].(string))
		}
	}
	if d := relayAt.Sub(ev.TS); d < 0 || d > 2*poll {
		t.Errorf("generator relay on %v after OB was first read, want within one poll (%v)", d, poll)
	}
	testpeer.Eventually(t, 30*time.Second, "FSD through NUT", func() bool {
		vars, err := testpeer.Upsc(t, "ups1", s.NUTAddr().String())
		return err == nil && vars["ups.status"] == "OB LB FSD"
	})
	if len(sub.Matching("/incidents", `"rule":"power:shutdown"`, `"severity":"critical"`)) == 0 {
		testpeer.Eventually(t, 20*time.Second, "the shutdown incident on mosquitto", func() bool {
			return len(sub.Matching("/incidents", `"rule":"power:shutdown"`, `"severity":"critical"`)) > 0
		})
	}

	// The KPIs see the outage and the incidents; R/kpis is retained on the broker.
	resp, err := http.Get("http://" + s.WebAddr().String() + "/api/v1/kpis")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Windows map[string]struct {
			Incidents map[string]int `json:"incidents"`
			MainsPct  *float64       `json:"mains_availability_pct"`
		} `json:"windows"`
	}
	json.NewDecoder(resp.Body).Decode(&k)
	resp.Body.Close()
	day := k.Windows["24h"]
	if day.MainsPct == nil || *day.MainsPct >= 100 || day.Incidents["critical"] < 2 || len(k.Windows) != 3 {
		t.Errorf("kpis after an outage: %+v", k)
	}
	testpeer.Eventually(t, 20*time.Second, "retained R/kpis", func() bool { return len(sub.Matching("/kpis", `"windows"`)) > 0 })

	// The SNMP UPS goes to battery through snmpsim's writecache.
	testpeer.SnmpSet(t, snmp, "sim_writable", "1.3.6.1.2.1.33.1.4.1.0", "i", "5")
	testpeer.Eventually(t, 30*time.Second, "the ups2-on-battery incident on mosquitto", func() bool {
		return len(sub.Matching("/incidents", `"rule":"ups2-on-battery"`, `"event":"opened"`)) == 1
	})
	if st := readingText(s, "ups2", "ups.status"); st != "OB" {
		t.Errorf("ups2 status %q, want OB", st)
	}
}

// TestUpsmonShutsDownFromEmulator: emulator → rackwatch → three stock upsmon secondaries.
func TestUpsmonShutsDownFromEmulator(t *testing.T) {
	unshare, upsmon := testpeer.UpsmonPeers(t)
	emu := upsemu.StartT(t)
	nutPort := testpeer.FreePort(t)
	s := runSite(t, fmt.Sprintf(`site: e2e
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
nut: {listen: "127.0.0.1:%d", users: [{name: monuser, password: secret}]}
devices:
  - {id: ups1, driver: megatec, port: %s, poll: 1s}
`, t.TempDir(), nutPort, emu.Path()))
	testpeer.Eventually(t, 30*time.Second, "ups1 read", func() bool { return readingText(s, "ups1", "ups.status") == "OL" })
	var flags []string
	for range 3 {
		flags = append(flags, testpeer.StartUpsmon(t, unshare, upsmon, testpeer.Upsmon{UPS: fmt.Sprintf("ups1@127.0.0.1:%d", nutPort), User: "monuser", Password: "secret", Role: "secondary"}))
	}
	testpeer.Eventually(t, 30*time.Second, "three upsmon logged in", func() bool {
		return len(status(t, s)["nut"].(map[string]any)["clients"].([]any)) == 3
	})
	time.Sleep(2500 * time.Millisecond) // each upsmon polls at least twice while OL
	for _, f := range flags {
		if _, err := os.Stat(f); err == nil {
			t.Fatal("upsmon shut down while the UPS was on mains")
		}
	}
	emu.SetOnBattery(true)
	emu.SetLowBattery(true)
	testpeer.Eventually(t, 45*time.Second, "every upsmon to run its SHUTDOWNCMD", func() bool {
		for _, f := range flags {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	})
}

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// incidents returns the incidents the daemon's web server at addr shows (state open or all).
func incidents(addr, state string) ([]map[string]any, error) {
	var in []map[string]any
	err := getJSON("http://"+addr+"/api/v1/incidents?state="+state, &in)
	return in, err
}

// withRule counts the incidents of rule in list.
func withRule(list []map[string]any, rule string) int {
	n := 0
	for _, in := range list {
		if in["rule"] == rule {
			n++
		}
	}
	return n
}

func openReloadIncidents(t *testing.T, webAddr string) int {
	t.Helper()
	in, err := incidents(webAddr, "open")
	if err != nil {
		t.Fatalf("the page does not answer: %v", err)
	}
	return withRule(in, "config-reload-failed")
}

// takenPort holds a loopback port for the test's life.
func takenPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// reloadSite is a site with a UPS served over NUT; web is its web.listen port, extra is
// added to the end (rules).
func reloadSite(dir, brokerURL string, web, nutPort int, extra string) string {
	return fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
mqtt: {brokers: ["%s"], telemetry_interval: 1s}
nut: {listen: "127.0.0.1:%d"}
devices:
  - {id: ups1, driver: sim.ups, poll: 200ms}
  - {id: leak, driver: sim.contact, poll: 200ms, values: {contact: 1}}
%s`, dir, web, brokerURL, nutPort, extra)
}

// mqttClient is a plain client that publishes commands.
func mqttClient(t *testing.T, url string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("test-cmd-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// command publishes a command on R/cmd and waits for its reply on sub.
func command(t *testing.T, c mqtt.Client, sub *testpeer.Sub, id, body string) map[string]any {
	t.Helper()
	return commandAt(t, c, sub, "rackwatch/test/rack1", id, body)
}

func commandAt(t *testing.T, c mqtt.Client, sub *testpeer.Sub, root, id, body string) map[string]any {
	t.Helper()
	payload := fmt.Sprintf(`{"id":%q,%s}`, id, body)
	if tok := c.Publish(root+"/cmd", 1, false, payload); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", payload, tok.Error())
	}
	var reply map[string]any
	testpeer.Eventually(t, 60*time.Second, "the reply to "+id, func() bool {
		for _, p := range sub.Matching("/cmd/reply", `"id":"`+id+`"`) {
			return json.Unmarshal([]byte(p), &reply) == nil
		}
		return false
	})
	return reply
}

func upscOK(t *testing.T, nutAddr string) {
	t.Helper()
	vars, err := testpeer.Upsc(t, "ups1", nutAddr)
	if err != nil {
		t.Fatalf("NUT does not answer: %v", err)
	}
	if vars["ups.status"] != "OL" {
		t.Fatalf("upsc ups1: ups.status %q, want OL", vars["ups.status"])
	}
}

// TestReload runs one daemon through every kind of reload, by SIGHUP and by the MQTT reload
// command: a good one takes effect; an invalid config and a config that validates but cannot
// start (its web port is taken) are refused with a config-reload-failed incident while the
// running site keeps its page and its NUT server; the next good reload resolves the incident.
func TestReload(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "")
	bin := buildDaemon(t)
	dir := t.TempDir()
	web1, nutPort := testpeer.FreePort(t), testpeer.FreePort(t)
	nutAddr := fmt.Sprintf("127.0.0.1:%d", nutPort)
	web := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	cfg := writeConfig(t, dir, reloadSite(dir, m.URL, web1, nutPort, ""))
	d := startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 60*time.Second, "the page and NUT", func() bool {
		_, err := incidents(web(web1), "open")
		_, nerr := testpeer.Upsc(t, "ups1", nutAddr)
		return err == nil && nerr == nil && len(sub.Matching("/state", `"online"`)) > 0
	})
	rule := "rules:\n  - {name: leak, device: leak, metric: contact, equals: 1}\n"

	// (c) A good reload takes effect: a new rule opens its incident.
	d.write(reloadSite(dir, m.URL, web1, nutPort, rule))
	d.signal(syscall.SIGHUP)
	testpeer.Eventually(t, 60*time.Second, "the new rule's incident", func() bool {
		in, err := incidents(web(web1), "open")
		return err == nil && withRule(in, "leak") == 1
	})
	upscOK(t, nutAddr)

	// (d) An invalid config is refused; the running site stays.
	d.write(reloadSite(dir, m.URL, web1, nutPort, rule) + "colour: blue\n")
	d.signal(syscall.SIGHUP)
	testpeer.Eventually(t, 60*time.Second, "a config-reload-failed incident for the invalid config", func() bool {
		return openReloadIncidents(t, web(web1)) == 1
	})
	if !strings.Contains(d.out.String(), `colour`) {
		t.Errorf("the log does not say why the config was refused")
	}
	d.write(reloadSite(dir, m.URL, web1, nutPort, rule))
	d.signal(syscall.SIGHUP)
	testpeer.Eventually(t, 60*time.Second, "the incident resolved by a good reload", func() bool {
		return openReloadIncidents(t, web(web1)) == 0
	})

	// (a) By SIGHUP, a config that validates but cannot start: its web port is taken.
	taken := takenPort(t)
	d.write(reloadSite(dir, m.URL, taken, nutPort, rule))
	d.signal(syscall.SIGHUP)
	testpeer.Eventually(t, 60*time.Second, "a config-reload-failed incident for the taken port", func() bool {
		return openReloadIncidents(t, web(web1)) == 1
	})
	if !d.alive() {
		t.Fatal("the daemon exited after a refused reload")
	}
	upscOK(t, nutAddr)
	in, _ := incidents(web(web1), "open")
	if withRule(in, "leak") != 1 {
		t.Errorf("the running site lost its rule incident: %v", in)
	}
	web2 := testpeer.FreePort(t)
	d.write(reloadSite(dir, m.URL, web2, nutPort, rule))
	d.signal(syscall.SIGHUP)
	testpeer.Eventually(t, 60*time.Second, "the new page, and the incident resolved", func() bool {
		in, err := incidents(web(web2), "open")
		return err == nil && withRule(in, "config-reload-failed") == 0
	})
	upscOK(t, nutAddr)
	if _, err := incidents(web(web1), "open"); err == nil {
		t.Errorf("the old web port still answers after the reload moved it")
	}

	// (b) The same through the MQTT reload command, whose reply says what happened.
	c := mqttClient(t, m.URL)
	d.write(reloadSite(dir, m.URL, taken, nutPort, rule))
	r := command(t, c, sub, "reload-1", `"action":"reload"`)
	if r["ok"] != false || !strings.Contains(fmt.Sprint(r["error"]), "address already in use") {
		t.Fatalf("reply to a reload onto a taken port: %v", r)
	}
	if openReloadIncidents(t, web(web2)) != 1 {
		t.Errorf("no open config-reload-failed incident after a refused MQTT reload")
	}
	upscOK(t, nutAddr)
	web3 := testpeer.FreePort(t)
	d.write(reloadSite(dir, m.URL, web3, nutPort, rule))
	r = command(t, c, sub, "reload-2", `"action":"reload"`)
	if r["ok"] != true {
		t.Fatalf("reply to a good reload: %v", r)
	}
	// ok means the new config runs: no waiting.
	if openReloadIncidents(t, web(web3)) != 0 {
		t.Errorf("the config-reload-failed incident is still open after a good reload")
	}
	upscOK(t, nutAddr)

	// The refused reloads are incidents like any other: in the store, on MQTT.
	all, err := incidents(web(web3), "all")
	if err != nil {
		t.Fatal(err)
	}
	if n := withRule(all, "config-reload-failed"); n != 3 {
		t.Errorf("%d config-reload-failed incidents in the store, want 3 (all resolved)", n)
	}
	testpeer.Eventually(t, 60*time.Second, "the incident events on MQTT", func() bool {
		return len(sub.Matching("/incidents", `"rule":"config-reload-failed"`, `"event":"opened"`)) == 3 &&
			len(sub.Matching("/incidents", `"rule":"config-reload-failed"`, `"event":"resolved"`)) == 3
	})
	// Every reload kept the uplink: it never went offline.
	if off := sub.Matching("/state", `"offline"`); len(off) > 0 {
		t.Errorf("the uplink went offline during reloads: %v", off)
	}

	// A reload that changes the uplink's settings replies on the connection the command
	// came in on, then the uplink starts again under the new prefix and takes commands there.
	sub2 := m.Subscribe(t, "rw2/#", "")
	d.write(strings.Replace(reloadSite(dir, m.URL, web3, nutPort, rule), "telemetry_interval: 1s", "telemetry_interval: 1s, prefix: rw2", 1))
	if r := command(t, c, sub, "reload-3", `"action":"reload"`); r["ok"] != true {
		t.Fatalf("reply to a reload that changes the prefix: %v", r)
	}
	testpeer.Eventually(t, 60*time.Second, "online under the new prefix, offline under the old", func() bool {
		return len(sub2.Matching("rw2/test/rack1/state", `"online"`)) > 0 && len(sub.Matching("rackwatch/test/rack1/state", `"offline"`)) > 0
	})
	if r := commandAt(t, c, sub2, "rw2/test/rack1", "reload-4", `"action":"reload"`); r["ok"] != true {
		t.Fatalf("reply to a reload under the new prefix: %v", r)
	}
	upscOK(t, nutAddr)
	if !d.alive() {
		t.Fatal("the daemon exited")
	}
}

// stateMsg is an R/state payload.
type stateMsg struct {
	State  string    `json:"state"`
	TS     time.Time `json:"ts"`
	BootID string    `json:"boot_id"`
}

func states(t *testing.T, sub *testpeer.Sub) []stateMsg {
	var out []stateMsg
	for _, p := range sub.Matching("/state") {
		var s stateMsg
		if err := json.Unmarshal([]byte(p), &s); err != nil {
			t.Fatalf("bad state %q: %v", p, err)
		}
		out = append(out, s)
	}
	return out
}

// relayAt returns the relay readings of device id in telemetry payloads: value and ts.
func relayReadings(t *testing.T, payloads []string, id string) (vals []float64, ts []time.Time) {
	for _, p := range payloads {
		var m struct {
			Readings []struct {
				Device string    `json:"device"`
				Metric string    `json:"metric"`
				Value  any       `json:"value"`
				TS     time.Time `json:"ts"`
			} `json:"readings"`
		}
		if err := json.Unmarshal([]byte(p), &m); err != nil {
			t.Fatalf("bad telemetry %q: %v", p, err)
		}
		for _, r := range m.Readings {
			if r.Device == id && r.Metric == "relay" {
				v, _ := r.Value.(float64)
				vals, ts = append(vals, v), append(ts, r.TS)
			}
		}
	}
	return vals, ts
}

// TestCleanStop: SIGTERM leaves the relays in their safe state, the last readings queued and
// delivered, and offline published by the stop itself: on a subscription made after this
// run said online, with this run's boot_id and a time after the SIGTERM, so that neither the
// retained will of an earlier SIGKILL nor this run's own will (stamped at connect) can pass.
func TestCleanStop(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	bin := buildDaemon(t)
	dir := t.TempDir()
	webPort := testpeer.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
mqtt: {brokers: ["%s"], telemetry_interval: 300ms}
devices:
  - {id: crac, driver: sim.relay, safe_state: "off", poll: 200ms}
  - {id: inlet, driver: sim.env, poll: 200ms}
`, dir, webPort, m.URL))

	// A run killed: its will (offline, retained) is what a careless check would take.
	first := m.Subscribe(t, "rackwatch/test/rack1/state", "")
	d := startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 60*time.Second, "the first run online", func() bool {
		for _, s := range states(t, first) {
			if s.State == "online" {
				return true
			}
		}
		return false
	})
	d.stop(syscall.SIGKILL)
	testpeer.Eventually(t, 60*time.Second, "the killed run's will", func() bool {
		for _, s := range states(t, first) {
			if s.State == "offline" {
				return true
			}
		}
		return false
	})
	killedBoot := states(t, first)[0].BootID

	d = startDaemon(t, bin, cfg)
	var boot string
	testpeer.Eventually(t, 60*time.Second, "the second run online", func() bool {
		for _, s := range states(t, first) {
			if s.State == "online" && s.BootID != killedBoot {
				boot = s.BootID
				return true
			}
		}
		return false
	})
	// A fresh subscription: it starts with the retained online of this run.
	sub := m.Subscribe(t, "rackwatch/#", "")
	testpeer.Eventually(t, 30*time.Second, "the retained online on a fresh subscription", func() bool {
		st := states(t, sub)
		return len(st) > 0 && st[0].State == "online" && st[0].BootID == boot
	})
	c := mqttClient(t, m.URL)
	if r := command(t, c, sub, "crac-on", `"action":"relay","device":"crac","state":"on"`); r["ok"] != true {
		t.Fatalf("relay on: %v", r)
	}
	testpeer.Eventually(t, 30*time.Second, "telemetry with the relay on", func() bool {
		vals, _ := relayReadings(t, sub.Matching("/telemetry"), "crac")
		return len(vals) > 0 && vals[len(vals)-1] == 1
	})

	// Payload times have milliseconds.
	stopAt := time.Now().Truncate(time.Millisecond)
	d.stop(syscall.SIGTERM)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	testpeer.Eventually(t, 30*time.Second, "offline published by the stop", func() bool {
		st := states(t, sub)
		last := st[len(st)-1]
		return last.State == "offline" && last.BootID == boot && !last.TS.Before(stopAt)
	})

	// The last readings, taken after the relays went to their safe state, were queued: if
	// the stop did not deliver them, the next run does.
	restartAt := time.Now()
	startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 60*time.Second, "telemetry from the stop with the relay in its safe state", func() bool {
		vals, ts := relayReadings(t, sub.Matching("/telemetry"), "crac")
		for i := range vals {
			if vals[i] == 0 && !ts[i].Before(stopAt) && ts[i].Before(restartAt) {
				return true
			}
		}
		return false
	})
	all := seqs(t, sub.Matching("/telemetry"))
	seen := map[int]bool{}
	lo, hi := all[0], all[0]
	for _, s := range all {
		seen[s] = true
		lo, hi = min(lo, s), max(hi, s)
	}
	for i := lo; i <= hi; i++ {
		if !seen[i] {
			t.Fatalf("telemetry seq %d lost across the stop (have %d..%d)", i, lo, hi)
		}
	}
}

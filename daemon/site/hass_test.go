package site

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// haSensorUnits is what Home Assistant's sensor integration accepts: for each device class
// the units valid with it and the state classes (HA's sensor/const.py, DEVICE_CLASS_UNITS
// and DEVICE_CLASS_STATE_CLASSES; developers.home-assistant.io "Sensor entity").
var haSensorUnits = map[string]struct{ units, stateClasses []string }{
	"temperature":    {[]string{"°C", "°F", "K"}, []string{"measurement"}},
	"humidity":       {[]string{"%"}, []string{"measurement"}},
	"battery":        {[]string{"%"}, []string{"measurement"}},
	"voltage":        {[]string{"V", "mV", "µV", "kV", "MV"}, []string{"measurement"}},
	"current":        {[]string{"A", "mA"}, []string{"measurement"}},
	"power":          {[]string{"W", "kW", "mW", "MW", "GW", "TW"}, []string{"measurement"}},
	"energy":         {[]string{"Wh", "kWh", "MWh", "mWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ"}, []string{"total", "total_increasing"}},
	"frequency":      {[]string{"Hz", "kHz", "MHz", "GHz"}, []string{"measurement"}},
	"duration":       {[]string{"d", "h", "min", "s", "ms"}, []string{"measurement", "total", "total_increasing"}},
	"pressure":       {[]string{"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"}, []string{"measurement"}},
	"apparent_power": {[]string{"VA", "kVA"}, []string{"measurement"}},
	"reactive_power": {[]string{"var", "kvar"}, []string{"measurement"}},
}

// haMsg is one message as an MQTT client sees it.
type haMsg struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// haSub collects what a fresh subscriber (clean session) gets on topic.
type haSub struct {
	c    mqtt.Client
	mu   sync.Mutex
	msgs []haMsg
}

func subscribeRaw(t *testing.T, broker, topic string) *haSub {
	t.Helper()
	s := &haSub{}
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("hatest-%d", time.Now().UnixNano())).SetCleanSession(true)
	s.c = mqtt.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, haMsg{m.Topic(), bytes.Clone(m.Payload()), m.Retained()})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

func (s *haSub) all() []haMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// latest is the last payload per topic, and whether it came retained.
func (s *haSub) latest() map[string]haMsg {
	out := map[string]haMsg{}
	for _, m := range s.all() {
		out[m.Topic] = m
	}
	return out
}

func (s *haSub) publish(t *testing.T, topic string, retain bool, payload []byte) {
	t.Helper()
	if tok := s.c.Publish(topic, 1, retain, payload); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// jinja renders templates with Jinja2's sandbox, as Home Assistant does (its
// TemplateEnvironment is an ImmutableSandboxedEnvironment): each with value the payload and
// value_json the payload parsed, or with value set to a command's value.
func jinja(t *testing.T, jobs []map[string]string) []string {
	t.Helper()
	py := testpeer.Require(t, "/usr/bin/python3", "python3")
	if out, err := exec.Command(py, "-c", "import jinja2").CombinedOutput(); err != nil {
		testpeer.Require(t, "jinja2-is-not-importable:"+strings.TrimSpace(string(out)), "python3-jinja2")
	}
	const script = `
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment()
out = []
for job in json.load(sys.stdin):
    v = {"value": job.get("value", job.get("payload"))}
    if "payload" in job:
        v["value_json"] = json.loads(job["payload"])
    out.append(env.from_string(job["template"]).render(**v))
json.dump(out, sys.stdout)
`
	in, _ := json.Marshal(jobs)
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jinja2: %v", err)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestHomeAssistantDiscovery: a site with a UPS, an environment sensor and a relay publishes
// retained discovery configs whose classes and units HA accepts and whose templates, run
// through Jinja2 on the site's real telemetry, give its readings; HA's `online` makes it
// send them again; the switch's command, sent as HA would, switches the relay; a reload that
// drops a device clears its configs, and turning discovery off clears them all.
func TestHomeAssistantDiscovery(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	yaml := func(ha bool, inlet bool) string {
		y := fmt.Sprintf(`site: dc1
node: rack12
data_dir: %s
web: {listen: "%s"}
mqtt: {brokers: ["%s"], telemetry_interval: 300ms, queue_flush: 0s, homeassistant: %v}
devices:
  - {id: ups1, driver: sim.ups, poll: 100ms}
  - {id: genset, driver: sim.relay, safe_state: off, poll: 100ms}
`, dir, web, m.URL, ha)
		if inlet {
			y += "  - {id: inlet, driver: sim.env, poll: 100ms}\n"
		}
		return y
	}
	var cmu sync.Mutex
	next := yaml(true, true)
	load := func() (*config.Config, error) {
		cmu.Lock()
		defer cmu.Unlock()
		return config.Parse("test.yaml", []byte(next))
	}
	ready := make(chan *Site, 4)
	sv := NewSupervisor(load, Options{Version: "test", Ready: func(s *Site) { ready <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var site *Site
	select {
	case site = <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("no site ready in 60 s")
	}

	const root = "rackwatch/dc1/rack12"
	// What each reading must become: component, device class, state class, unit.
	type want struct{ component, class, stateClass, unit string }
	wants := map[string]want{
		"ups1/battery.charge":  {"sensor", "battery", "measurement", "%"},
		"ups1/battery.runtime": {"sensor", "duration", "measurement", "s"},
		"ups1/battery.voltage": {"sensor", "voltage", "measurement", "V"},
		"ups1/input.voltage":   {"sensor", "voltage", "measurement", "V"},
		"ups1/input.frequency": {"sensor", "frequency", "measurement", "Hz"},
		"ups1/output.voltage":  {"sensor", "voltage", "measurement", "V"},
		"ups1/ups.load":        {"sensor", "", "measurement", "%"},
		"ups1/ups.temperature": {"sensor", "temperature", "measurement", "°C"},
		"ups1/ups.status":      {"sensor", "", "", ""},
		"inlet/temperature":    {"sensor", "temperature", "measurement", "°C"},
		"inlet/humidity":       {"sensor", "humidity", "measurement", "%"},
		"genset/relay":         {"switch", "", "", ""},
	}
	type haConfig struct {
		Name             string `json:"name"`
		UniqueID         string `json:"unique_id"`
		StateTopic       string `json:"state_topic"`
		ValueTemplate    string `json:"value_template"`
		DeviceClass      string `json:"device_class"`
		StateClass       string `json:"state_class"`
		Unit             string `json:"unit_of_measurement"`
		CommandTopic     string `json:"command_topic"`
		CommandTemplate  string `json:"command_template"`
		PayloadOn        string `json:"payload_on"`
		PayloadOff       string `json:"payload_off"`
		AvailTopic       string `json:"availability_topic"`
		AvailTemplate    string `json:"availability_template"`
		PayloadAvailable string `json:"payload_available"`
		Device           struct {
			Identifiers []string `json:"identifiers"`
			Name        string   `json:"name"`
			Model       string   `json:"model"`
			ViaDevice   string   `json:"via_device"`
		} `json:"device"`
	}
	// configs reads a subscriber's latest non-empty configs, by device/metric.
	configs := func(s *haSub) (map[string]haConfig, map[string]haMsg) {
		out, msgs := map[string]haConfig{}, map[string]haMsg{}
		for topic, msg := range s.latest() {
			if len(msg.Payload) == 0 || !strings.HasSuffix(topic, "/config") {
				continue
			}
			var c haConfig
			if err := json.Unmarshal(msg.Payload, &c); err != nil {
				t.Fatalf("%s: %v", topic, err)
			}
			key := strings.TrimPrefix(c.UniqueID, "rackwatch:dc1/rack12/")
			out[key], msgs[key] = c, msg
		}
		return out, msgs
	}
	haveAll := func(got map[string]haConfig, keys ...string) bool {
		for _, k := range keys {
			if _, ok := got[k]; !ok {
				return false
			}
		}
		return true
	}
	var allKeys []string
	for k := range wants {
		allKeys = append(allKeys, k)
	}
	allKeys = append(allKeys, "uplink")

	first := subscribeRaw(t, m.URL, "homeassistant/#")
	testpeer.Eventually(t, 60*time.Second, "a config for every reading", func() bool {
		got, _ := configs(first)
		return haveAll(got, allKeys...)
	})
	resp, err := http.Get("http://" + site.WebAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("rackwatch_homeassistant_entities %d\n", len(allKeys)); !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	// A subscriber that comes later gets them from the broker: they are retained.
	later := subscribeRaw(t, m.URL, "homeassistant/#")
	testpeer.Eventually(t, 30*time.Second, "the configs retained", func() bool {
		got, _ := configs(later)
		return haveAll(got, allKeys...)
	})
	got, msgs := configs(later)
	for k, c := range got {
		if !msgs[k].Retained {
			t.Errorf("%s: config not retained", k)
		}
		if !strings.HasPrefix(msgs[k].Topic, "homeassistant/") || !strings.Contains(msgs[k].Topic, "/rackwatch_dc1_rack12/") {
			t.Errorf("%s: topic %s", k, msgs[k].Topic)
		}
		if k == "uplink" {
			if c.StateTopic != root+"/state" || c.PayloadOn != "online" || len(c.Device.Identifiers) != 1 || c.Device.Identifiers[0] != "rackwatch:dc1/rack12" {
				t.Errorf("uplink: %+v", c)
			}
			continue
		}
		w, ok := wants[k]
		if !ok {
			t.Errorf("unexpected entity %s", k)
			continue
		}
		component := strings.Split(msgs[k].Topic, "/")[1]
		if component != w.component || c.DeviceClass != w.class || c.StateClass != w.stateClass || c.Unit != w.unit {
			t.Errorf("%s: %s %q %q %q, want %s %q %q %q", k, component, c.DeviceClass, c.StateClass, c.Unit, w.component, w.class, w.stateClass, w.unit)
		}
		if c.DeviceClass != "" {
			ok := haSensorUnits[c.DeviceClass]
			if ok.units == nil {
				t.Errorf("%s: device class %q is not one of HA's sensor device classes", k, c.DeviceClass)
			} else if !slices.Contains(ok.units, c.Unit) || !slices.Contains(ok.stateClasses, c.StateClass) {
				t.Errorf("%s: HA does not accept unit %q / state class %q for %s (%v, %v)", k, c.Unit, c.StateClass, c.DeviceClass, ok.units, ok.stateClasses)
			}
		}
		dev := strings.Split(k, "/")[0]
		if c.StateTopic != root+"/telemetry" || c.AvailTopic != root+"/state" || c.PayloadAvailable != "online" {
			t.Errorf("%s: topics %q %q %q", k, c.StateTopic, c.AvailTopic, c.PayloadAvailable)
		}
		if len(c.Device.Identifiers) != 1 || c.Device.Identifiers[0] != "rackwatch:dc1/rack12/"+dev || c.Device.ViaDevice != "rackwatch:dc1/rack12" || c.Device.Model == "" {
			t.Errorf("%s: device %+v", k, c.Device)
		}
	}

	// The templates on real messages: R/state and one R/telemetry.
	tele := subscribeRaw(t, m.URL, root+"/#")
	var state, telemetry []byte
	testpeer.Eventually(t, 30*time.Second, "state and telemetry", func() bool {
		for _, msg := range tele.all() {
			switch msg.Topic {
			case root + "/state":
				state = msg.Payload
			case root + "/telemetry":
				telemetry = msg.Payload
			}
		}
		return state != nil && telemetry != nil && bytes.Contains(telemetry, []byte(`"inlet"`)) && bytes.Contains(telemetry, []byte(`"genset"`))
	})
	var tm struct {
		Readings []struct {
			Device, Metric string
			Value          any
		}
	}
	if err := json.Unmarshal(telemetry, &tm); err != nil {
		t.Fatal(err)
	}
	values := map[string]any{}
	for _, r := range tm.Readings {
		values[r.Device+"/"+r.Metric] = r.Value
	}
	var jobs []map[string]string
	var keys []string
	for k, c := range got {
		if k == "uplink" {
			continue
		}
		keys = append(keys, k)
		jobs = append(jobs, map[string]string{"template": c.ValueTemplate, "payload": string(telemetry)},
			map[string]string{"template": c.AvailTemplate, "payload": string(state)})
	}
	res := jinja(t, jobs)
	for i, k := range keys {
		v, r, avail := values[k], res[2*i], res[2*i+1]
		if avail != "online" {
			t.Errorf("%s: availability template gives %q", k, avail)
		}
		switch v := v.(type) {
		case float64:
			if k == "genset/relay" {
				if want := map[float64]string{0: "off", 1: "on"}[v]; r != want {
					t.Errorf("%s: template gives %q for %v, want %q", k, r, v, want)
				}
				continue
			}
			if f, err := strconv.ParseFloat(r, 64); err != nil || f != v {
				t.Errorf("%s: template gives %q, telemetry has %v", k, r, v)
			}
		case string:
			if r != v {
				t.Errorf("%s: template gives %q, telemetry has %q", k, r, v)
			}
		default:
			t.Errorf("%s: not in the telemetry message (%v)", k, v)
		}
	}

	// HA comes online: every config is sent again, live (not a retained leftover).
	before := map[string]int{}
	count := func(s *haSub) map[string]int {
		n := map[string]int{}
		for _, msg := range s.all() {
			if !msg.Retained && len(msg.Payload) > 0 && strings.HasSuffix(msg.Topic, "/config") {
				n[msg.Topic]++
			}
		}
		return n
	}
	before = count(later)
	later.publish(t, "homeassistant/status", false, []byte("online"))
	testpeer.Eventually(t, 60*time.Second, "every config sent again after HA's online", func() bool {
		n := count(later)
		for _, msg := range msgs {
			if n[msg.Topic] <= before[msg.Topic] {
				return false
			}
		}
		return true
	})

	// The switch, as HA drives it: its command template rendered with payload_on, sent to
	// its command topic.
	sw := got["genset/relay"]
	cmds := jinja(t, []map[string]string{{"template": sw.CommandTemplate, "value": sw.PayloadOn}, {"template": sw.CommandTemplate, "value": sw.PayloadOff}})
	relay := func() float64 { r, _ := site.Store().Reading("genset", "relay"); return r.Value }
	if relay() != 0 {
		t.Fatalf("relay starts at %v", relay())
	}
	later.publish(t, sw.CommandTopic, false, []byte(cmds[0]))
	testpeer.Eventually(t, 30*time.Second, "the relay on from the switch", func() bool { return relay() == 1 })
	later.publish(t, sw.CommandTopic, false, []byte(cmds[1]))
	testpeer.Eventually(t, 30*time.Second, "the relay off from the switch", func() bool { return relay() == 0 })
	// HA renders the template for each command: a new id, so rackwatch runs it.
	again := jinja(t, []map[string]string{{"template": sw.CommandTemplate, "value": sw.PayloadOn}})
	if again[0] == cmds[0] {
		t.Fatalf("the command template gives the same command twice: %s", again[0])
	}
	later.publish(t, sw.CommandTopic, false, []byte(again[0]))
	testpeer.Eventually(t, 30*time.Second, "the relay on again", func() bool { return relay() == 1 })

	// A reload without the inlet sensor clears its configs.
	inletTopics := []string{msgs["inlet/temperature"].Topic, msgs["inlet/humidity"].Topic}
	cmu.Lock()
	next = yaml(true, false)
	cmu.Unlock()
	if err := sv.Reload(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 60*time.Second, "the inlet's configs cleared", func() bool {
		l := later.latest()
		for _, tp := range inletTopics {
			if msg, ok := l[tp]; !ok || len(msg.Payload) != 0 {
				return false
			}
		}
		return true
	})
	fresh := subscribeRaw(t, m.URL, "homeassistant/#")
	testpeer.Eventually(t, 30*time.Second, "the others still retained", func() bool {
		got, _ := configs(fresh)
		return haveAll(got, "ups1/battery.charge", "genset/relay", "uplink")
	})
	if got, _ := configs(fresh); haveAll(got, "inlet/temperature") || haveAll(got, "inlet/humidity") {
		t.Error("the inlet's configs are still retained after the reload")
	}

	// Turning discovery off clears every config it published.
	cmu.Lock()
	next = yaml(false, false)
	cmu.Unlock()
	if err := sv.Reload(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 60*time.Second, "every config cleared", func() bool {
		l := later.latest()
		for _, msg := range msgs {
			if l[msg.Topic].Retained || len(l[msg.Topic].Payload) != 0 {
				return false
			}
		}
		return true
	})
	empty := subscribeRaw(t, m.URL, "homeassistant/#")
	// A subscriber made after the clears gets nothing retained: its SUBACK came after the
	// retained messages the broker would send, so a short look suffices here.
	end := subscribeRaw(t, m.URL, root+"/state")
	testpeer.Eventually(t, 30*time.Second, "a later subscription answered", func() bool { return len(end.all()) > 0 })
	if n := len(empty.all()); n != 0 {
		t.Errorf("%d configs still retained after homeassistant: false", n)
	}
}

package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
	_ "github.com/rackwatch/rackwatch/sensors/all"
	"github.com/rackwatch/rackwatch/sensors/sht3x"
)

func TestContractExampleAccepted(t *testing.T) {
	cfg, err := Load("testdata/contract.yaml")
	if err != nil {
		t.Fatalf("the CONTRACT.md example must be accepted as it stands:\n%v", err)
	}
	if cfg.Site != "dc1-hall2" || len(cfg.Devices) != 12 || cfg.Failover.Power == nil || cfg.Failover.Cooling == nil {
		t.Fatalf("decoded %+v", cfg)
	}
	if cfg.Devices[0].Poll != 2*time.Second || sensors.Opts[sht3x.Options](cfg.Devices[3]).Address != 0x44 {
		t.Errorf("devices decoded wrong: %+v", cfg.Devices[:5])
	}
	if cfg.Rules[1].Severity != "critical" {
		t.Errorf("a status_has rule without severity is critical, got %q", cfg.Rules[1].Severity)
	}
	if cfg.MQTT.ClientID != "rackwatch-dc1-hall2-rack12" {
		t.Errorf("client id default %q", cfg.MQTT.ClientID)
	}
}

func TestMinimalGetsDefaults(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte("site: a\nnode: b\ndevices:\n  - {id: u, driver: sim.ups}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Web.Listen != "127.0.0.1:8080" || cfg.Devices[0].Poll != 5*time.Second || cfg.NUT.Listen != "" || cfg.Traps.Listen != "" || cfg.DataDir == "" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestQueueFlush: absent means the default (held telemetry), 0 means every message is
// committed, a negative period is refused.
func TestQueueFlush(t *testing.T) {
	for src, want := range map[string]time.Duration{"": DefaultQueueFlush, "mqtt: {queue_flush: 0s}\n": 0, "mqtt: {queue_flush: 5m}\n": 5 * time.Minute} {
		cfg, err := Parse("q.yaml", []byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\n"+src))
		if err != nil {
			t.Fatal(err)
		}
		if *cfg.MQTT.QueueFlush != want {
			t.Errorf("%q: queue_flush %v, want %v", src, *cfg.MQTT.QueueFlush, want)
		}
	}
	_, err := Parse("q.yaml", []byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\nmqtt:\n  queue_flush: -1s\n"))
	if err == nil || !strings.Contains(err.Error(), "q.yaml:5: mqtt queue_flush must be 0") {
		t.Errorf("negative queue_flush: %v", err)
	}
}

func TestEveryProblemWithItsLine(t *testing.T) {
	_, err := Load("testdata/bad.yaml")
	if err == nil {
		t.Fatal("bad config accepted")
	}
	got := err.Error()
	for _, want := range []string{
		`testdata/bad.yaml:6: cannot read ` + "`2 seconds`" + ` as a duration`,
		`testdata/bad.yaml:7: unknown key "colour"`,
		`testdata/bad.yaml:9: rule "hot": no device "nosuch"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if n := len(err.(Problems)); n != 3 {
		t.Errorf("want 3 problems, got %d:\n%s", n, got)
	}
}

func TestSemanticProblems(t *testing.T) {
	src := `site: DC1
node: r
devices:
  - {id: ups1, driver: sim.ups}
  - {id: r1, driver: sim.relay, pin: GPIO1, baud: 9600}
  - {id: t1, driver: sim.env}
  - {id: t1, driver: nosuch}
rules:
  - {name: a, device: t1, metric: temperature, warn_above: 30, crit_above: 20}
  - {name: b, device: ups1, metric: ups.status, status_has: OB, warn_above: 3}
failover:
  power: {ups: [t1], generator_relay: ups1}
  cooling: {sensors: [t1], backup_relay: r1, on_above: 30, off_below: 31}
`
	_, err := Parse("s.yaml", []byte(src))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`s.yaml:1: site "DC1"`,
		`s.yaml:5: device "r1": the sim.relay driver takes no key "baud"`,
		`s.yaml:7: device id "t1" is used twice`,
		`s.yaml:7: device "t1": unknown driver "nosuch"`,
		`s.yaml:9: rule "a": crit_above (20) is below warn_above (30)`,
		`s.yaml:10: rule "b": give exactly one of`,
		`s.yaml:12: failover.power: "t1" is a sim.env, not a UPS`,
		`s.yaml:12: failover.power: "ups1" is a sim.ups, not a relay`,
		`s.yaml:13: failover.cooling: off_below (31) must be below on_above (30)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\n"))
	f.Add([]byte("devices: {x: 1}\nrules: [1, 2]\nfailover: {power: {ups: 3}}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("site: a\nnode: b\ndevices:\n  - &u {id: u, driver: sim.relay, pin: GPIO1}\n  - {<<: [*u, {poll: 1s}], id: v, script: [{at: 1s}]}\n"))
	f.Add([]byte("site: a\nnode: b\ndevices:\n  - &u {<<: [*u, {poll: 1s}], id: v, script: [{at: 1s}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse("f.yaml", b) // must not panic
	})
}

// TestMergeCycles: a device that merges itself gets nothing from it the second time, where it
// was a stack overflow (found by FuzzParse in make bench), and thirty devices each merging the
// one before twice are read at once, not in 2^30 steps.
func TestMergeCycles(t *testing.T) {
	if _, err := Parse("c.yaml", []byte("site: a\nnode: b\ndevices:\n  - &u {<<: [*u, {poll: 1s}], id: v, script: [{at: 1s}]}\n")); err == nil || !strings.Contains(err.Error(), "driver is required") {
		t.Errorf("a device that merges only itself and a poll: %v, want its missing driver", err)
	}
	cfg, err := Parse("c.yaml", []byte("site: a\nnode: b\ndevices:\n  - &u {<<: [*u, *u, {<<: [*u, *u]}, {poll: 3s}], id: v, driver: sim.ups}\n"))
	if err != nil || cfg.Devices[0].Poll != 3*time.Second {
		t.Errorf("a device that merges itself: %+v, %v", cfg, err)
	}
	var b strings.Builder
	b.WriteString("site: a\nnode: b\ndevices:\n  - &d0 {id: d0, driver: sim.ups, poll: 2s}\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "  - &d%d {<<: [*d%d, *d%d], id: d%d}\n", i, i-1, i-1, i)
	}
	cfg, err = Parse("deep.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Devices[30]; d.Driver != "sim.ups" || d.Poll != 2*time.Second {
		t.Errorf("d30 = %+v, want the sim.ups of d0 with its poll", d)
	}
}

// TestDeviceMergeKeys: a device built from an anchor (<<: *base) gets the common keys and the
// driver's keys of the base, its own winning.
func TestDeviceMergeKeys(t *testing.T) {
	src := `site: a
node: b
devices:
  - &sht {driver: sht3x, bus: "1", poll: 3s, id: inlet-a}
  - {<<: *sht, id: inlet-b, address: 0x45, poll: 4s}
`
	cfg, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil || len(cfg.Devices) != 2 {
		t.Fatalf("devices %+v", cfg)
	}
	a, b := cfg.Devices[0], cfg.Devices[1]
	oa, ob := sensors.Opts[sht3x.Options](a), sensors.Opts[sht3x.Options](b)
	if a.Driver != "sht3x" || a.Poll != 3*time.Second || oa.Bus != "1" || b.Poll != 4*time.Second || ob.Address != 0x45 || ob.Bus != "1" {
		t.Errorf("decoded %+v %+v / %+v %+v", a, oa, b, ob)
	}
}

// TestHomeassistant: off by default with HA's own prefix; a prefix that is not a topic is
// refused at its line.
func TestHomeassistant(t *testing.T) {
	cfg, err := Parse("h.yaml", []byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\nmqtt: {homeassistant: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MQTT.Homeassistant || cfg.MQTT.HomeassistantPrefix != "homeassistant" {
		t.Errorf("homeassistant %v prefix %q", cfg.MQTT.Homeassistant, cfg.MQTT.HomeassistantPrefix)
	}
	_, err = Parse("h.yaml", []byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\nmqtt:\n  homeassistant: true\n  homeassistant_prefix: \"ha/#\"\n"))
	if err == nil || !strings.Contains(err.Error(), "h.yaml:6: mqtt homeassistant_prefix") {
		t.Errorf("bad prefix: %v", err)
	}
	_, err = Parse("h.yaml", []byte("site: a\nnode: b\ndevices: [{id: u, driver: sim.ups}]\nmqtt:\n  format: sparkplug_b\n  homeassistant: true\n"))
	if err == nil || !strings.Contains(err.Error(), "h.yaml:6: mqtt homeassistant: Home Assistant's entities read R/telemetry") {
		t.Errorf("with sparkplug_b: %v", err)
	}
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/sensors"
)

// base is a valid config the bad-value cases add to; every case's bad line carries "# <-".
const base = "site: a\nnode: b\ndevices:\n  - {id: u, driver: sim.ups}\n"

// TestBadValues: each value that cannot work is refused as FILE:LINE: message, on the line
// that holds it.
func TestBadValues(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"web port too high", "web: {listen: \"127.0.0.1:99999\"} # <-", `web.listen "127.0.0.1:99999": write it as host:port`},
		{"web port negative", "web:\n  listen: \"127.0.0.1:-1\" # <-", `web.listen "127.0.0.1:-1"`},
		{"web no port", "web:\n  listen: 127.0.0.1 # <-", `web.listen "127.0.0.1"`},
		{"nut port", "nut:\n  listen: \"[::1]:65536\" # <-", `nut.listen "[::1]:65536"`},
		{"traps port", "traps:\n  listen: \"0.0.0.0:100000\" # <-", `traps.listen "0.0.0.0:100000"`},
		{"embedded broker port", "mqtt:\n  embedded_broker: \"127.0.0.1:70000\" # <-", `mqtt.embedded_broker "127.0.0.1:70000"`},
		{"embedded broker port 0", "mqtt:\n  embedded_broker: \"127.0.0.1:0\" # <-", `port 0 is not 1-65535`},
		{"broker port", "mqtt:\n  brokers:\n    - tcp://127.0.0.1:1883\n    - tcp://backup:99999 # <-", `broker "tcp://backup:99999": port 99999 is not 1-65535`},
		{"broker port 0", "mqtt: {brokers: [\"ssl://h:0\"]} # <-", `port 0 is not 1-65535`},
		{"broker no port", "mqtt: {brokers: [\"tcp://h\"]} # <-", `want scheme://host:port`},
		{"broker scheme", "mqtt:\n  brokers: [\"ws://h:80\"] # <-", `scheme "ws" not supported`},
		{"telemetry qos", "mqtt:\n  telemetry_qos: 2 # <-", `telemetry QoS 2 not supported (0 or 1)`},
		{"mqtt tls half", "mqtt:\n  brokers: [\"ssl://h:8883\"]\n  tls: {cert_file: /etc/c.pem} # <-", `mqtt.tls: cert_file and key_file go together`},
		{"web tls half", "web:\n  tls_cert: /etc/c.pem # <-", `web: tls_cert and tls_key go together`},
		{"nut tls half", "nut:\n  listen: \"127.0.0.1:0\"\n  tls_key: /etc/k.pem # <-", `nut: tls_cert and tls_key go together`},
		{"telemetry interval", "mqtt:\n  brokers: [\"tcp://h:1883\"]\n  telemetry_interval: 1ns # <-", `mqtt telemetry_interval 1ns is below the floor of 100ms`},
		{"prefix wildcard", "mqtt:\n  prefix: a/+ # <-", `mqtt prefix: "a/+" is not usable in a topic`},
		{"prefix NUL", "mqtt:\n  prefix: \"a\\0b\" # <-", `is not usable in a topic`},
		{"poll 1ns", "  - {id: ups1, driver: megatec, port: /dev/ttyUSB0, poll: 1ns} # <-", `device "ups1": 1ns is below the megatec driver's floor of 100ms`},
		{"poll 99ms", "  - id: pdu\n    driver: snmp\n    target: 192.0.2.1\n    poll: 99ms # <-\n    metrics: [{name: p, oid: 1.3.6.1.2.1.1.3.0}]", `99ms is below the snmp driver's floor of 100ms`},
		{"sim poll below 1ms", "  - {id: s, driver: sim.env, poll: 500us} # <-", `500µs is below the sim.env driver's floor of 1ms`},
		{"poll negative", "  - {id: c, driver: sim.contact, poll: -1s} # <-", `-1s is below`},
		{"warn_above nan", "rules:\n  - name: r\n    device: u\n    metric: battery.charge\n    warn_above: .nan # <-", `warn_above: .nan is not a finite number`},
		{"crit_above inf", "rules:\n  - {name: r, device: u, metric: battery.charge, crit_above: .inf} # <-", `crit_above: .inf is not a finite number`},
		{"warn_below -inf", "rules:\n  - {name: r, device: u, metric: battery.charge,\n     warn_below: -.Inf} # <-", `warn_below: -.Inf is not a finite number`},
		{"hysteresis nan", "rules:\n  - {name: r, device: u, metric: battery.charge, warn_above: 3, hysteresis: .NaN} # <-", `hysteresis: .NaN is not a finite number`},
		{"cooling on_above", "  - {id: t, driver: sim.env}\n  - {id: k, driver: sim.relay}\nfailover:\n  cooling:\n    sensors: [t]\n    backup_relay: k\n    on_above: .inf # <-", `on_above: .inf is not a finite number`},
		{"snmp scale", "  - id: pdu\n    driver: snmp\n    target: 192.0.2.1\n    metrics:\n      - {name: p, oid: 1.3.6.1.2.1.1.3.0, scale: .nan} # <-", `scale: .nan is not a finite number`},
		{"ina219 shunt", "  - {id: f, driver: ina219, bus: \"1\", shunt_ohms: .inf} # <-", `shunt_ohms: .inf is not a finite number`},
		{"sim value", "  - {id: s, driver: sim.env, values: {temperature: -.inf}} # <-", `temperature: -.inf is not a finite number`},
		{"snmp target port", "  - {id: x, driver: upsmib, target: \"192.0.2.1:99999\"} # <-", `target "192.0.2.1:99999": want host:port`},
		{"snmp target port 0", "  - id: x\n    driver: upsmib\n    target: \"192.0.2.1:0\" # <-", `port 0 is not 1-65535`},
		{"snmp version", "  - id: x\n    driver: upsmib\n    target: 192.0.2.1\n    version: \"4\" # <-", `unknown version "4"`},
		{"snmp v3 without user", "  - id: x\n    driver: upsmib\n    target: 192.0.2.1\n    version: \"3\" # <-", `version 3 needs a v3 user`},
		{"snmp v3 protocol", "  - id: x\n    driver: upsmib\n    target: 192.0.2.1\n    v3: {user: u, auth_protocol: ROT13, auth_password: secret12} # <-", `unknown SNMPv3 auth protocol "ROT13"`},
		{"snmp oid", "  - id: pdu\n    driver: snmp\n    target: 192.0.2.1\n    metrics: [{name: p, oid: sysUpTime}] # <-", `oid "sysUpTime" is not a numeric OID`},
		{"sht3x address", "  - id: t\n    driver: sht3x\n    bus: \"1\"\n    address: 0x50 # <-", `sht3x: address 0x50: an SHT3x is at 0x44 or 0x45`},
		{"bme280 address", "  - {id: t, driver: bme280, bus: \"1\", address: 0x44} # <-", `a BME280 is at 0x76 or 0x77`},
		{"ina219 shunt", "  - id: f\n    driver: ina219\n    bus: \"1\"\n    shunt_ohms: -0.1 # <-", `shunt resistance must be positive`},
		{"megatec baud", "  - id: m\n    driver: megatec\n    port: /dev/ttyUSB0\n    baud: 12345 # <-", `baud 12345 is not a serial speed`},
		{"unknown driver", "  - {id: x, driver: " + strings.Repeat("z", 200) + "} # <-", `unknown driver "` + strings.Repeat("z", MaxShown) + `…" (known: ` + strings.Join(sensors.Drivers(), ", ") + ")"},
		{"negative retention", "incidents:\n  max_resolved: 5\n  retention: -24h # <-", `incidents.retention: -24h must not be negative`},
		{"negative max_conns", "nut:\n  listen: \"127.0.0.1:3493\"\n  max_conns: -1 # <-", `nut.max_conns: -1 must not be negative`},
		{"negative script step", "  - id: s\n    driver: sim.ups\n    script:\n      - {at: -5s, set: {ups.status: OB}} # <-", `devices.1.script.0.at: -5s must not be negative`},
		{"negative cooldown", "failover:\n  power:\n    ups: [u]\n    generator_cooldown: -1m # <-", `failover.power.generator_cooldown: -1m must not be negative`},
		{"relay active", "  - id: k\n    driver: relay\n    pin: GPIO5\n    active: sideways # <-", `device "k": relay: gpio: active is high or low, not "sideways"`},
		{"sim relay safe_state", "  - id: k\n    driver: sim.relay\n    safe_state: maybe # <-\n    active: low", `safe_state is on or off, not "maybe"`},
		{"contact debounce", "  - id: d\n    driver: contact\n    pin: GPIO6\n    debounce: -5ms # <-", `debounce -5ms is negative`},
		{"nut user twice", "nut:\n  users:\n    - {name: m, password: x}\n    - {name: m, password: y} # <-", `nut: user m: defined twice`},
		{"nut upsmon", "nut:\n  users:\n    - {name: m, password: x, upsmon: boss} # <-", `upsmon "boss": want primary, secondary or none`},
		{"nut no password", "nut:\n  users:\n    - {name: m} # <-", `nut: user m: no password`},
		{"trap user engine id", "traps:\n  listen: \"127.0.0.1:0\"\n  users:\n    - {user: u, auth_protocol: SHA, auth_password: secret12} # <-", `user and engine_id are required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := base + tc.yaml + "\n" // base ends in the devices list: "  - " lines add devices
			line := 0
			for i, l := range strings.Split(src, "\n") {
				if strings.Contains(l, "# <-") {
					line = i + 1
				}
			}
			_, err := Parse("t.yaml", []byte(src))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("accepted:\n%s", src)
			}
			for _, p := range ps {
				if p.Line == line && strings.Contains(p.Msg, tc.want) {
					if got := p.Error(); !strings.HasPrefix(got, "t.yaml:") {
						t.Errorf("not FILE:LINE: %q", got)
					}
					return
				}
			}
			t.Errorf("want t.yaml:%d: …%s…, got:\n%v\nin:\n%s", line, tc.want, err, src)
		})
	}
}

// TestLimitsLeaveGoodValues: the floor and the ranges do not refuse what works.
func TestLimitsLeaveGoodValues(t *testing.T) {
	src := `site: a
node: b
web: {listen: "127.0.0.1:0"}
nut:
  listen: "[::1]:65535"
  users: [{name: m, password: x, upsmon: none}, {name: p, password_file: /nonexistent, upsmon: master}]
traps:
  listen: "0.0.0.0:162"
  users: [{user: u, auth_protocol: SHA, auth_password_file: /nonexistent, engine_id: "0x8000000001020304"}]
mqtt:
  brokers: ["tcp://h:1", "mqtts://h:65535"]
  telemetry_qos: 0
devices:
  - {id: u, driver: sim.ups, poll: 1ms}
  - {id: m, driver: megatec, port: /dev/nonexistent, poll: 100ms}
  - {id: x, driver: upsmib, target: 192.0.2.1, version: "2"}
rules:
  - {name: r, device: u, metric: battery.charge, warn_below: -1e300, crit_below: -1.5e300}
`
	if _, err := Parse("g.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
}

// TestLongValuesCut: a long value is repeated in a message only up to MaxShown characters.
func TestLongValuesCut(t *testing.T) {
	long := strings.Repeat("X", 500_000)
	for name, src := range map[string]string{
		"value":       "site: " + long + "\nnode: b\ndevices: [{id: u, driver: sim.ups}]\n",
		"key":         "site: a\nnode: b\n" + long[:1000] + ": 1\ndevices: [{id: u, driver: sim.ups}]\n", // YAML keys end at 1024
		"duration":    "site: a\nnode: b\ndevices: [{id: u, driver: sim.ups, poll: " + long + "}]\n",
		"broker":      "site: a\nnode: b\nmqtt: {brokers: [\"tcp://" + long + "\"]}\ndevices: [{id: u, driver: sim.ups}]\n",
		"listen port": "site: a\nnode: b\nweb: {listen: \"h:" + long + "\"}\ndevices: [{id: u, driver: sim.ups}]\n",
	} {
		_, err := Parse("l.yaml", []byte(src))
		t.Logf("%s: %v", name, err)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if msg := err.Error(); len(msg) > 500 || !strings.Contains(msg, "XXX") || strings.Contains(msg, strings.Repeat("X", MaxShown+1)) {
			t.Errorf("%s: %d bytes of message: %.300s", name, len(msg), msg)
		}
	}
}

// TestTooLarge: a file over MaxBytes is refused before it is parsed, read no further than
// the limit.
func TestTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	b := []byte(base + "description: " + strings.Repeat("y", 50<<20) + "\n")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path+": larger than 1048576 bytes (1 MiB)") {
		t.Fatalf("got %v", err)
	}
	if len(err.Error()) > 300 {
		t.Errorf("message of %d bytes", len(err.Error()))
	}
	if _, err := Parse("exact.yaml", append([]byte(base+"#"), make([]byte, MaxBytes-len(base)-1)...)); err != nil && strings.Contains(err.Error(), "larger than") {
		t.Errorf("a file of exactly MaxBytes is refused: %v", err)
	}
}

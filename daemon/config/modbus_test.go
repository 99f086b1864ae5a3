package config

import (
	"strings"
	"testing"
)

func TestModbusKeys(t *testing.T) {
	src := `site: s
node: n
devices:
  - {id: ups3, driver: modbus, profile: apc-smart-ups, port: /dev/ttyUSB1, unit_id: 1}
  - id: m1
    driver: modbus
    target: "127.0.0.1:502"
    parity: even
    registers:
      - {name: v, table: inputs, address: 0}
      - {name: s, type: string}
      - {name: w, type: float32, word_order: middle, colour: red}
      - {name: c, table: coil, address: 70000}
  - {id: m2, driver: modbus, port: /dev/ttyUSB1, profile: sdm999}
  - {id: gen, driver: modbus, target: "127.0.0.1:502", relay: {table: coil, address: 3}, safe_state: off}
  - {id: m3, driver: modbus, target: "127.0.0.1:502", profile: sdm630}
  - {id: ups4, driver: modbus, target: "127.0.0.1:502", profile: apc-smart-ups, relay: {address: 1}, safe_state: maybe}
failover:
  power: {ups: [ups3, m3], generator_relay: gen}
`
	_, err := Parse("m.yaml", []byte(src))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`m.yaml:8: device "m1": parity and stop_bits apply to a serial port only`,
		`m.yaml:10: device "m1": table is holding, input, coil or discrete, not "inputs"`,
		`m.yaml:11: device "m1": a string needs count`,
		`m.yaml:12: device "m1": word_order is high_first or low_first, not "middle"`,
		`m.yaml:12: unknown key "colour"`,
		`m.yaml:13: device "m1": address 70000 is outside 0 to 65535`,
		`m.yaml:14: device "m2": no profile "sdm999" (known: apc-smart-ups, dse-gencomm, sdm120, sdm630)`,
		`m.yaml:17: device "ups4": a device with a UPS profile is a UPS, not a relay`,
		`m.yaml:17: device "ups4": safe_state is on or off, not "maybe"`,
		`m.yaml:19: failover.power: "m3" is a modbus, not a UPS`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	for _, wrong := range []string{`"ups3" is a modbus`, `"gen" is a modbus`} {
		if strings.Contains(err.Error(), wrong) {
			t.Errorf("%s: a UPS profile is a UPS and a relay entry a relay:\n%v", wrong, err)
		}
	}
}

// A driver's KeyError may point inside a list: the step out of order, not the script key.
func TestKeyErrorInList(t *testing.T) {
	src := `site: s
node: n
devices:
  - id: m
    driver: sim.env
    script:
      - {at: 10s, set: {temperature: 30}}
      - {at: 5s, set: {temperature: 31}}
`
	_, err := Parse("s.yaml", []byte(src))
	if want := `s.yaml:8: device "m": script steps must be in time order`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want %q, got:\n%v", want, err)
	}
}

package modbus

import (
	"strings"
	"time"

	mbdrv "github.com/rackwatch/rackwatch/drivers/modbus"
	"github.com/rackwatch/rackwatch/sensors"
)

// profile is the register map of a known device.
type profile struct {
	points []point
	// derive makes the readings that need several registers (a UPS's status word).
	derive func(id string, v map[string]value, ts time.Time) []sensors.Reading
	// class is what the device is to the daemon: a UPS profile's device is served over NUT
	// and may be watched by failover.power.
	class sensors.Class
}

var profiles = map[string]*profile{
	"apc-smart-ups": apcSmartUPS,
	"sdm630":        sdm630,
	"sdm120":        sdm120,
	"dse-gencomm":   dseGenComm,
}

func reg(name, unit string, table mbdrv.Table, addr uint16, typ mbdrv.Type, scale float64) point {
	return point{name: name, unit: unit, span: mbdrv.Span{Table: table, Addr: addr, Count: uint16(typ.Registers(0))}, typ: typ, scale: scale}
}

func str(name string, addr uint16, count int) point {
	return point{name: name, span: mbdrv.Span{Table: mbdrv.Holding, Addr: addr, Count: uint16(count)}, typ: mbdrv.String, scale: 1}
}

func internal(p point) point { p.internal = true; return p }

func sentinel(p point, n int) point { p.sentinels = n; return p }

// apcSmartUPS follows NUT's drivers/apc_modbus.c (the map APC publishes for Smart-UPS with
// Modbus, e.g. SMT/SMX/SRT on the network card or the serial port): holding registers, high
// word first; status bits are numbered from the least significant bit of the 32-bit status
// at 0–1.
var apcSmartUPS = &profile{
	class: sensors.ClassUPS,
	points: []point{
		internal(reg("_status", "", mbdrv.Holding, 0, mbdrv.Uint32, 1)),
		internal(reg("_signaling", "", mbdrv.Holding, 18, mbdrv.Uint16, 1)),
		internal(reg("_battery_error", "", mbdrv.Holding, 22, mbdrv.Uint16, 1)),
		reg("battery.runtime", "s", mbdrv.Holding, 128, mbdrv.Uint32, 1),
		reg("battery.charge", "%", mbdrv.Holding, 130, mbdrv.Uint16, 1.0/512),
		reg("battery.voltage", "V", mbdrv.Holding, 131, mbdrv.Int16, 1.0/32),
		reg("battery.temperature", "°C", mbdrv.Holding, 135, mbdrv.Int16, 1.0/128),
		reg("ups.load", "%", mbdrv.Holding, 136, mbdrv.Uint16, 1.0/256),
		reg("output.current", "A", mbdrv.Holding, 140, mbdrv.Uint16, 1.0/32),
		reg("output.voltage", "V", mbdrv.Holding, 142, mbdrv.Uint16, 1.0/64),
		reg("output.frequency", "Hz", mbdrv.Holding, 144, mbdrv.Uint16, 1.0/128),
		internal(reg("_input_status", "", mbdrv.Holding, 150, mbdrv.Uint16, 1)),
		sentinel(reg("input.voltage", "V", mbdrv.Holding, 151, mbdrv.Uint16, 1.0/64), 1),
		str("ups.model", 532, 16),
		str("ups.serial", 564, 8),
	},
	derive: apcStatus,
}

// APC status bits (apc_modbus.c's APC_MODBUS_STATUS_*, SIGNALING, BATTERY_ERROR, INPUT_STATUS).
const (
	apcOnline     = 1 << 1
	apcOnBattery  = 1 << 2
	apcBypass     = 1 << 3
	apcOutputOff  = 1 << 4
	apcOverload   = 1 << 21
	apcShutdown   = 1 << 1 // signaling: shutdown imminent
	apcReplace    = 1 << 2 // battery error: replace battery
	apcInputBoost = 1 << 5
	apcInputTrim  = 1 << 6
)

// apcStatus writes ups.status as NUT does: OL/OB, then LB, RB, BYPASS, OVER, TRIM, BOOST, OFF.
func apcStatus(id string, v map[string]value, ts time.Time) []sensors.Reading {
	st := v["_status"]
	if st.err != nil {
		return []sensors.Reading{sensors.Failed(id, "ups.status", "", ts), sensors.Text(id, "ups.mfr", "APC", ts)}
	}
	bits := uint32(st.num)
	has := func(name string, bit uint32) bool {
		x := v[name]
		return x.err == nil && uint32(x.num)&bit != 0
	}
	var flags []string
	switch {
	case bits&apcOnBattery != 0:
		flags = append(flags, "OB")
	case bits&apcOnline != 0:
		flags = append(flags, "OL")
	}
	if has("_signaling", apcShutdown) {
		flags = append(flags, "LB")
	}
	if has("_battery_error", apcReplace) {
		flags = append(flags, "RB")
	}
	if bits&apcBypass != 0 {
		flags = append(flags, "BYPASS")
	}
	if bits&apcOverload != 0 {
		flags = append(flags, "OVER")
	}
	if has("_input_status", apcInputTrim) {
		flags = append(flags, "TRIM")
	}
	if has("_input_status", apcInputBoost) {
		flags = append(flags, "BOOST")
	}
	if bits&apcOutputOff != 0 {
		flags = append(flags, "OFF")
	}
	return []sensors.Reading{sensors.Text(id, "ups.status", strings.Join(flags, " "), ts), sensors.Text(id, "ups.mfr", "APC", ts)}
}

// sdm630 follows Eastron's SDM630 Modbus protocol (input registers, IEEE 754 float32, high
// word first), as mbmd and ESPHome's sdm_meter read it. Energy is kept in Wh (kWh × 1000),
// as CONTRACT.md §3 names it.
var sdm630 = &profile{class: sensors.ClassPower, points: []point{
	reg("voltage.l1", "V", mbdrv.Input, 0x00, mbdrv.Float32, 1),
	reg("voltage.l2", "V", mbdrv.Input, 0x02, mbdrv.Float32, 1),
	reg("voltage.l3", "V", mbdrv.Input, 0x04, mbdrv.Float32, 1),
	reg("current.l1", "A", mbdrv.Input, 0x06, mbdrv.Float32, 1),
	reg("current.l2", "A", mbdrv.Input, 0x08, mbdrv.Float32, 1),
	reg("current.l3", "A", mbdrv.Input, 0x0A, mbdrv.Float32, 1),
	reg("power.l1", "W", mbdrv.Input, 0x0C, mbdrv.Float32, 1),
	reg("power.l2", "W", mbdrv.Input, 0x0E, mbdrv.Float32, 1),
	reg("power.l3", "W", mbdrv.Input, 0x10, mbdrv.Float32, 1),
	reg("voltage", "V", mbdrv.Input, 0x2A, mbdrv.Float32, 1), // average line to neutral
	reg("current", "A", mbdrv.Input, 0x30, mbdrv.Float32, 1), // sum of line currents
	reg("power", "W", mbdrv.Input, 0x34, mbdrv.Float32, 1),   // total system power
	reg("frequency", "Hz", mbdrv.Input, 0x46, mbdrv.Float32, 1),
	reg("energy.import", "Wh", mbdrv.Input, 0x48, mbdrv.Float32, 1000),
	reg("energy.export", "Wh", mbdrv.Input, 0x4A, mbdrv.Float32, 1000),
	reg("energy", "Wh", mbdrv.Input, 0x156, mbdrv.Float32, 1000),
}}

// sdm120 is the single-phase SDM120, which keeps the SDM630's offsets for phase 1.
var sdm120 = &profile{class: sensors.ClassPower, points: []point{
	reg("voltage", "V", mbdrv.Input, 0x00, mbdrv.Float32, 1),
	reg("current", "A", mbdrv.Input, 0x06, mbdrv.Float32, 1),
	reg("power", "W", mbdrv.Input, 0x0C, mbdrv.Float32, 1),
	reg("frequency", "Hz", mbdrv.Input, 0x46, mbdrv.Float32, 1),
	reg("energy.import", "Wh", mbdrv.Input, 0x48, mbdrv.Float32, 1000),
	reg("energy.export", "Wh", mbdrv.Input, 0x4A, mbdrv.Float32, 1000),
	reg("energy", "Wh", mbdrv.Input, 0x156, mbdrv.Float32, 1000),
}}

// dseAlarms are GenComm page 8's "old alarm system" conditions from 2049, four 4-bit codes per
// register, the first in the top nibble (as Victron's dbus-modbus-client dse.py unpacks them).
var dseAlarms = []string{
	"emergency_stop", "low_oil_pressure", "high_coolant_temperature", "low_coolant_temperature",
	"under_speed", "over_speed", "generator_under_frequency", "generator_over_frequency",
	"generator_low_voltage", "generator_high_voltage", "battery_low_voltage", "battery_high_voltage",
	"charge_alternator_failure", "fail_to_start", "fail_to_stop", "generator_fail_to_close",
	"mains_fail_to_close", "oil_pressure_sender_fault", "loss_of_magnetic_pickup", "magnetic_pickup_open_circuit",
}

// dseGenComm follows Deep Sea Electronics' GenComm standard (holding registers, address =
// page × 256 + offset, 32-bit values high word first, the top 8 values of each type sentinels)
// as Victron's dbus-modbus-client (dse.py) reads it: page 3 mode, page 4 instruments (mains at
// offsets 35–41), page 6 engine state, page 8 alarms.
var dseGenComm = &profile{
	class: sensors.ClassGenerator,
	points: func() []point {
		s := func(p point) point { return sentinel(p, 8) }
		ps := []point{
			s(reg("engine.mode", "", mbdrv.Holding, 772, mbdrv.Uint16, 1)),
			s(reg("engine.oil_pressure", "kPa", mbdrv.Holding, 1024, mbdrv.Uint16, 1)),
			s(reg("engine.coolant_temperature", "°C", mbdrv.Holding, 1025, mbdrv.Int16, 1)),
			s(reg("engine.oil_temperature", "°C", mbdrv.Holding, 1026, mbdrv.Int16, 1)),
			s(reg("fuel.level", "%", mbdrv.Holding, 1027, mbdrv.Uint16, 1)),
			s(reg("engine.charge_voltage", "V", mbdrv.Holding, 1028, mbdrv.Uint16, 0.1)),
			s(reg("battery.voltage", "V", mbdrv.Holding, 1029, mbdrv.Uint16, 0.1)),
			s(reg("engine.speed", "rpm", mbdrv.Holding, 1030, mbdrv.Uint16, 1)),
			s(reg("generator.frequency", "Hz", mbdrv.Holding, 1031, mbdrv.Uint16, 0.1)),
			s(reg("generator.voltage.l1", "V", mbdrv.Holding, 1032, mbdrv.Uint32, 0.1)),
			s(reg("generator.voltage.l2", "V", mbdrv.Holding, 1034, mbdrv.Uint32, 0.1)),
			s(reg("generator.voltage.l3", "V", mbdrv.Holding, 1036, mbdrv.Uint32, 0.1)),
			s(reg("generator.current.l1", "A", mbdrv.Holding, 1044, mbdrv.Uint32, 0.1)),
			s(reg("generator.current.l2", "A", mbdrv.Holding, 1046, mbdrv.Uint32, 0.1)),
			s(reg("generator.current.l3", "A", mbdrv.Holding, 1048, mbdrv.Uint32, 0.1)),
			s(reg("generator.power.l1", "W", mbdrv.Holding, 1052, mbdrv.Int32, 1)),
			s(reg("generator.power.l2", "W", mbdrv.Holding, 1054, mbdrv.Int32, 1)),
			s(reg("generator.power.l3", "W", mbdrv.Holding, 1056, mbdrv.Int32, 1)),
			s(reg("mains.frequency", "Hz", mbdrv.Holding, 1059, mbdrv.Uint16, 0.1)),
			s(reg("mains.voltage.l1", "V", mbdrv.Holding, 1060, mbdrv.Uint32, 0.1)),
			s(reg("mains.voltage.l2", "V", mbdrv.Holding, 1062, mbdrv.Uint32, 0.1)),
			s(reg("mains.voltage.l3", "V", mbdrv.Holding, 1064, mbdrv.Uint32, 0.1)),
			s(reg("engine.state", "", mbdrv.Holding, 1408, mbdrv.Uint16, 1)),
			s(reg("generator.load", "%", mbdrv.Holding, 1558, mbdrv.Int16, 0.1)),
		}
		for i := 0; i < len(dseAlarms)/4; i++ {
			ps = append(ps, internal(reg(dseAlarmReg(i), "", mbdrv.Holding, uint16(2049+i), mbdrv.Uint16, 1)))
		}
		return ps
	}(),
	derive: dseDerive,
}

func dseAlarmReg(i int) string { return "_alarms" + string(rune('0'+i)) }

var dseStates = map[int]string{0: "stopped", 1: "pre-start", 2: "warming up", 3: "running", 4: "cooling down", 5: "stopped", 6: "post-run"}
var dseModes = map[int]string{0: "stop", 1: "auto", 2: "manual", 3: "test on load", 4: "auto with manual restore", 5: "user configuration", 6: "test off load", 7: "off"}

// dseDerive names the engine's state and mode, says whether the engine runs, and turns the
// packed alarm codes into one reading each (0 disabled, 1 not active, 2 warning, 3 shutdown,
// 4 electrical trip) plus the count of active ones.
func dseDerive(id string, v map[string]value, ts time.Time) []sensors.Reading {
	var out []sensors.Reading
	word := func(metric string, names map[int]string, from string) {
		x := v[from]
		n, ok := names[int(x.num)]
		if x.err != nil || !ok {
			out = append(out, sensors.Failed(id, metric, "", ts))
			return
		}
		out = append(out, sensors.Text(id, metric, n, ts))
	}
	word("engine.state.text", dseStates, "engine.state")
	word("engine.mode.text", dseModes, "engine.mode")
	if st := v["engine.state"]; st.err == nil {
		running := 0.0
		if st.num == 2 || st.num == 3 {
			running = 1
		}
		out = append(out, sensors.Num(id, "engine.running", running, "", ts))
	} else {
		out = append(out, sensors.Failed(id, "engine.running", "", ts))
	}
	active, known := 0, true
	for i, name := range dseAlarms {
		x := v[dseAlarmReg(i/4)]
		if x.err != nil {
			known = false
			out = append(out, sensors.Failed(id, "alarm."+name, "", ts))
			continue
		}
		code := (uint16(x.num) >> (12 - 4*(i%4))) & 0xF
		if code >= 2 && code <= 4 {
			active++
		}
		out = append(out, sensors.Num(id, "alarm."+name, float64(code), "", ts))
	}
	if known {
		out = append(out, sensors.Num(id, "alarms.active", float64(active), "", ts))
	} else {
		out = append(out, sensors.Failed(id, "alarms.active", "", ts))
	}
	return out
}

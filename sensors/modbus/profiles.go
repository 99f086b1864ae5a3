package modbus

import (
	"strconv"
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

// apcSmartUPS is the map NUT's apc_modbus driver reads (networkupstools/nut
// drivers/apc_modbus.c and apc_modbus.h at 6c63f7745ab5, which follow APC's Modbus register map
// MPAO-98KJ7F): holding registers, high word first (_apc_modbus_to_uint64), signed values two's
// complement, fixed-point values scaled by 2^-n (the value_scale column: charge 9, battery
// voltage 5, temperature 7, load 8, output current 5, output voltage 6, output frequency 7,
// input voltage 6, with 0xFFFF "not applicable"), strings two characters a register. The
// status bits are those upsdrv_updateinfo tests, numbered from the least significant bit.
var apcSmartUPS = &profile{
	class: sensors.ClassUPS,
	points: []point{
		internal(reg("_status", "", mbdrv.Holding, 0, mbdrv.Uint32, 1)),         // UPSStatus_BF
		internal(reg("_signaling", "", mbdrv.Holding, 18, mbdrv.Uint16, 1)),     // SimpleSignalingStatus_BF
		internal(reg("_battery_error", "", mbdrv.Holding, 22, mbdrv.Uint16, 1)), // BatterySystemError_BF
		internal(reg("_calibration", "", mbdrv.Holding, 24, mbdrv.Uint16, 1)),   // RunTimeCalibrationStatus_BF
		reg("battery.runtime", "s", mbdrv.Holding, 128, mbdrv.Uint32, 1),
		reg("battery.charge", "%", mbdrv.Holding, 130, mbdrv.Uint16, 1.0/512),
		reg("battery.voltage", "V", mbdrv.Holding, 131, mbdrv.Int16, 1.0/32),
		reg("battery.temperature", "°C", mbdrv.Holding, 135, mbdrv.Int16, 1.0/128),
		reg("ups.load", "%", mbdrv.Holding, 136, mbdrv.Uint16, 1.0/256),
		reg("output.current", "A", mbdrv.Holding, 140, mbdrv.Uint16, 1.0/32),
		reg("output.voltage", "V", mbdrv.Holding, 142, mbdrv.Uint16, 1.0/64),
		reg("output.frequency", "Hz", mbdrv.Holding, 144, mbdrv.Uint16, 1.0/128),
		internal(reg("_input_status", "", mbdrv.Holding, 150, mbdrv.Uint16, 1)), // InputStatus_BF
		sentinel(reg("input.voltage", "V", mbdrv.Holding, 151, mbdrv.Uint16, 1.0/64), 1),
		str("ups.model", 532, 16),
		str("ups.serial", 564, 8),
	},
	derive: apcStatus,
}

// APC status bits as apc_modbus.c tests them.
const (
	apcOnline      = 1 << 1  // UPSStatus_BF
	apcOnBattery   = 1 << 2  // UPSStatus_BF
	apcBypass      = 1 << 3  // UPSStatus_BF
	apcOutputOff   = 1 << 4  // UPSStatus_BF
	apcTest        = 1 << 7  // UPSStatus_BF
	apcOverload    = 1 << 21 // UPSStatus_BF
	apcShutdown    = 1 << 1  // SimpleSignalingStatus_BF: shutdown imminent
	apcReplace     = 1 << 2  // BatterySystemError_BF: needs replacement
	apcCalibrating = 1 << 1  // RunTimeCalibrationStatus_BF: in progress
	apcInputBoost  = 1 << 5  // InputStatus_BF
	apcInputTrim   = 1 << 6  // InputStatus_BF
)

// apcMfr is what apc_modbus.c publishes as ups.mfr.
const apcMfr = "American Power Conversion"

// apcStatus writes ups.status with the flags, and in the order, apc_modbus.c sets them. NUT's
// ALARM flag and ups.alarm (general fault, input not acceptable, the power and battery system
// errors) are not made.
func apcStatus(id string, v map[string]value, ts time.Time) []sensors.Reading {
	st := v["_status"]
	if st.err != nil {
		return []sensors.Reading{sensors.Failed(id, "ups.status", "", ts), sensors.Text(id, "ups.mfr", apcMfr, ts)}
	}
	bits := uint32(st.num)
	has := func(name string, bit uint32) bool {
		x := v[name]
		return x.err == nil && uint32(x.num)&bit != 0
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		flag string
	}{
		{bits&apcOnline != 0, "OL"},
		{bits&apcOnBattery != 0, "OB"},
		{bits&apcBypass != 0, "BYPASS"},
		{bits&apcOutputOff != 0, "OFF"},
		{bits&apcTest != 0, "TEST"},
		{bits&apcOverload != 0, "OVER"},
		{has("_signaling", apcShutdown), "LB"},
		{has("_battery_error", apcReplace), "RB"},
		{has("_calibration", apcCalibrating), "CAL"},
		{has("_input_status", apcInputBoost), "BOOST"},
		{has("_input_status", apcInputTrim), "TRIM"},
	} {
		if f.on {
			flags = append(flags, f.flag)
		}
	}
	return []sensors.Reading{sensors.Text(id, "ups.status", strings.Join(flags, " "), ts), sensors.Text(id, "ups.mfr", apcMfr, ts)}
}

// sdm630 is Eastron's SDM630 Modbus protocol: input registers (FC04, the manual's 30001 is
// address 0), each value an IEEE 754 float32 in two registers, high word first. Addresses as
// reaper7/SDM_Energy_Meter SDM.h (5d1653a0550f) and volkszaehler/mbmd meters/rs485/sdm.go
// (fb8f9c22f121) transcribe Eastron's table: 0x2A average line to neutral volts, 0x30 sum of
// line currents, 0x34 total system power, 0x46 frequency, 0x48/0x4A total import/export kWh,
// 0x156 total kWh (import + export). Energy is kept in Wh (kWh × 1000), as CONTRACT.md §3
// names it. The meter answers at most 40 values (80 registers) a request; the batches here
// are far smaller, since only touching registers share one.
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

// sdm120 is the single-phase SDM120, which keeps the SDM630's addresses for its one phase and
// the totals it has (SDM.h's SDM120 column; mbmd meters/rs485/sdm120.go at the same commits).
var sdm120 = &profile{class: sensors.ClassPower, points: []point{
	reg("voltage", "V", mbdrv.Input, 0x00, mbdrv.Float32, 1),
	reg("current", "A", mbdrv.Input, 0x06, mbdrv.Float32, 1),
	reg("power", "W", mbdrv.Input, 0x0C, mbdrv.Float32, 1),
	reg("frequency", "Hz", mbdrv.Input, 0x46, mbdrv.Float32, 1),
	reg("energy.import", "Wh", mbdrv.Input, 0x48, mbdrv.Float32, 1000),
	reg("energy.export", "Wh", mbdrv.Input, 0x4A, mbdrv.Float32, 1000),
	reg("energy", "Wh", mbdrv.Input, 0x156, mbdrv.Float32, 1000),
}}

// dseAlarms are the first 40 conditions of GenComm page 8's "old alarm system", from 2049 on
// (page 8 offset 1), four 4-bit codes per register, the first in the top nibble: DSE's 55x
// GenComm manual (pages 42–45 and 58) gives the layout, the codes (0 disabled, 1 not active,
// 2 warning, 3 shutdown, 4 electrical trip, 8–10 indications, 15 unimplemented) and the names
// of 14 of the 40: offset 1 but its fourth (high oil temperature, reserved on the 55x), offset
// 2, the first three of offset 3, and offset 10.
// The whole order is Victron's list of DSE codes 0x1000 onwards (victronenergy/veutil
// src/qt/genset_error.cpp at 97c80efdc4fd; the same 99 names in victronenergy/
// dse-modbus-simulator dse_alarms.json at f676affc39df), the only source for the other 26.
// Controllers of the MkII families report "named alarm conditions" on page 154 instead, a list
// per family that this profile does not read; on them these readings may be errors.
var dseAlarms = []string{
	"emergency_stop", "low_oil_pressure", "high_coolant_temperature", "high_oil_temperature",
	"under_speed", "over_speed", "fail_to_start", "fail_to_come_to_rest",
	"loss_of_speed_sensing", "generator_low_voltage", "generator_high_voltage", "generator_low_frequency",
	"generator_high_frequency", "generator_high_current", "generator_earth_fault", "generator_reverse_power",
	"air_flap", "oil_pressure_sender_fault", "coolant_temperature_sender_fault", "oil_temperature_sender_fault",
	"fuel_level_sender_fault", "magnetic_pickup_fault", "loss_of_ac_speed_signal", "charge_alternator_failure",
	"low_battery_voltage", "high_battery_voltage", "low_fuel_level", "high_fuel_level",
	"generator_failed_to_close", "mains_failed_to_close", "generator_failed_to_open", "mains_failed_to_open",
	"mains_low_voltage", "mains_high_voltage", "bus_failed_to_close", "bus_failed_to_open",
	"mains_low_frequency", "mains_high_frequency", "mains_failed", "mains_phase_rotation_wrong",
}

// dseGenComm follows Deep Sea Electronics' GenComm standard: holding registers, address =
// page × 256 + offset, 32-bit values high word first, and the top 8 values of each type
// (0xFFF8–0xFFFF unsigned, 0x7FF8–0x7FFF signed 16-bit) sentinels such as "unimplemented" or
// "transducer fault". Page 4 (1024–1065: oil pressure to mains L3-N voltage, with their
// scales and signs) is checked against GenComm's own page 4 table (as transcribed at
// lektsia.com/12xbd4c.html and in DSE's 55x GenComm manual, pages 38–39). Page 3 offset 4 (772,
// control mode), page 5 offset 128 (1408, engine state) and page 6 offset 22 (1558, load %/10,
// signed) are as Victron's dbus-modbus-client dse.py (fe12d8c9c30f) and dse-modbus-simulator
// read and write them; GenComm's text of those pages was not reachable.
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

func dseAlarmReg(i int) string { return "_alarms" + strconv.Itoa(i) }

// dseStates and dseModes are the values dse.py maps (1408's 15 is "not available").
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
	if st := v["engine.state"]; st.err == nil && dseStates[int(st.num)] != "" {
		running := 0.0
		if st.num == 2 || st.num == 3 {
			running = 1
		}
		out = append(out, sensors.Num(id, "engine.running", running, "", ts))
	} else {
		// Neither a state the controller names nor an answer: the engine may be running.
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

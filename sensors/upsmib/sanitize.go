package upsmib

import (
	"math"
	"strings"

	snmpdrv "github.com/rackwatch/rackwatch/drivers/snmp"
)

// The functions here decide what each UPS-MIB object means in practice. Each returns ok=false
// for a value that cannot be true, so the reading becomes an error instead of a number. The
// judgements, with the real card that motivated them (walks in testdata/):
//
//   - -1 sent as an unsigned Gauge32 (4294967295) means "unknown" (Huawei UPS2000:
//     upsEstimatedMinutesRemaining). So does a negative value where the MIB allows none
//     (Riello NetMan 204 sends -1 for the battery current, which we do not read).
//   - upsBatteryTemperature 0 °C is "no sensor" (ABB PowerScale sends 0 with every other
//     unmeasured object also 0); a battery at exactly 0 °C in a rack is not believable.
//   - upsEstimatedMinutesRemaining 0 while on mains with the battery at least half full is
//     "not estimated", not "empty": reporting 0 s would make the power policy order a
//     shutdown. On battery a 0 is believed: under a minute left is exactly when it matters.
//   - upsInputFrequency is 0.1 Hz, but some cards send whole Hz; 40..70 can only be Hz
//     (4 to 7 Hz mains does not exist), so it is taken as Hz.
//   - upsInputVoltage/upsOutputVoltage are whole volts, but a value above 1000 can only be
//     0.1 V units (no rack UPS has a 1000 V line), so it is scaled.
//   - upsBatteryVoltage is 0.1 V, as NUT reads it. Whole volts cannot be told apart in
//     general (412 may be 41.2 V of a 36 V pack or 412 V of a large UPS); every walk here
//     is consistent with 0.1 V (Minuteman: 41.2 V on a 3×12 V pack).
//   - ups.load on a three-phase UPS is the most loaded output line, not line 1 as NUT
//     reads it: the Multimatic walk has 2 %, 14 %, 2 %, and the line that overloads first
//     is the one an operator needs (NUT's per-line output.Lx.power.percent are not read).

// number is a usable numeric value of an object.
func number(v snmpdrv.Value) (float64, bool) {
	if v.Missing || !v.IsNum || v.OID == "" || math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
		return 0, false
	}
	return v.Num, true
}

// upsStatus builds NUT's ups.status: the power tokens from upsOutputSource as NUT's
// ietf_power_source_info maps them, then LB from upsBatteryStatus (low or depleted), then
// OVER when the output overload alarm is present. ok=false when nothing is known.
func upsStatus(vals map[string]snmpdrv.Value, alarms []int) (string, bool) {
	var tokens []string
	if src, ok := number(vals[oidOutputSource]); ok {
		switch src {
		case 2:
			tokens = append(tokens, "OFF")
		case 3:
			tokens = append(tokens, "OL")
		case 4:
			tokens = append(tokens, "OL", "BYPASS")
		case 5:
			tokens = append(tokens, "OB")
		case 6:
			tokens = append(tokens, "OL", "BOOST")
		case 7:
			tokens = append(tokens, "OL", "TRIM")
		}
		// 1 (other) and anything outside the MIB say nothing about the power path.
	}
	if bs, ok := number(vals[oidBatteryStatus]); ok && (bs == 3 || bs == 4) {
		tokens = append(tokens, "LB")
	}
	for _, a := range alarms {
		if a == 8 {
			tokens = append(tokens, "OVER")
			break
		}
	}
	// LB or OVER alone, without the power path, is still worth saying.
	if len(tokens) == 0 {
		return "", false
	}
	return strings.Join(tokens, " "), true
}

func batteryCharge(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x < 0 || x > 100 {
		return 0, false
	}
	return x, true
}

// runtime is battery.runtime in seconds from upsEstimatedMinutesRemaining.
func runtime(v snmpdrv.Value, onBattery bool, charge float64, chargeOK bool) (float64, bool) {
	x, ok := number(v)
	if !ok || x < 0 || x >= unknownGauge32 || x > 1e6 {
		return 0, false
	}
	if x == 0 && !onBattery && chargeOK && charge >= 50 {
		return 0, false
	}
	return x * 60, true
}

func batteryVoltage(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x <= 0 || x >= unknownGauge32 {
		return 0, false
	}
	return round1(x * 0.1), true
}

func acVoltage(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x < 0 || x >= unknownGauge32 {
		return 0, false
	}
	if x > 1000 {
		return round1(x * 0.1), true
	}
	return x, true
}

func frequency(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x < 0 || x >= unknownGauge32 {
		return 0, false
	}
	if x >= 40 && x <= 70 {
		return x, true
	}
	return round1(x * 0.1), true
}

func batteryTemperature(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x == 0 || x < -40 || x > 100 {
		return 0, false
	}
	return x, true
}

func secondsOnBattery(v snmpdrv.Value) (float64, bool) {
	x, ok := number(v)
	if !ok || x < 0 || x >= unknownGauge32 {
		return 0, false
	}
	return x, true
}

// outputLoad is the highest upsOutputPercentLoad of the lines the UPS has.
func outputLoad(vals map[string]snmpdrv.Value) (float64, bool) {
	best, any := 0.0, false
	for l := 1; l <= outputLines; l++ {
		x, ok := number(vals[oidOutputLoadLine+string(rune('0'+l))])
		if !ok || x < 0 || x > 1000 {
			continue
		}
		if !any || x > best {
			best, any = x, true
		}
	}
	return best, any
}

func alarmCount(vals map[string]snmpdrv.Value) (float64, bool) {
	x, ok := number(vals[oidAlarmsPresent])
	if !ok || x < 0 || x >= unknownGauge32 {
		return 0, false
	}
	return x, true
}

// round1 rounds to 0.1, so that 4348 × 0.1 prints as 434.8, not 434.80000000000007.
func round1(x float64) float64 {
	if x < 0 {
		return -round1(-x)
	}
	return float64(int64(x*10+0.5)) / 10
}

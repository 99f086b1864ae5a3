package snmp

import (
	"strconv"
	"strings"
)

// UPSAlarmPrefix is upsWellKnownAlarms of RFC 1628: alarm N is UPSAlarmPrefix + "N". These
// OIDs are the values of upsAlarmDescr in a UPS's alarm table and of the varbinds of its
// upsTrapAlarmEntryAdded/Removed traps.
const UPSAlarmPrefix = "1.3.6.1.2.1.33.1.6.3."

// UPSAlarms names the well-known alarms of RFC 1628 by N, without their "upsAlarm" prefix.
var UPSAlarms = map[int]string{
	1: "BatteryBad", 2: "OnBattery", 3: "LowBattery", 4: "DepletedBattery", 5: "TempBad",
	6: "InputBad", 7: "OutputBad", 8: "OutputOverload", 9: "OnBypass", 10: "BypassBad",
	11: "OutputOffAsRequested", 12: "UpsOffAsRequested", 13: "ChargerFailed",
	14: "UpsOutputOff", 15: "UpsSystemOff", 16: "FanFailure", 17: "FuseFailure",
	18: "GeneralFault", 19: "DiagnosticTestFailed", 20: "CommunicationsLost",
	21: "AwaitingPower", 22: "ShutdownPending", 23: "ShutdownImminent", 24: "TestInProgress",
}

// UPSAlarm returns N and the name of a well-known UPS alarm OID (with or without a leading
// dot); ok is false for any other OID.
func UPSAlarm(oid string) (n int, name string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimPrefix(oid, "."), UPSAlarmPrefix)
	if !found {
		return 0, "", false
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return 0, "", false
	}
	name, ok = UPSAlarms[n]
	return n, name, ok
}

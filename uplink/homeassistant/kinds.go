package homeassistant

import "strings"

// kind is how Home Assistant is told about one numeric reading: its sensor device class,
// state class and unit. The device classes and units are those Home Assistant accepts
// together (its sensor integration warns about, and its statistics ignore, a unit that is not
// valid for the class); a unit with no class here is passed on as it is, without a class.
type kind struct {
	DeviceClass string
	StateClass  string
	Unit        string
}

// unitKinds maps rackwatch's units (CONTRACT.md §3, and what SNMP and Modbus entries may
// name) to Home Assistant's.
var unitKinds = map[string]kind{
	"°C":  {"temperature", "measurement", "°C"},
	"°F":  {"temperature", "measurement", "°F"},
	"K":   {"temperature", "measurement", "K"},
	"%RH": {"humidity", "measurement", "%"},
	"Pa":  {"pressure", "measurement", "Pa"},
	"hPa": {"pressure", "measurement", "hPa"},
	"kPa": {"pressure", "measurement", "kPa"},
	"bar": {"pressure", "measurement", "bar"},
	"V":   {"voltage", "measurement", "V"},
	"mV":  {"voltage", "measurement", "mV"},
	"A":   {"current", "measurement", "A"},
	"mA":  {"current", "measurement", "mA"},
	"W":   {"power", "measurement", "W"},
	"kW":  {"power", "measurement", "kW"},
	"Wh":  {"energy", "total_increasing", "Wh"},
	"kWh": {"energy", "total_increasing", "kWh"},
	"MWh": {"energy", "total_increasing", "MWh"},
	"Hz":  {"frequency", "measurement", "Hz"},
	"kHz": {"frequency", "measurement", "kHz"},
	"s":   {"duration", "measurement", "s"},
	"min": {"duration", "measurement", "min"},
	"h":   {"duration", "measurement", "h"},
	"VA":  {"apparent_power", "measurement", "VA"},
	"var": {"reactive_power", "measurement", "var"},
}

// kindOf is the kind of a numeric reading.
func kindOf(metric, unit string) kind {
	if unit == "%" && (metric == "battery.charge" || strings.HasSuffix(metric, ".battery.charge")) {
		return kind{"battery", "measurement", "%"}
	}
	if k, ok := unitKinds[unit]; ok {
		return k
	}
	return kind{"", "measurement", unit}
}

package nut

// Descriptions for GET DESC and GET CMDDESC, as NUT's data/cmdvartab words them, for the
// variables and commands rackwatch's UPS drivers produce. Anything else gets upsd's
// "Description unavailable".
var varDesc = map[string]string{
	"ups.status":              "UPS status",
	"ups.alarm":               "UPS alarms",
	"ups.model":               "UPS model",
	"ups.mfr":                 "UPS manufacturer",
	"ups.firmware":            "UPS firmware",
	"ups.temperature":         "UPS temperature (degrees C)",
	"ups.load":                "Load on UPS (percent of full)",
	"ups.type":                "UPS type",
	"input.voltage":           "Input voltage (V)",
	"input.voltage.nominal":   "Nominal input voltage (V)",
	"input.frequency":         "Input line frequency (Hz)",
	"input.frequency.nominal": "Nominal input line frequency (Hz)",
	"output.voltage":          "Output voltage (V)",
	"output.voltage.nominal":  "Nominal output voltage (V)",
	"battery.charge":          "Battery charge (percent of full)",
	"battery.voltage":         "Battery voltage (V)",
	"battery.voltage.nominal": "Nominal battery voltage (V)",
	"battery.runtime":         "Battery runtime (seconds)",
}

var cmdDesc = map[string]string{
	"load.off":           "Turn off the load immediately",
	"shutdown.return":    "Turn off the load and return when power is back",
	"shutdown.stop":      "Stop a shutdown in progress",
	"test.battery.start": "Start a battery test",
	"beeper.toggle":      "Toggle the UPS beeper",
}

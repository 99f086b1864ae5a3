package megatec

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
	"github.com/rackwatch/rackwatch/sensors"
)

// nutDigits is how nutdrv_qx's megatec table prints each number (its printf formats), so
// that a reading can be compared with upsc's text.
var nutDigits = map[string]int{
	"input.voltage": 1, "input.voltage.fault": 1, "output.voltage": 1, "ups.load": 0,
	"input.frequency": 1, "battery.voltage": 2, "ups.temperature": 1, "battery.charge": 0,
	"input.voltage.nominal": 0, "input.current.nominal": 1, "battery.voltage.nominal": 1,
	"input.frequency.nominal": 0,
}

func nutText(r sensors.Reading) string {
	if r.Quality != sensors.Good {
		return "<" + string(r.Quality) + ">"
	}
	if r.IsText {
		return r.Text
	}
	return strconv.FormatFloat(r.Value, 'f', nutDigits[r.Metric], 64)
}

// startNUT runs NUT's own nutdrv_qx on port (megatec) and upsd, from a private folder on a
// free port; the UPS is called "ups".
func startNUT(t *testing.T, port string) *testpeer.Upsd {
	t.Helper()
	drvBin := testpeer.Require(t, "/lib/nut/nutdrv_qx", "nut-server")
	// pollfreq 1: every update is a full one, so a cleared BOOST/TRIM does not linger
	// until the next full update, as it would with the default 30 s.
	conf := fmt.Sprintf("[ups]\n\tdriver = nutdrv_qx\n\tport = %s\n\tprotocol = megatec\n\tpollinterval = 1\n\tpollfreq = 1\n", port)
	return testpeer.StartUpsd(t, drvBin, conf, "ups")
}

// compared are the variables both must agree on, in every state.
var compared = []string{
	"ups.status", "input.voltage", "output.voltage", "ups.load", "input.frequency", "ups.temperature",
	// Beyond the list, as long as they agree.
	"input.voltage.fault", "ups.beeper.status", "ups.alarm", "ups.type", "battery.voltage", "battery.charge",
	"input.voltage.nominal", "input.current.nominal", "battery.voltage.nominal", "input.frequency.nominal",
	"device.mfr", "device.model", "ups.firmware",
}

// TestDifferentialNUT runs NUT's nutdrv_qx + upsd and rackwatch's megatec device on one
// emulated UPS (a pty each) and checks that upsc and rackwatch agree, state after state.
func TestDifferentialNUT(t *testing.T) {
	e := upsemu.StartT(t)
	nutPort, err := e.AddPTY()
	if err != nil {
		t.Fatal(err)
	}
	n := startNUT(t, nutPort)
	dev := newDevice(t, e.Path())

	states := []struct {
		name   string
		set    func()
		status string // what both must say
	}{
		{"on line", func() {}, "OL"},
		{"on battery, low", func() {
			e.SetOnBattery(true)
			e.SetLowBattery(true)
			e.Update(func(f *upsemu.Fields) {
				f.InputVoltage, f.InputFaultVoltage, f.Frequency, f.Load, f.BatteryVoltage, f.Temperature = 0, 0, 0, 41, 21.9, 33.5
			})
		}, "OB LB"},
		{"back on line, boosting", func() {
			e.SetStatus(upsemu.Standby | upsemu.BypassBoost | upsemu.BeeperOn)
			e.Update(func(f *upsemu.Fields) {
				f.InputVoltage, f.InputFaultVoltage, f.OutputVoltage, f.Frequency, f.BatteryVoltage = 194.5, 190.2, 221.3, 49.9, 26.4
			})
		}, "OL BOOST"},
		{"trimming", func() {
			e.Update(func(f *upsemu.Fields) { f.InputVoltage, f.OutputVoltage = 251.0, 229.0 })
		}, "OL TRIM"},
		{"self test, beeper off", func() {
			e.SetStatus(upsemu.Standby | upsemu.TestInProgress)
			e.Update(func(f *upsemu.Fields) { f.InputVoltage, f.Load = 231.2, 7 })
		}, "OL CAL"},
		{"UPS failed, shutting down", func() {
			e.SetStatus(upsemu.Standby | upsemu.UPSFailed | upsemu.ShutdownActive | upsemu.BeeperOn)
		}, "ALARM OL FSD"},
	}
	var ours map[string]sensors.Reading
	var theirs map[string]string
	for _, st := range states {
		st.set()
		ours = mustPoll(t, dev)
		if got := nutText(ours["ups.status"]); got != st.status {
			t.Fatalf("%s: rackwatch ups.status %q, want %q", st.name, got, st.status)
		}
		// nutdrv_qx polls every second; wait until upsc shows this state, then compare all.
		diff := func() []string {
			theirs = n.Vars("ups")
			if theirs == nil {
				return []string{"upsc has no data yet"}
			}
			var d []string
			for _, k := range compared {
				o, ok := ours[k]
				v, has := theirs[k]
				switch {
				case k == "ups.alarm" && ok && o.Text == "" && !has:
					// No alarm: NUT deletes the variable, rackwatch says "".
				case !ok || !has || nutText(o) != v:
					d = append(d, fmt.Sprintf("%s: rackwatch %q, upsc %q (present %v)", k, nutText(o), v, has))
				}
			}
			return d
		}
		deadline := time.Now().Add(30 * time.Second)
		for d := diff(); len(d) > 0; d = diff() {
			if time.Now().After(deadline) {
				keys := make([]string, 0, len(theirs))
				for k := range theirs {
					keys = append(keys, k+"="+theirs[k])
				}
				sort.Strings(keys)
				t.Fatalf("%s: rackwatch and NUT disagree after 30 s:\n  %s\nupsc: %v\nnutdrv_qx:\n%s",
					st.name, strings.Join(d, "\n  "), keys, n.Drivers[0].Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: agree on %d variables (ups.status %q)", st.name, len(compared), theirs["ups.status"])
	}
}

package upsmib

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	snmpdrv "github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the driver reads")

// render writes readings one a line, sorted: "metric<TAB>value<TAB>unit<TAB>quality".
func render(rs []sensors.Reading) string {
	lines := make([]string, 0, len(rs))
	for _, r := range rs {
		v := r.String()
		if r.IsText {
			v = fmt.Sprintf("%q", r.Text)
		}
		if r.Quality == sensors.Error {
			v = "-"
		}
		lines = append(lines, fmt.Sprintf("%s\t%s\t%s\t%s", r.Metric, v, r.Unit, r.Quality))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func pollOnce(t *testing.T, dev sensors.Device) []sensors.Reading {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rs, err := dev.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func newDevice(t *testing.T, addr, community, version string) sensors.Device {
	t.Helper()
	dev, err := sensors.New(sensors.Spec{ID: "ups2", Driver: "upsmib", Options: Options{Target: addr, Community: community, Version: version}}, sensors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

// TestRealWalks reads each real walk (testdata/*.snmprec, captured from real cards) through
// snmpsim and compares the readings with testdata/NAME.golden. The goldens were written with
// -update and then checked by hand against the walk: the comment at the top of sanitize.go
// says why each odd value reads the way it does.
func TestRealWalks(t *testing.T) {
	walks, _ := filepath.Glob("testdata/*.snmprec")
	var real []string
	for _, w := range walks {
		if !strings.HasPrefix(filepath.Base(w), "sim_") {
			real = append(real, w)
		}
	}
	if len(real) < 5 {
		t.Fatalf("found %d real walks, want the 5 from fixtures/real", len(real))
	}
	addr := testpeer.StartSnmpsim(t, real...)
	for _, w := range real {
		name := strings.TrimSuffix(filepath.Base(w), ".snmprec")
		for _, version := range []string{"2c", "1"} {
			t.Run(name+"/v"+version, func(t *testing.T) {
				got := render(pollOnce(t, newDevice(t, addr, name, version)))
				golden := filepath.Join("testdata", name+".golden")
				if *update && version == "2c" {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if got != string(want) {
					t.Errorf("readings of %s differ from %s\ngot:\n%s\nwant:\n%s", w, golden, got, want)
				}
			})
		}
	}
}

// An SNMP SET (snmpsim's writecache variation) switching upsOutputSource to battery(5) and
// upsBatteryStatus to low(3) shows on the next poll as OB, then OB LB; back to normal(3) is OL.
func TestSetOutputSourceToBattery(t *testing.T) {
	addr := testpeer.StartSnmpsim(t, "testdata/sim_writable.snmprec")
	dev := newDevice(t, addr, "sim_writable", "2c")
	status := func() string {
		for _, r := range pollOnce(t, dev) {
			if r.Metric == "ups.status" {
				return r.Text
			}
		}
		return "(none)"
	}
	snmpset := func(oid, value string) {
		t.Helper()
		testpeer.SnmpSet(t, addr, "sim_writable", oid, "i", value)
	}
	if s := status(); s != "OL" {
		t.Fatalf("before the SET: ups.status %q, want OL", s)
	}
	snmpset(oidOutputSource, "5")
	testpeer.Eventually(t, 20*time.Second, "ups.status OB", func() bool { return status() == "OB" })
	snmpset(oidBatteryStatus, "3")
	testpeer.Eventually(t, 20*time.Second, "ups.status OB LB", func() bool { return status() == "OB LB" })
	snmpset(oidOutputSource, "3")
	snmpset(oidBatteryStatus, "2")
	testpeer.Eventually(t, 20*time.Second, "ups.status OL", func() bool { return status() == "OL" })
}

// The alarm table is walked when upsAlarmsPresent is not 0, and well-known alarms are named.
func TestAlarms(t *testing.T) {
	addr := testpeer.StartSnmpsim(t, "testdata/sim_alarms.snmprec")
	got := map[string]sensors.Reading{}
	for _, r := range pollOnce(t, newDevice(t, addr, "sim_alarms", "2c")) {
		got[r.Metric] = r
	}
	if r := got["ups.alarm"]; r.Text != "OnBattery OutputOverload 1 other alarm(s)" || r.Quality != sensors.Good {
		t.Errorf("ups.alarm = %+v", r)
	}
	if r := got["ups.alarm.count"]; r.Value != 3 {
		t.Errorf("ups.alarm.count = %+v, want 3", r)
	}
	if r := got["ups.status"]; r.Text != "OB OVER" {
		t.Errorf("ups.status = %q, want \"OB OVER\"", r.Text)
	}
}

func TestSilentAgentFailsPoll(t *testing.T) {
	dev := newDevice(t, "127.0.0.1:9", "public", "2c") // discard port: nothing answers
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if rs, err := dev.Poll(ctx); err == nil || !strings.Contains(err.Error(), "ups2") {
		t.Fatalf("Poll = %v, %v; want an error naming the device", rs, err)
	}
}

// Table test of the mapping for values the real walks do not have.
func TestReadingsTable(t *testing.T) {
	n := func(oid string, x float64) snmpdrv.Value { return snmpdrv.Value{OID: oid, Num: x, IsNum: true} }
	base := func(kv ...snmpdrv.Value) map[string]snmpdrv.Value {
		m := map[string]snmpdrv.Value{}
		for _, o := range OIDs {
			m[o] = snmpdrv.Value{OID: o, Missing: true}
		}
		for _, v := range kv {
			m[v.OID] = v
		}
		return m
	}
	for _, c := range []struct {
		name   string
		vals   map[string]snmpdrv.Value
		metric string
		want   string // rendered value, "-" for an error reading, "absent"
	}{
		{"none is OFF", base(n(oidOutputSource, 2)), "ups.status", `"OFF"`},
		{"booster", base(n(oidOutputSource, 6)), "ups.status", `"OL BOOST"`},
		{"reducer", base(n(oidOutputSource, 7)), "ups.status", `"OL TRIM"`},
		{"bypass", base(n(oidOutputSource, 4)), "ups.status", `"OL BYPASS"`},
		{"depleted is LB", base(n(oidOutputSource, 5), n(oidBatteryStatus, 4)), "ups.status", `"OB LB"`},
		{"other, battery normal: unknown", base(n(oidOutputSource, 1), n(oidBatteryStatus, 2)), "ups.status", "-"},
		{"source missing, battery low", base(n(oidBatteryStatus, 3)), "ups.status", `"LB"`},
		{"out of range source", base(n(oidOutputSource, 9)), "ups.status", "-"},
		{"runtime minutes", base(n(oidMinutesRemain, 7)), "battery.runtime", "420"},
		{"runtime -1", base(n(oidMinutesRemain, -1)), "battery.runtime", "-"},
		{"runtime 0 on mains, full", base(n(oidOutputSource, 3), n(oidChargeRemain, 100), n(oidMinutesRemain, 0)), "battery.runtime", "-"},
		{"runtime 0 on battery", base(n(oidOutputSource, 5), n(oidChargeRemain, 100), n(oidMinutesRemain, 0)), "battery.runtime", "0"},
		{"runtime 0 on mains, empty", base(n(oidOutputSource, 3), n(oidChargeRemain, 10), n(oidMinutesRemain, 0)), "battery.runtime", "0"},
		{"charge 101", base(n(oidChargeRemain, 101)), "battery.charge", "-"},
		{"battery voltage 0", base(n(oidBatteryVoltage, 0)), "battery.voltage", "-"},
		{"input voltage in 0.1 V", base(n(oidInputVoltage, 2301)), "input.voltage", "230.1"},
		{"input voltage 0 (mains out)", base(n(oidInputVoltage, 0)), "input.voltage", "0"},
		{"frequency in Hz", base(n(oidInputFrequency, 50)), "input.frequency", "50"},
		{"frequency in 0.1 Hz", base(n(oidInputFrequency, 599)), "input.frequency", "59.9"},
		{"frequency missing", base(), "input.frequency", "absent"},
		{"temperature 0", base(n(oidBatteryTemp, 0)), "battery.temperature", "-"},
		{"temperature -5", base(n(oidBatteryTemp, -5)), "battery.temperature", "-5"},
		{"load max of lines", base(n(oidOutputLoadLine+"1", 2), n(oidOutputLoadLine+"2", 14), n(oidOutputLoadLine+"3", 2)), "ups.load", "14"},
		{"load line 1 only", base(n(oidOutputLoadLine+"1", 40)), "ups.load", "40"},
		{"load none", base(), "ups.load", "-"},
		{"numeric string", base(snmpdrv.Value{OID: oidChargeRemain, Type: "OctetString", Text: "87", Num: 87, IsNum: true}), "battery.charge", "87"},
		{"text where a number belongs", base(snmpdrv.Value{OID: oidChargeRemain, Type: "OctetString", Text: "full"}), "battery.charge", "-"},
		{"no alarms", base(n(oidAlarmsPresent, 0)), "ups.alarm", `""`},
		{"alarms unsupported", base(), "ups.alarm", "absent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := "absent"
			for _, r := range Readings("u", c.vals, nil, true, time.Unix(0, 0)) {
				if r.Metric != c.metric {
					continue
				}
				switch {
				case r.Quality == sensors.Error:
					got = "-"
				case r.IsText:
					got = fmt.Sprintf("%q", r.Text)
				default:
					got = r.String()
				}
			}
			if got != c.want {
				t.Errorf("%s = %s, want %s", c.metric, got, c.want)
			}
		})
	}
}

// FuzzReadings: whatever numbers and strings an agent sends, the mapping never panics, never
// yields NaN or Inf, and always says something about ups.status.
func FuzzReadings(f *testing.F) {
	f.Add(int64(3), int64(2), int64(452), int64(100), int64(4348), int64(0), "x", 0.5)
	f.Add(int64(5), int64(3), int64(-1), int64(-1), int64(4294967295), int64(-40), "230", -1.0)
	f.Fuzz(func(t *testing.T, src, bstat, mins, charge, volt, temp int64, s string, fl float64) {
		vals := map[string]snmpdrv.Value{}
		for i, o := range OIDs {
			x := []float64{float64(src), float64(bstat), float64(mins), float64(charge), float64(volt), float64(temp), fl}[i%7]
			vals[o] = snmpdrv.Value{OID: o, Num: x, IsNum: i%5 != 4, Text: s, Missing: i%11 == 10}
		}
		vals[oidOutputSource] = snmpdrv.Value{OID: oidOutputSource, Num: float64(src), IsNum: true}
		saw := false
		for _, r := range Readings("u", vals, []int{int(temp), 8}, true, time.Unix(0, 0)) {
			if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
				t.Fatalf("%s = %v", r.Metric, r.Value)
			}
			saw = saw || r.Metric == "ups.status"
		}
		if !saw {
			t.Fatal("no ups.status reading")
		}
	})
}

package modbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mbdrv "github.com/rackwatch/rackwatch/drivers/modbus"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/modbus"
)

func byMetric(rs []sensors.Reading) map[string]sensors.Reading {
	m := map[string]sensors.Reading{}
	for _, r := range rs {
		m[r.Metric] = r
	}
	return m
}

func poll(t *testing.T, spec sensors.Spec) ([]sensors.Reading, error) {
	t.Helper()
	d, err := modbus.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Poll(ctx)
}

// Every type and word order, scale and offset, a refused register and an unmapped coil as
// error readings beside the good ones.
func TestGenericDevice(t *testing.T) {
	srv := testpeer.StartModbusTCP(t, `{"units": {"1": {
	  "holding": [
	    {"address": 0, "type": "uint16", "value": 2315},
	    {"address": 1, "type": "int16", "value": -40},
	    {"address": 2, "type": "uint32", "value": 100000, "word_order": "low_first"},
	    {"address": 4, "type": "int32", "value": -100000},
	    {"address": 6, "type": "float32", "value": 49.95, "word_order": "low_first"},
	    {"address": 8, "type": "float64", "value": 123456.789},
	    {"address": 12, "type": "string", "value": "PM5560", "count": 5}],
	  "input": [{"address": 100, "type": "float32", "value": 12.5}],
	  "coil": [{"address": 0, "value": true}],
	  "discrete": [{"address": 7, "value": false}]}}}`)
	spec := sensors.Spec{ID: "m1", Driver: "modbus", Options: modbus.Options{Link: modbus.Link{Target: srv.Addr, UnitID: 1}, Registers: []modbus.Register{
		{Name: "voltage", Address: 0, Unit: "V", Scale: 0.1},
		{Name: "temperature", Address: 1, Type: "int16", Unit: "°C", Offset: 0.5},
		{Name: "energy", Address: 2, Type: "uint32", WordOrder: "low_first", Unit: "Wh", Scale: 1000},
		{Name: "power", Address: 4, Type: "int32", Unit: "W"},
		{Name: "frequency", Address: 6, Type: "float32", WordOrder: "low_first", Unit: "Hz"},
		{Name: "big", Address: 8, Type: "float64"},
		{Name: "model", Address: 12, Type: "string", Count: 5},
		{Name: "current", Table: "input", Address: 100, Type: "float32", Unit: "A"},
		{Name: "breaker", Table: "coil", Address: 0},
		{Name: "door", Table: "discrete", Address: 7},
		{Name: "missing", Address: 13 + 5, Unit: "V"},
		{Name: "missing_coil", Table: "coil", Address: 1},
	}}}
	rs, err := poll(t, spec)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	got := byMetric(rs)
	want := map[string]any{"voltage": 231.5, "temperature": -39.5, "energy": 1e8, "power": -100000.0,
		"frequency": 49.95, "big": 123456.789, "model": "PM5560", "current": 12.5, "breaker": 1.0, "door": 0.0,
		"missing": nil, "missing_coil": nil}
	checkReadings(t, got, want)
	if got["voltage"].Unit != "V" || got["energy"].Unit != "Wh" {
		t.Errorf("units: %+v %+v", got["voltage"], got["energy"])
	}
}

func checkReadings(t *testing.T, got map[string]sensors.Reading, want map[string]any) {
	t.Helper()
	for m, w := range want {
		r, ok := got[m]
		switch w := w.(type) {
		case nil:
			if !ok || r.Quality != sensors.Error {
				t.Errorf("%s: %+v, want an error reading", m, r)
			}
		case string:
			if !ok || r.Quality != sensors.Good || !r.IsText || r.Text != w {
				t.Errorf("%s: %+v, want %q", m, r, w)
			}
		case float64:
			if !ok || r.Quality != sensors.Good || r.IsText || r.Value != w {
				t.Errorf("%s: %+v, want %v", m, r, w)
			}
		}
	}
	for m := range got {
		if _, ok := want[m]; !ok {
			t.Errorf("unexpected reading %s: %+v", m, got[m])
		}
	}
}

// A unit that does not answer fails the poll, with every reading an error; its neighbour on
// the same connection is read all the same.
func TestSilentUnitFailsAlone(t *testing.T) {
	srv := testpeer.StartModbusTCP(t, `{"units": {"1": {"holding": [{"address": 0, "raw": [7]}]}}}`)
	regs := []modbus.Register{{Name: "x", Address: 0}, {Name: "y", Address: 5}}
	good, err := modbus.New(sensors.Spec{ID: "a", Driver: "modbus", Options: modbus.Options{Link: modbus.Link{Target: srv.Addr, UnitID: 1}, Registers: regs}})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	silent, err := modbus.New(sensors.Spec{ID: "b", Driver: "modbus", Timeout: 300 * time.Millisecond, Options: modbus.Options{Link: modbus.Link{Target: srv.Addr, UnitID: 9}, Registers: regs}})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx := context.Background()
	rs, err := silent.Poll(ctx)
	if err == nil {
		t.Fatal("a silent unit polled without error")
	}
	for _, r := range rs {
		if r.Quality != sensors.Error {
			t.Errorf("silent unit: %+v", r)
		}
	}
	rs, err = good.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkReadings(t, byMetric(rs), map[string]any{"x": 7.0, "y": nil})
}

// A relay entry switches a coil or a holding register through the device's bus and reads it
// back as `relay`.
func TestRelay(t *testing.T) {
	srv := testpeer.StartModbusTCP(t, `{"units": {"1": {"coil": [{"address": 3, "value": false}], "holding": [{"address": 10, "raw": [0]}]}}}`)
	on, off := 0xFF, 0x11
	for _, rs := range []*modbus.Relay{{Table: "coil", Address: 3}, {Table: "holding", Address: 10, On: &on, Off: &off}} {
		spec := sensors.Spec{ID: "gen", Driver: "modbus", Options: modbus.Options{Link: modbus.Link{Target: srv.Addr}, Relay: rs}}
		if sensors.SpecClass(spec) != sensors.ClassRelay {
			t.Fatal("a modbus device with a relay entry is not a relay")
		}
		d, err := modbus.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, want := range []bool{true, false, true} {
			if err := d.Set(ctx, want); err != nil {
				t.Fatalf("%s: set %v: %v", rs.Table, want, err)
			}
			rs, err := d.Poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			w := 0.0
			if want {
				w = 1
			}
			checkReadings(t, byMetric(rs), map[string]any{"relay": w})
		}
		d.Close()
	}
	if !strings.Contains(strings.Join(srv.Requests(t), ","), "1 6 10 1") {
		t.Errorf("no register write among %q", srv.Requests(t))
	}
}

// profileFile is a profile's testdata: the registers of one or more units, set to values
// taken from the source named in Source, and the readings each unit must give.
type profileFile struct {
	Source string                     `json:"source"`
	Units  map[string]json.RawMessage `json:"units"`
	Want   map[string]map[string]any  `json:"want"` // by unit id
}

func loadProfile(t *testing.T, name string) (string, profileFile) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var pf profileFile
	if err := json.Unmarshal(b, &pf); err != nil {
		t.Fatal(err)
	}
	return string(b), pf
}

// Each profile reads a server loaded with its registers, and mbpoll reading the same registers
// agrees with the raw values we read: addressing and word order checked by another tool.
func TestProfiles(t *testing.T) {
	mbpoll := testpeer.RequireMbpoll(t)
	for _, name := range modbus.Profiles() {
		t.Run(name, func(t *testing.T) {
			doc, pf := loadProfile(t, name)
			if pf.Source == "" || len(pf.Want) == 0 {
				t.Fatal("testdata without a source or a unit to read")
			}
			srv := testpeer.StartModbusTCP(t, doc)
			for unit, want := range pf.Want {
				id, err := strconv.Atoi(unit)
				if err != nil {
					t.Fatal(err)
				}
				t.Run("unit"+unit, func(t *testing.T) {
					rs, err := poll(t, sensors.Spec{ID: "d", Driver: "modbus", Options: modbus.Options{Link: modbus.Link{Target: srv.Addr, UnitID: id}, Profile: name}})
					if err != nil {
						t.Fatalf("poll: %v", err)
					}
					checkReadings(t, byMetric(rs), want)
				})
			}

			// The batches a poll sends, read again by us and by mbpoll.
			reqs := srv.Requests(t)
			bus, err := mbdrv.Open(mbdrv.Conn{Mode: "tcp", Addr: srv.Addr}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer bus.Close()
			for _, rq := range reqs {
				var unit, fc, addr, count int
				if _, err := fmt.Sscanf(rq, "%d %d %d %d", &unit, &fc, &addr, &count); err != nil {
					t.Fatalf("request log %q: %v", rq, err)
				}
				table, mbt := mbdrv.Holding, "4"
				if fc == 4 {
					table, mbt = mbdrv.Input, "3"
				}
				ours := bus.ReadAll(context.Background(), uint8(unit), []mbdrv.Span{{Table: table, Addr: uint16(addr), Count: uint16(count)}})[0]
				if ours.Err != nil {
					t.Fatalf("%s: %v", rq, ours.Err)
				}
				theirs := mbpollRead(t, mbpoll, srv.Addr, unit, mbt+":hex", addr, count)
				if len(theirs) != count {
					t.Fatalf("%s: mbpoll read %d registers", rq, len(theirs))
				}
				for i := range theirs {
					v, _ := strconv.ParseUint(strings.TrimPrefix(theirs[i], "0x"), 16, 16)
					if uint16(v) != ours.Regs[i] {
						t.Errorf("register %d: mbpoll 0x%04x, rackwatch 0x%04x", addr+i, v, ours.Regs[i])
					}
				}
				// Meters are all float32: mbpoll's own float decoding (high word first) agrees, to
				// the six digits mbpoll prints (printf's %g).
				if strings.HasPrefix(name, "sdm") {
					floats := mbpollRead(t, mbpoll, srv.Addr, unit, mbt+":float", addr, count/2, "-B")
					for i := range floats {
						ours, _, _ := mbdrv.Decode(ours.Regs[2*i:2*i+2], mbdrv.Float32, false)
						if g := fmt.Sprintf("%.6g", ours); g != floats[i] {
							t.Errorf("float at %d: mbpoll %s, rackwatch %s", addr+2*i, floats[i], g)
						}
					}
				}
			}
		})
	}
}

var mbpollLine = regexp.MustCompile(`(?m)^\[\d+\]:\s+(\S+)`)

func mbpollRead(t *testing.T, bin, addr string, unit int, typ string, reg, count int, extra ...string) []string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	args := append([]string{"-1", "-q", "-m", "tcp", "-a", strconv.Itoa(unit), "-t", typ,
		"-r", strconv.Itoa(reg + 1), "-c", strconv.Itoa(count), "-p", port}, extra...)
	args = append(args, host)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll %v: %v\n%s", args, err, out)
	}
	var vals []string
	for _, m := range mbpollLine.FindAllStringSubmatch(string(out), -1) {
		vals = append(vals, m[1])
	}
	return vals
}

// A modbus device's class follows its profile, or its relay entry; so does its safe state.
func TestDeviceClass(t *testing.T) {
	on := modbus.Relay{Table: "coil", Address: 3}
	for _, c := range []struct {
		o    modbus.Options
		want sensors.Class
	}{
		{modbus.Options{Profile: "apc-smart-ups"}, sensors.ClassUPS},
		{modbus.Options{Profile: "sdm630"}, sensors.ClassPower},
		{modbus.Options{Profile: "sdm120"}, sensors.ClassPower},
		{modbus.Options{Profile: "dse-gencomm"}, sensors.ClassGenerator},
		{modbus.Options{Profile: "dse-gencomm", Relay: &on}, sensors.ClassRelay},
		{modbus.Options{Relay: &on}, sensors.ClassRelay},
		{modbus.Options{Registers: []modbus.Register{{Name: "x"}}}, sensors.ClassOther},
	} {
		if got := sensors.SpecClass(sensors.Spec{ID: "d", Driver: modbus.Name, Options: c.o}); got != c.want {
			t.Errorf("%+v: class %q, want %q", c.o, got, c.want)
		}
	}
	safe := sensors.Spec{Driver: modbus.Name, Options: modbus.Options{Relay: &on, SafeState: "on"}}
	if !sensors.SafeOn(safe) {
		t.Error("a relay entry with safe_state on is not safe on")
	}
	if sensors.SafeOn(sensors.Spec{Driver: modbus.Name, Options: modbus.Options{Relay: &on}}) {
		t.Error("a relay entry is safe on without safe_state")
	}
}

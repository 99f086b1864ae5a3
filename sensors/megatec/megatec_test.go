package megatec

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	drv "github.com/rackwatch/rackwatch/drivers/megatec"
	"github.com/rackwatch/rackwatch/internal/upsemu"
	"github.com/rackwatch/rackwatch/sensors"
)

func newDevice(t *testing.T, port string) sensors.Device {
	t.Helper()
	dev, err := sensors.New(sensors.Spec{ID: "ups1", Driver: "megatec", Options: Options{Port: port}}, sensors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func poll(t *testing.T, dev sensors.Device) (map[string]sensors.Reading, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := dev.Poll(ctx)
	m := map[string]sensors.Reading{}
	for _, r := range rs {
		if _, dup := m[r.Metric]; dup {
			t.Errorf("metric %s twice", r.Metric)
		}
		if r.Device != "ups1" {
			t.Errorf("%s: device %q", r.Metric, r.Device)
		}
		if u, ok := Metrics[r.Metric]; !ok || u != r.Unit {
			t.Errorf("%s: unit %q, Metrics says %q (%v)", r.Metric, r.Unit, u, ok)
		}
		m[r.Metric] = r
	}
	return m, err
}

func mustPoll(t *testing.T, dev sensors.Device) map[string]sensors.Reading {
	t.Helper()
	m, err := poll(t, dev)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expect checks readings against the emulator's fields: numbers exactly, words as given.
func expect(t *testing.T, got map[string]sensors.Reading, want map[string]any) {
	t.Helper()
	for metric, w := range want {
		r, ok := got[metric]
		if !ok {
			t.Errorf("%s: missing", metric)
			continue
		}
		if r.Quality != sensors.Good {
			t.Errorf("%s: quality %s", metric, r.Quality)
			continue
		}
		switch w := w.(type) {
		case string:
			if !r.IsText || r.Text != w {
				t.Errorf("%s = %q, want %q", metric, r.String(), w)
			}
		case float64:
			if r.IsText || r.Value != w {
				t.Errorf("%s = %v, want %v", metric, r.String(), w)
			}
		case int:
			if r.IsText || r.Value != float64(w) {
				t.Errorf("%s = %v, want %v", metric, r.String(), w)
			}
		}
	}
}

func TestReadsEmulator(t *testing.T) {
	e := upsemu.StartT(t)
	e.Update(func(f *upsemu.Fields) {
		f.InputVoltage, f.InputFaultVoltage, f.OutputVoltage = 228.4, 180.5, 229.9
		f.Load, f.Frequency, f.Temperature = 37, 49.8, 31.5
	})
	dev := newDevice(t, e.Path())
	f := e.Fields()
	got := mustPoll(t, dev)
	expect(t, got, map[string]any{
		"input.voltage": f.InputVoltage, "input.voltage.fault": f.InputFaultVoltage,
		"output.voltage": f.OutputVoltage, "ups.load": f.Load, "input.frequency": f.Frequency,
		"battery.voltage": f.BatteryVoltage, "ups.temperature": f.Temperature,
		"ups.status": "OL", "ups.type": "offline / line interactive", "ups.beeper.status": "enabled",
		"ups.alarm": "", "battery.charge": 100,
		"input.voltage.nominal": f.RatedVoltage, "input.current.nominal": f.RatedCurrent,
		"battery.voltage.nominal": f.RatedBatteryVoltage, "input.frequency.nominal": f.RatedFrequency,
		"device.mfr": f.Company, "device.model": f.Model, "ups.firmware": f.Version,
	})
	if len(got) != len(Metrics) {
		t.Errorf("%d readings, Metrics lists %d", len(got), len(Metrics))
	}

	// Mains fails, then the battery runs low.
	e.SetOnBattery(true)
	e.Update(func(f *upsemu.Fields) { f.InputVoltage, f.Frequency, f.BatteryVoltage = 0, 0, 21.9 })
	got = mustPoll(t, dev)
	expect(t, got, map[string]any{"ups.status": "OB", "input.voltage": 0, "input.frequency": 0, "battery.voltage": 21.9, "battery.charge": 21})
	e.SetLowBattery(true)
	got = mustPoll(t, dev)
	expect(t, got, map[string]any{"ups.status": "OB LB"})

	// Mains back, with boost while the voltage is low; the UPS reports a fault.
	e.SetStatus(upsemu.Standby | upsemu.BypassBoost | upsemu.UPSFailed)
	e.Update(func(f *upsemu.Fields) { f.InputVoltage, f.OutputVoltage = 195, 221 })
	got = mustPoll(t, dev)
	expect(t, got, map[string]any{"ups.status": "ALARM OL BOOST", "ups.alarm": "UPS selftest failed!", "ups.beeper.status": "disabled"})

	// No temperature sensor: an error reading, not 0.
	e.Update(func(f *upsemu.Fields) { f.TemperatureNA = true })
	got = mustPoll(t, dev)
	if r := got["ups.temperature"]; r.Quality != sensors.Error {
		t.Errorf("ups.temperature with --.-: %+v", r)
	}
}

// TestPerCellBattery: an online unit sending 2.05 V per cell of a 24 V battery reads as
// 12 cells: 24.6 V, and nutdrv_qx's charge guess from it.
func TestPerCellBattery(t *testing.T) {
	e := upsemu.StartT(t)
	e.Update(func(f *upsemu.Fields) { f.BatteryVoltage = 2.05; f.Status = upsemu.BeeperOn })
	dev := newDevice(t, e.Path())
	got := mustPoll(t, dev)
	c, _ := drv.BatteryCharge(2.05, 12, 24)
	expect(t, got, map[string]any{"battery.voltage": 24.6, "battery.charge": c, "ups.type": "online"})
	if c != 73 {
		t.Errorf("charge guess %v, want 73", c)
	}
}

// TestFaultsAndRecovery: each way a line goes wrong gives an error and error readings,
// never a panic or a stale value; the next good reply is read at once.
func TestFaultsAndRecovery(t *testing.T) {
	e := upsemu.StartT(t)
	dev := newDevice(t, e.Path())
	mustPoll(t, dev)
	for _, tc := range []struct {
		fault upsemu.Fault
		err   error
	}{
		{upsemu.FaultSilent, drv.ErrTimeout},
		{upsemu.FaultGarbage, drv.ErrGarbage},
		{upsemu.FaultEcho, drv.ErrEcho},
		{upsemu.FaultTruncated, drv.ErrShort},
		{upsemu.FaultNAK, drv.ErrNAK},
	} {
		e.SetFault(tc.fault)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rs, err := dev.Poll(ctx)
		cancel()
		if !errors.Is(err, tc.err) {
			t.Errorf("fault %d: err %v, want %v", tc.fault, err, tc.err)
		}
		for _, r := range rs {
			if slices.Contains(q1Metrics, r.Metric) && r.Quality != sensors.Error {
				t.Errorf("fault %d: %s quality %s", tc.fault, r.Metric, r.Quality)
			}
			if r.Metric == "device.model" && r.Quality != sensors.Good {
				t.Errorf("fault %d: static device.model lost: %+v", tc.fault, r)
			}
		}
		e.SetFault(upsemu.FaultNone)
		got := mustPoll(t, dev)
		expect(t, got, map[string]any{"ups.status": "OL", "input.voltage": 230.0})
	}
	// A reply without its CR, but whole, is taken.
	e.SetFault(upsemu.FaultNoCR)
	expect(t, mustPoll(t, dev), map[string]any{"ups.status": "OL"})
}

func TestMissingPort(t *testing.T) {
	dev := newDevice(t, "/dev/nonexistent-rackwatch-tty")
	m, err := poll(t, dev)
	if err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("err = %v", err)
	}
	if r := m["ups.status"]; r.Quality != sensors.Error {
		t.Fatalf("ups.status %+v", r)
	}
}

func TestSpec(t *testing.T) {
	d, ok := sensors.Lookup("megatec")
	if !ok || !slices.Equal(d.Required, []string{"port"}) || !slices.Contains(d.Keys(), "baud") {
		t.Fatalf("registry: %+v %v", d, ok)
	}
	for _, tc := range []struct {
		spec sensors.Spec
		ok   bool
	}{
		{sensors.Spec{ID: "u", Options: Options{Port: "/dev/ttyS0"}}, true},
		{sensors.Spec{ID: "u", Options: Options{Port: "/dev/ttyS0", Baud: 9600}}, true},
		{sensors.Spec{ID: "u", Options: Options{Port: "/dev/ttyS0", Baud: 1234}}, false},
		{sensors.Spec{ID: "u"}, false},
	} {
		dev, err := New(tc.spec)
		if (err == nil) != tc.ok {
			t.Errorf("%+v: err %v", tc.spec, err)
		}
		if err == nil && dev.baud != max(sensors.Opts[Options](tc.spec).Baud, DefaultBaud) {
			t.Errorf("%+v: baud %d", tc.spec, dev.baud)
		}
	}
}

func TestInstantCommands(t *testing.T) {
	defer func(w time.Duration) { commandWait = w }(commandWait)
	commandWait = 200 * time.Millisecond
	e := upsemu.StartT(t)
	dev := newDevice(t, e.Path())
	cmd := dev.(sensors.Commander)
	if !slices.Contains(cmd.Commands(), "test.battery.start.quick") {
		t.Fatalf("Commands() = %v", cmd.Commands())
	}
	ctx := context.Background()
	steps := []struct {
		cmd, arg, sent, status, beeper string
	}{
		{"test.battery.start.quick", "", "T", "OL CAL", "enabled"},
		{"test.battery.stop", "", "CT", "OL", "enabled"},
		{"test.battery.start.deep", "", "TL", "OL CAL", "enabled"},
		{"test.battery.stop", "", "CT", "OL", "enabled"},
		{"test.battery.start", "120", "T02", "OL CAL", "enabled"},
		{"test.battery.stop", "", "CT", "OL", "enabled"},
		{"beeper.toggle", "", "Q", "OL", "disabled"},
		{"shutdown.return", "", "S.5R0003", "ALARM OL FSD", "disabled"},
		{"shutdown.stop", "", "C", "OL", "disabled"},
	}
	for _, s := range steps {
		if err := cmd.Command(ctx, s.cmd, s.arg); err != nil {
			t.Fatalf("%s: %v", s.cmd, err)
		}
		rec := e.Received()
		if rec[len(rec)-1] != s.sent {
			t.Fatalf("%s: UPS got %q, want %q", s.cmd, rec[len(rec)-1], s.sent)
		}
		expect(t, mustPoll(t, dev), map[string]any{"ups.status": s.status, "ups.beeper.status": s.beeper})
	}
	if err := cmd.Command(ctx, "outlet.1.off", ""); !errors.Is(err, drv.ErrUnknownCommand) {
		t.Errorf("unknown command: %v", err)
	}
	e.SetFault(upsemu.FaultEcho)
	if err := cmd.Command(ctx, "beeper.toggle", ""); !errors.Is(err, drv.ErrEcho) {
		t.Errorf("refused command: %v", err)
	}
}

// TestConcurrentPollAndCommand: the NUT server's INSTCMD and the poller share the line.
func TestConcurrentPollAndCommand(t *testing.T) {
	e := upsemu.StartT(t)
	dev := newDevice(t, e.Path())
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 3; i++ {
			if err := dev.(sensors.Commander).Command(context.Background(), "beeper.toggle", ""); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < 4; i++ {
		if _, err := poll(t, dev); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(fmt.Sprint(e.Received()), "Q1"); n < 4 {
		t.Fatalf("%d Q1 sent", n)
	}
}

// TestNotATty: a port that is not a tty (a QEMU guest's virtio-serial /dev/vportNpM) is
// opened as a plain file. A FIFO stands in for it here: what the driver writes comes back,
// as from a line that echoes, and must be refused as an echo, not hang or be read as data.
// /dev/null, which never answers, must time out.
func TestNotATty(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "vport0p1")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		port string
		err  error
	}{{fifo, drv.ErrEcho}, {"/dev/null", drv.ErrTimeout}} {
		dev := newDevice(t, tc.port)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := dev.Poll(ctx)
		cancel()
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.port, err, tc.err)
		}
	}
}

// TestNoRatingsNoIdentity: a unit that NAKs F and ignores I (both seen in the captures)
// still gives its status at once; without a nominal voltage there is no charge guess and
// the battery voltage is as sent.
func TestNoRatingsNoIdentity(t *testing.T) {
	e := upsemu.StartT(t)
	e.SetCommandFault("F", upsemu.FaultNAK)
	e.SetCommandFault("I", upsemu.FaultSilent)
	e.Update(func(f *upsemu.Fields) { f.BatteryVoltage = 2.26 })
	dev := newDevice(t, e.Path())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	rs, err := dev.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("poll took %v: the silent I held it", d)
	}
	got := map[string]sensors.Reading{}
	for _, r := range rs {
		got[r.Metric] = r
	}
	expect(t, got, map[string]any{"ups.status": "OL", "battery.voltage": 2.26})
	for _, m := range []string{"battery.charge", "device.mfr", "input.voltage.nominal"} {
		if r, ok := got[m]; ok {
			t.Errorf("%s present: %+v", m, r)
		}
	}
}

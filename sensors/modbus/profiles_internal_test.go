package modbus

import (
	"errors"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

// Each status bit apc_modbus.c's upsdrv_updateinfo tests gives the flag NUT sets, in NUT's
// order; the bits NUT turns into alarms or a buzzer mode give none.
func TestAPCStatusBits(t *testing.T) {
	for _, c := range []struct {
		status, signaling, batteryError, calibration, input uint32
		want                                                string
	}{
		{status: 1 << 1, want: "OL"},
		{status: 1 << 2, want: "OB"},
		{status: 1<<1 | 1<<2, want: "OL OB"},
		{status: 1<<1 | 1<<3, want: "OL BYPASS"},
		{status: 1 << 4, want: "OFF"},
		{status: 1<<1 | 1<<5 | 1<<6, want: "OL"}, // general fault, input not acceptable: NUT alarms
		{status: 1<<1 | 1<<13, want: "OL"},       // high efficiency: NUT's buzzmode, not a flag
		{status: 1<<1 | 1<<7, want: "OL TEST"},   // test in progress
		{status: 1<<2 | 1<<21, want: "OB OVER"},  // overload
		{status: 1 << 2, signaling: 1 << 1, want: "OB LB"},
		{status: 1 << 2, signaling: 1 << 0, want: "OB"}, // power failure, not shutdown imminent
		{status: 1 << 1, batteryError: 1 << 2, want: "OL RB"},
		{status: 1 << 1, batteryError: 1<<0 | 1<<1 | 1<<3, want: "OL"}, // other battery errors: alarms
		{status: 1 << 1, calibration: 1 << 1, want: "OL CAL"},
		{status: 1 << 1, calibration: 1 << 0, want: "OL"}, // calibration pending
		{status: 1 << 1, input: 1 << 5, want: "OL BOOST"},
		{status: 1 << 1, input: 1 << 6, want: "OL TRIM"},
		{status: 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<7 | 1<<21, signaling: 2, batteryError: 4, calibration: 2, input: 1<<5 | 1<<6,
			want: "OL OB BYPASS OFF TEST OVER LB RB CAL BOOST TRIM"},
	} {
		v := map[string]value{
			"_status": {num: float64(c.status)}, "_signaling": {num: float64(c.signaling)},
			"_battery_error": {num: float64(c.batteryError)}, "_calibration": {num: float64(c.calibration)},
			"_input_status": {num: float64(c.input)},
		}
		rs := apcStatus("u", v, time.Unix(0, 0))
		if rs[0].Metric != "ups.status" || rs[0].Text != c.want {
			t.Errorf("%+v: %+v, want %q", c, rs[0], c.want)
		}
		if rs[1].Metric != "ups.mfr" || rs[1].Text != "American Power Conversion" {
			t.Errorf("ups.mfr: %+v", rs[1])
		}
	}
	failed := apcStatus("u", map[string]value{"_status": {err: errors.New("timeout")}}, time.Unix(0, 0))
	if failed[0].Quality != sensors.Error {
		t.Errorf("unread status: %+v", failed[0])
	}
}

// An engine state the controller does not name (15 is GenComm's "not available") says
// nothing about whether the engine runs.
func TestDSEStateNotAvailable(t *testing.T) {
	for _, c := range []struct {
		state   float64
		running any
	}{{0, 0.0}, {1, 0.0}, {2, 1.0}, {3, 1.0}, {4, 0.0}, {5, 0.0}, {6, 0.0}, {15, nil}} {
		var got *sensors.Reading
		for _, r := range dseDerive("g", map[string]value{"engine.state": {num: c.state}}, time.Unix(0, 0)) {
			if r.Metric == "engine.running" {
				got = &r
			}
		}
		switch want := c.running.(type) {
		case nil:
			if got == nil || got.Quality != sensors.Error {
				t.Errorf("state %v: %+v, want an error", c.state, got)
			}
		case float64:
			if got == nil || got.Quality != sensors.Good || got.Value != want {
				t.Errorf("state %v: %+v, want %v", c.state, got, want)
			}
		}
	}
}

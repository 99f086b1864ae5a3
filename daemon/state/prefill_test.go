package state

import (
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

// TestBenchPrefill: with the benchmark's variable set, a metric's first reading finds a full
// day of history before it, one point a minute.
func TestBenchPrefill(t *testing.T) {
	t.Setenv(benchPrefillEnv, "24h")
	s := New(24 * time.Hour)
	s.AddDevice("d", "sim.env")
	now := time.Now()
	s.Update("d", sensors.DeviceOK, []sensors.Reading{sensors.Num("d", "temperature", 21, "°C", now)}, nil, now)
	h := s.History("d", "temperature", now.Add(-25*time.Hour))
	if len(h) < 1430 {
		t.Fatalf("prefilled history has %d points, want a day of minutes", len(h))
	}
	if last := h[len(h)-1]; last.Value != 21 {
		t.Errorf("newest point %v, want the real reading 21", last.Value)
	}

	t.Setenv(benchPrefillEnv, "")
	s = New(24 * time.Hour)
	s.Update("d", sensors.DeviceOK, []sensors.Reading{sensors.Num("d", "temperature", 21, "°C", now)}, nil, now)
	if h := s.History("d", "temperature", now.Add(-25*time.Hour)); len(h) != 1 {
		t.Errorf("without the variable the history has %d points, want 1", len(h))
	}
}

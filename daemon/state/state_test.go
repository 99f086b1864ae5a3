package state

import (
	"errors"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/sensors"
)

func TestStaleReadingsAfterFailedPoll(t *testing.T) {
	s := New(24 * time.Hour)
	s.AddDevice("ups1", "megatec")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d, _ := s.Device("ups1"); d.State != sensors.DeviceStale {
		t.Fatalf("before the first poll: %q", d.State)
	}
	s.Update("ups1", sensors.DeviceOK, []sensors.Reading{sensors.Num("ups1", "ups.load", 20, "%", now), sensors.Text("ups1", "ups.status", "OL", now)}, nil, now)
	d, _ := s.Device("ups1")
	if d.State != sensors.DeviceOK || d.Readings["ups.load"].Quality != sensors.Good || !d.LastSeen.Equal(now) {
		t.Fatalf("after a good poll: %+v", d)
	}
	s.Update("ups1", sensors.DeviceError, nil, errors.New("read Q1: timeout"), now.Add(time.Second))
	d, _ = s.Device("ups1")
	if d.State != sensors.DeviceError || d.Readings["ups.load"].Quality != sensors.Stale || d.Readings["ups.status"].Quality != sensors.Stale || d.LastErr == "" {
		t.Fatalf("after a failed poll: %+v", d)
	}
	if !d.LastSeen.Equal(now) {
		t.Fatalf("last_seen moved on a failed poll")
	}
	// A poll that refreshes only some metrics leaves the rest stale.
	s.Update("ups1", sensors.DeviceOK, []sensors.Reading{sensors.Num("ups1", "ups.load", 21, "%", now.Add(2*time.Second))}, nil, now.Add(2*time.Second))
	d, _ = s.Device("ups1")
	if d.Readings["ups.load"].Quality != sensors.Good || d.Readings["ups.status"].Quality != sensors.Stale {
		t.Fatalf("partial refresh: %+v", d.Readings)
	}
}

func TestRingBoundedAndOrdered(t *testing.T) {
	r := NewRing(24 * time.Hour)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Two days at 1 s: memory must not grow, and only the last 24 h come back.
	for i := 0; i < 2*86400; i += 1 {
		r.Add(start.Add(time.Duration(i)*time.Second), float64(i%100))
	}
	if b := r.Bytes(); b > 20000 {
		t.Fatalf("ring uses %d bytes for 24 h", b)
	}
	pts := r.Since(time.Time{})
	if len(pts) < 1400 || len(pts) > 1440+recentMax {
		t.Fatalf("%d points", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if !pts[i].TS.After(pts[i-1].TS) {
			t.Fatalf("not in order at %d: %v then %v", i, pts[i-1].TS, pts[i].TS)
		}
	}
	first := pts[0].TS
	if first.Before(start.Add(24*time.Hour - time.Minute)) {
		t.Fatalf("oldest point %v is older than the window", first)
	}
	last := pts[len(pts)-1]
	if !last.TS.Equal(start.Add((2*86400 - 1) * time.Second)) {
		t.Fatalf("newest point %v", last.TS)
	}
	hour := r.Since(start.Add(47 * time.Hour))
	if len(hour) < 59 || len(hour) > 61+recentMax {
		t.Fatalf("last hour: %d points", len(hour))
	}
}

func TestRingGapAndMean(t *testing.T) {
	r := NewRing(24 * time.Hour)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.Add(t0, 10)
	r.Add(t0.Add(10*time.Second), 20)
	r.Add(t0.Add(3*time.Hour), 5) // a gap of three hours: the old minute stays, nothing invented
	pts := r.Since(time.Time{})
	if len(pts) != 2 || pts[0].Value != 15 || pts[1].Value != 5 {
		t.Fatalf("%+v", pts)
	}
}

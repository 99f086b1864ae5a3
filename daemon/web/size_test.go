package web

import (
	"bytes"
	"compress/gzip"
	"math"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/sensors"
)

// TestPageSize24h: the page with a full day of history behind every chart of a demo-sized
// rack stays under 100 KB on the wire (gzip, as every browser asks for it), and under
// 300 KB even uncompressed.
func TestPageSize24h(t *testing.T) {
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	metrics := map[string]map[string]string{
		"ups1":    {"battery.charge": "%", "battery.runtime": "s", "battery.voltage": "V", "input.voltage": "V", "input.frequency": "Hz", "output.voltage": "V", "ups.load": "%", "ups.temperature": "°C"},
		"inlet-a": {"temperature": "°C", "humidity": "%RH"},
		"inlet-b": {"temperature": "°C", "humidity": "%RH"},
		"inlet-c": {"temperature": "°C", "humidity": "%RH", "pressure": "Pa"},
		"feed-a":  {"voltage": "V", "current": "A", "power": "W", "energy": "Wh"},
		"door":    {"contact": ""}, "leak": {"contact": ""}, "genset": {"relay": ""}, "crac2": {"relay": ""},
	}
	store := state.New(24 * time.Hour)
	st := Status{Site: "demo", Node: "rack1", Version: "test", Incidents: nil, Relays: []Relay{{ID: "genset", Mode: "auto"}, {ID: "crac2", Mode: "auto"}}}
	i := 0
	for dev, ms := range metrics {
		store.AddDevice(dev, "sim")
		ds := DeviceStatus{ID: dev, Driver: "sim", State: "ok", Readings: map[string]ReadingStatus{}}
		for m, unit := range ms {
			i++
			for ts := now.Add(-24 * time.Hour); !ts.After(now); ts = ts.Add(30 * time.Second) {
				// Noisy values: the worst case for the path's length and for gzip.
				v := 20 + 10*math.Sin(float64(ts.Unix())/3000+float64(i)) + float64(ts.Unix()%7)/10
				store.Push(dev, []sensors.Reading{sensors.Num(dev, m, math.Round(v*100)/100, unit, ts)})
			}
			ds.Readings[m] = ReadingStatus{Value: 21.5, Unit: unit, Quality: "good", TS: sensors.FormatTime(now)}
		}
		st.Devices = append(st.Devices, ds)
	}
	d := build(st, now)
	d.Range, d.Nonce, d.CanLogin = "24h", "nonce", true
	d.Charts = charts(st, now, 24*time.Hour, store.History)
	var raw bytes.Buffer
	if err := renderPage(&raw, d, false); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw.Bytes())
	w.Close()
	t.Logf("24 h page: %d bytes, %d gzipped, %d charts", raw.Len(), gz.Len(), i)
	if gz.Len() > 100_000 {
		t.Errorf("page is %d bytes gzipped, over 100 KB", gz.Len())
	}
	if raw.Len() > 300_000 {
		t.Errorf("page is %d bytes uncompressed", raw.Len())
	}
}

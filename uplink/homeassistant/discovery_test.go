package homeassistant

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/uplink"
)

func openDB(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func testSite(devs ...Device) Site {
	return Site{Enabled: true, Root: "rackwatch/s/n", Site: "s", Node: "n", Version: "v", Devices: devs}
}

func (p *Publisher) topicsNow() (wanted, stale []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t := range p.configs {
		wanted = append(wanted, t)
	}
	for t := range p.staleAt {
		stale = append(stale, t)
	}
	sort.Strings(wanted)
	sort.Strings(stale)
	return wanted, stale
}

func num(dev, metric, unit string, v float64) uplink.Reading {
	return uplink.Reading{Device: dev, Metric: metric, Value: v, Unit: unit, Quality: "good"}
}

// TestRestartPublishesAtOnce: after a restart the configs learned before are wanted at
// once, before any telemetry, so HA's entities do not come and go; a device whose config
// changed learns its readings again and the one it lost becomes a config to clear.
func TestRestartPublishesAtOnce(t *testing.T) {
	db := openDB(t)
	ups := Device{ID: "ups1", Model: "sim.ups", Class: "ups", Fingerprint: "a"}
	p, err := New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(testSite(ups)); err != nil {
		t.Fatal(err)
	}
	p.Observe([]uplink.Reading{num("ups1", "battery.charge", "%", 100), num("ups1", "input.voltage", "V", 230),
		{Device: "ups1", Metric: "ups.status", Value: "OL", Quality: "good"}})
	before, _ := p.topicsNow()
	if len(before) != 4 { // three readings and the appliance
		t.Fatalf("wanted %v", before)
	}

	q, err := New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := db.Stats()
	w0 := st.TxStats.GetWrite()
	if err := q.Set(testSite(ups)); err != nil {
		t.Fatal(err)
	}
	q.Observe([]uplink.Reading{num("ups1", "battery.charge", "%", 98)})
	after, stale := q.topicsNow()
	if !slices.Equal(before, after) || len(stale) != 0 {
		t.Fatalf("after a restart: wanted %v stale %v, want %v and none", after, stale, before)
	}
	if st = db.Stats(); st.TxStats.GetWrite() != w0 {
		t.Errorf("a restart with the same devices wrote %d pages", st.TxStats.GetWrite()-w0)
	}

	ups.Fingerprint = "b"
	if err := q.Set(testSite(ups)); err != nil {
		t.Fatal(err)
	}
	q.Observe([]uplink.Reading{num("ups1", "battery.charge", "%", 99), {Device: "ups1", Metric: "ups.status", Value: "OB", Quality: "good"}})
	after, stale = q.topicsNow()
	if len(after) != 3 || len(stale) != 1 || !strings.Contains(stale[0], "input_voltage") {
		t.Fatalf("after the device changed: wanted %v stale %v", after, stale)
	}
	q.cleared(stale)
	if _, stale = q.topicsNow(); len(stale) != 0 {
		t.Fatalf("still stale after clearing: %v", stale)
	}
	r, err := New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Set(testSite(ups))
	if _, stale = r.topicsNow(); len(stale) != 0 {
		t.Fatalf("a cleared config comes back as stale after a restart: %v", stale)
	}
}

// TestQuietObserveWritesNothing: telemetry that brings nothing new neither renders nor
// writes.
func TestQuietObserveWritesNothing(t *testing.T) {
	db := openDB(t)
	p, _ := New(db, nil)
	p.Set(testSite(Device{ID: "inlet", Model: "sim.env", Class: "environmental", Fingerprint: "x"}))
	rs := []uplink.Reading{num("inlet", "temperature", "°C", 23), num("inlet", "humidity", "%RH", 45)}
	p.Observe(rs)
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	tick, w0 := p.tick, writes()
	for i := 0; i < 100; i++ {
		rs[0].Value = float64(20 + i%5)
		p.Observe(rs)
	}
	if p.tick != tick || writes() != w0 {
		t.Errorf("observing the same readings rendered %d times and wrote %d pages", p.tick-tick, writes()-w0)
	}
}

// TestMaxEntities: readings past MaxEntities get no entity and are counted.
func TestMaxEntities(t *testing.T) {
	p, _ := New(openDB(t), nil)
	p.Set(testSite(Device{ID: "big", Model: "snmp", Class: "other", Fingerprint: "x"}))
	var rs []uplink.Reading
	for i := 0; i < MaxEntities+50; i++ {
		rs = append(rs, num("big", fmt.Sprintf("m%d", i), "W", 1))
	}
	p.Observe(rs)
	st := p.Stats()
	if st.Entities != MaxEntities+1 || st.Dropped != 50 {
		t.Errorf("stats %+v, want %d entities (and the appliance) and 50 dropped", st, MaxEntities)
	}
}

// TestTopicID: readings never share a config topic, and the topic levels are what HA
// accepts.
func TestTopicID(t *testing.T) {
	pairs := [][2]string{{"ups1", "battery.charge"}, {"ups1", "battery_charge"}, {"ups1_battery", "charge"},
		{"ups1", "battery.charge.x"}, {"ups1", "battery/charge"}, {"a-b", "c"}, {"a", "b-c"}, {"a", "b.c"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		id := topicID(p[0], p[1])
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				t.Errorf("%v: %q holds %q", p, id, c)
			}
		}
		if o, ok := seen[id]; ok {
			t.Errorf("%v and %v share %q", p, o, id)
		}
		seen[id] = p
	}
	if got := topicID("ups1", "battery.charge"); got != "ups1_battery_charge" {
		t.Errorf("plain names: %q", got)
	}
}

func TestCheckPrefix(t *testing.T) {
	for p, ok := range map[string]bool{"homeassistant": true, "ha/discovery": true, "": false, "ha/#": false, "/ha": false, "ha/": false, "a//b": false} {
		if err := CheckPrefix(p); (err == nil) != ok {
			t.Errorf("%q: %v", p, err)
		}
	}
}

// TestDeviceIdentity: a device that reports its maker and model (NUT's ups.mfr, ups.model)
// shows them in HA's device block; a metric name a template cannot hold gets no entity and
// is counted.
func TestDeviceIdentity(t *testing.T) {
	p, _ := New(openDB(t), nil)
	p.Set(testSite(Device{ID: "ups2", Model: "upsmib", Class: "ups", Fingerprint: "x"}))
	p.Observe([]uplink.Reading{num("ups2", "battery.charge", "%", 90),
		{Device: "ups2", Metric: "ups.mfr", Value: "APC", Quality: "good"},
		{Device: "ups2", Metric: "ups.model", Value: "Smart-UPS 1500", Quality: "good"},
		num("ups2", "bad{{name", "W", 1)})
	p.mu.Lock()
	defer p.mu.Unlock()
	var cfg struct {
		Device struct{ Manufacturer, Model string }
	}
	found := false
	for topic, c := range p.configs {
		if strings.Contains(topic, "battery_charge") {
			found = true
			if err := json.Unmarshal(c, &cfg); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(topic, "bad") {
			t.Errorf("an entity for an unusable name: %s", topic)
		}
	}
	if !found || cfg.Device.Manufacturer != "APC" || cfg.Device.Model != "Smart-UPS 1500 (upsmib)" {
		t.Errorf("device block %+v", cfg.Device)
	}
	if p.dropped != 1 {
		t.Errorf("dropped %d, want 1", p.dropped)
	}
}

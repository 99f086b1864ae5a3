package snmp

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
)

// The PDU walk (testdata/apc_rpdu.snmprec) uses APC PowerNet-MIB rPDU objects: device power
// in W, phase load in 0.1 A, device energy in 0.1 kWh, phase voltage in V.
var pduMetrics = []Metric{
	{Name: "power", OID: "1.3.6.1.4.1.318.1.1.12.1.16.0", Unit: "W", Scale: 1},
	{Name: "current", OID: ".1.3.6.1.4.1.318.1.1.12.2.3.1.1.2.1", Unit: "A", Scale: 0.1},
	{Name: "energy", OID: "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1", Unit: "Wh", Scale: 100},
	{Name: "voltage", OID: "1.3.6.1.4.1.318.1.1.26.6.3.1.6.1", Unit: "V"}, // scale 0 means 1
	{Name: "name", OID: "1.3.6.1.4.1.318.1.1.12.1.1.0"},
	// Outlet 1's current: this PDU has no switched outlets, so the agent has no such object.
	{Name: "outlet1.current", OID: "1.3.6.1.4.1.318.1.1.26.9.4.3.1.6.1", Unit: "A", Scale: 0.1},
}

func poll(t *testing.T, d sensors.Device) (map[string]sensors.Reading, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := d.Poll(ctx)
	m := map[string]sensors.Reading{}
	for _, r := range rs {
		if _, dup := m[r.Metric]; dup {
			t.Errorf("metric %s twice", r.Metric)
		}
		m[r.Metric] = r
	}
	return m, err
}

func TestPDU(t *testing.T) {
	addr := testpeer.StartSnmpsim(t, "testdata/apc_rpdu.snmprec")
	dev, err := sensors.New(sensors.Spec{ID: "pdu-a", Driver: "snmp", Options: Options{Agent: Agent{Target: addr, Community: "apc_rpdu", Version: "2c"}, Metrics: pduMetrics}}, sensors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	got, err := poll(t, dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		metric, unit string
		value        float64
	}{
		{"power", "W", 1234},
		{"current", "A", 5.4},
		{"energy", "Wh", 9876500},
		{"voltage", "V", 231},
	} {
		r := got[w.metric]
		if r.Quality != sensors.Good || r.IsText || r.Unit != w.unit || !near(r.Value, w.value) || r.Device != "pdu-a" {
			t.Errorf("%s = %+v, want %v %s good", w.metric, r, w.value, w.unit)
		}
	}
	if r := got["name"]; !r.IsText || r.Text != "rack12-pdu-a" || r.Quality != sensors.Good {
		t.Errorf("name = %+v, want text rack12-pdu-a", r)
	}
	if r := got["outlet1.current"]; r.Quality != sensors.Error || r.Unit != "A" {
		t.Errorf("missing OID gave %+v, want an error reading", r)
	}
	if len(got) != len(pduMetrics) {
		t.Errorf("%d readings, want %d", len(got), len(pduMetrics))
	}
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-9*max(1, b) && d > -1e-9*max(1, b)
}

// An agent that does not answer fails the poll (and names the target); it is not a set of
// error readings.
func TestSilentAgent(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d, err := New(sensors.Spec{ID: "pdu-b", Options: Options{Agent: Agent{Target: pc.LocalAddr().String()}, Metrics: pduMetrics[:1]}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rs, err := d.Poll(ctx)
	if err == nil || !strings.Contains(err.Error(), "pdu-b") || !strings.Contains(err.Error(), pc.LocalAddr().String()) {
		t.Fatalf("Poll = %v, %v; want an error naming the device and target", rs, err)
	}
}

func TestSpecErrors(t *testing.T) {
	ok := []Metric{{Name: "power", OID: "1.3.6.1.4.1.318.1.1.12.1.16.0"}}
	const tgt = "192.0.2.1:161"
	for name, o := range map[string]Options{
		"no target":      {Metrics: ok},
		"no metrics":     {Agent: Agent{Target: tgt}},
		"metric no oid":  {Agent: Agent{Target: tgt}, Metrics: []Metric{{Name: "p"}}},
		"duplicate name": {Agent: Agent{Target: tgt}, Metrics: append(ok, ok...)},
		"bad version":    {Agent: Agent{Target: tgt, Version: "5"}, Metrics: ok},
		"symbolic oid":   {Agent: Agent{Target: tgt}, Metrics: []Metric{{Name: "p", OID: "PowerNet-MIB::rPDUIdentDevicePowerWatts.0"}}},
		"v3 no pass file": {Agent: Agent{Target: tgt, V3: &sensors.SNMPv3{User: "u", AuthProtocol: "SHA", AuthPassFile: "/nonexistent/pw"}},
			Metrics: ok},
	} {
		spec := sensors.Spec{ID: "x", Options: o}
		if _, err := New(spec); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestClientConfigReadsPasswordFiles(t *testing.T) {
	dir := t.TempDir()
	auth, priv := filepath.Join(dir, "auth"), filepath.Join(dir, "priv")
	os.WriteFile(auth, []byte("authpass123\n"), 0o600)
	os.WriteFile(priv, []byte("privpass123\r\n"), 0o600)
	cfg, err := ClientConfig(Agent{Target: "192.0.2.1:161", V3: &sensors.SNMPv3{
		User: "rack", AuthProtocol: "SHA", AuthPassFile: auth, PrivProtocol: "AES", PrivPassFile: priv}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != "3" || cfg.V3.AuthPass != "authpass123" || cfg.V3.PrivPass != "privpass123" {
		t.Errorf("got %+v %+v", cfg, cfg.V3)
	}
}

package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	good := `site: s
node: r
web: {max_conns: 100, max_conns_per_addr: 10, max_event_streams: 4, read_header_timeout: 5s, read_timeout: 20s, write_timeout: 20s, idle_timeout: 2m}
nut: {listen: "127.0.0.1:3493", max_conns: 32, max_conns_per_addr: 8}
devices: [{id: ups1, driver: sim.ups}]
`
	cfg, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Web; w.MaxConns != 100 || w.MaxConnsPerAddr != 10 || w.MaxEventStreams != 4 || w.IdleTimeout != 2*time.Minute || cfg.NUT.MaxConnsPerAddr != 8 {
		t.Errorf("limits read as %+v, nut %+v", w, cfg.NUT)
	}
	bad := `site: s
node: r
web:
  max_conns: 10
  max_conns_per_addr: 20
  idle_timeout: -1s
nut:
  listen: "127.0.0.1:3493"
  max_conns: 8
  max_conns_per_addr: 8
devices: [{id: ups1, driver: sim.ups}]
`
	_, err = Parse("bad.yaml", []byte(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`bad.yaml:5: web max_conns_per_addr (20) is more than max_conns (10)`,
		`bad.yaml:6: web idle_timeout must not be negative`,
		`bad.yaml:10: nut max_conns_per_addr (8) must be below max_conns (8)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

package config

import (
	"strings"
	"testing"
)

func TestTrapsKeys(t *testing.T) {
	good := `site: a
node: b
traps: {listen: "127.0.0.1:1162", sources: [192.0.2.7, "198.51.100.0/24", "2001:db8::/32"], rate: 0.5, burst: 10, max_open: 5}
devices: [{id: u, driver: sim.ups}]
`
	cfg, err := Parse("t.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Traps.Rate != 0.5 || cfg.Traps.Burst != 10 || cfg.Traps.MaxOpen != 5 || len(cfg.Traps.Sources) != 3 {
		t.Errorf("traps: %+v", cfg.Traps)
	}
	for _, s := range cfg.Traps.Sources {
		if _, err := ParseSource(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := `site: a
node: b
traps:
  sources: [192.0.2.7, "198.51.100.0/33", not-an-address]
  rate: -1
devices: [{id: u, driver: sim.ups}]
`
	_, err = Parse("t.yaml", []byte(bad))
	if err == nil {
		t.Fatal("bad traps keys accepted")
	}
	for _, want := range []string{`t.yaml:4: traps source "198.51.100.0/33"`, `t.yaml:4: traps source "not-an-address"`, `rate, burst and max_open cannot be negative`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

package site

import (
	"fmt"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

// TestFSDServedWhileUPSSilent: once the shutdown is ordered, a UPS that stops answering (its
// polls fail and turn its readings to errors) still shows FSD over NUT, not DATA-STALE: the
// protected servers must act on the order whatever the UPS's link does.
func TestFSDServedWhileUPSSilent(t *testing.T) {
	emu := upsemu.StartT(t)
	emu.SetOnBattery(true)
	emu.SetLowBattery(true)
	s := runSite(t, fmt.Sprintf(`site: test
node: n1
data_dir: %s
web: {listen: "127.0.0.1:0"}
nut: {listen: "127.0.0.1:0"}
devices:
  - {id: ups1, driver: megatec, port: %s, poll: 200ms}
failover:
  power: {ups: [ups1], confirm_polls: 1}
`, t.TempDir(), emu.Path()))
	src := nutSource{s}
	testpeer.Eventually(t, 30*time.Second, "the shutdown ordered", func() bool {
		u, _ := src.UPS("ups1")
		return u.Vars["ups.status"] == "OB LB FSD"
	})
	emu.SetFault(upsemu.FaultSilent)
	testpeer.Eventually(t, 30*time.Second, "the UPS's polls failing", func() bool {
		d, _ := s.store.Device("ups1")
		return d.Readings["ups.status"].Quality == "error"
	})
	u, ok := src.UPS("ups1")
	if !ok || u.Stale || !hasFlag(u.Vars["ups.status"], "FSD") {
		t.Fatalf("silent UPS with a shutdown ordered: ok=%v stale=%v ups.status=%q, want FSD served", ok, u.Stale, u.Vars["ups.status"])
	}
}

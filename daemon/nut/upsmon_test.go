package nut_test

import (
	"os"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// secondary is a stock upsmon secondary of ups1 at addr that waits hostsync seconds for a
// primary's FSD before it shuts down on OB LB on its own.
func secondary(addr string, hostsync int) testpeer.Upsmon {
	return testpeer.Upsmon{UPS: "ups1@" + addr, User: "monuser", Password: "secret", Role: "secondary", HostSync: hostsync}
}

// Stock upsmon secondaries shut their hosts down when the site's UPS goes OB LB, or when the
// site orders a shutdown (FSD); three of them at once all do.
func TestUpsmonSecondaries(t *testing.T) {
	unshare, bin := testpeer.UpsmonPeers(t)
	for _, tc := range []struct {
		name   string
		change func(*source)
	}{
		{"OB LB", func(s *source) { s.set("ups1", "ups.status", "OB LB") }},
		{"FSD", func(s *source) { s.SetFSD("ups1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource()
			addr, srv := start(t, nut.Config{}, src)
			var flags []string
			for range 3 {
				flags = append(flags, testpeer.StartUpsmon(t, unshare, bin, secondary(addr, 1)))
			}
			testpeer.Eventually(t, 30*time.Second, "three upsmon logged in to ups1", func() bool {
				return srv.NumLogins("ups1") == 3
			})
			if cl := srv.Clients(); len(cl) != 3 || cl[0].User != "monuser" || cl[0].UPS != "ups1" {
				t.Errorf("Clients() = %+v", cl)
			}
			// On mains, after a few polls, nobody has shut down.
			src.set("ups1", "battery.charge", "99")
			time.Sleep(2500 * time.Millisecond) // POLLFREQ 1: lets each upsmon poll at least twice
			for _, f := range flags {
				if _, err := os.Stat(f); err == nil {
					t.Fatalf("upsmon shut down while the UPS was OL")
				}
			}
			tc.change(src)
			testpeer.Eventually(t, 30*time.Second, "every upsmon to run its SHUTDOWNCMD", func() bool {
				for _, f := range flags {
					if _, err := os.Stat(f); err != nil {
						return false
					}
				}
				return true
			})
		})
	}
}

// A stock upsmon primary (PRIMARY, then FSD on OB LB) and two secondaries that would wait 15 s
// for it: the primary's FSD reaches the site, and every host shuts down.
func TestUpsmonPrimarySetsFSD(t *testing.T) {
	unshare, bin := testpeer.UpsmonPeers(t)
	src := newSource()
	addr, srv := start(t, nut.Config{}, src)
	primary := testpeer.Upsmon{UPS: "ups1@" + addr, User: "admin", Password: "adm1n", Role: "primary", HostSync: 3}
	flags := []string{
		testpeer.StartUpsmon(t, unshare, bin, primary),
		testpeer.StartUpsmon(t, unshare, bin, secondary(addr, 15)),
		testpeer.StartUpsmon(t, unshare, bin, secondary(addr, 15)),
	}
	testpeer.Eventually(t, 30*time.Second, "the primary and two secondaries logged in", func() bool {
		cl := srv.Clients()
		primaries := 0
		for _, c := range cl {
			if c.Primary && c.User == "admin" {
				primaries++
			}
		}
		return len(cl) == 3 && primaries == 1
	})
	start := time.Now()
	src.set("ups1", "ups.status", "OB LB")
	testpeer.Eventually(t, 30*time.Second, "every upsmon to run its SHUTDOWNCMD", func() bool {
		for _, f := range flags {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	})
	src.mu.Lock()
	fsd := src.fsd["ups1"]
	src.mu.Unlock()
	if !fsd {
		t.Error("the primary never set FSD through the server")
	}
	if d := time.Since(start); d > 14*time.Second {
		t.Errorf("took %v: the secondaries seem to have given up on the primary instead of seeing its FSD", d)
	}
}

package traps

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTracker(t testing.TB, cfg Config) *Tracker {
	t.Helper()
	if cfg.Devices == nil {
		cfg.Devices = map[string]string{"ups2": "192.0.2.10:161", "pdu-a": "pdu-a.example:161", "ups1": "/dev/ttyUSB0"}
	}
	cfg.Lookup = func(host string) ([]net.IP, error) {
		if host == "pdu-a.example" {
			return []net.IP{net.ParseIP("192.0.2.11")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	return New(cfg)
}

func trap(from, oid string) snmptrap.Trap {
	return snmptrap.Trap{Source: netip.MustParseAddr(from), Version: "2c", Community: "public", TrapOID: oid, Name: snmptrap.Name(oid)}
}

const onBattery = "1.3.6.1.2.1.33.2.1"

// raised collects the keys of Raise actions.
func raised(acts []Action, into map[string]Action) {
	for _, a := range acts {
		if a.Kind == Raise {
			into[a.Key] = a
		}
	}
}

// 500 distinct trap OIDs from a device's address, all at once and then slowly: at most
// MaxOpen incidents and one storm incident, which counts every trap that was dropped.
func TestStormIsCapped(t *testing.T) {
	for _, spread := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprint("every ", spread), func(t *testing.T) {
			tr := newTracker(t, Config{})
			keys := map[string]Action{}
			limited := 0
			now := t0
			for i := 0; i < 500; i++ {
				out, acts := tr.Handle(trap("192.0.2.10", fmt.Sprintf("1.3.6.1.4.1.9999.0.%d", i)), now)
				if out == RateLimited {
					limited++
				}
				raised(acts, keys)
				now = now.Add(spread)
			}
			raised(tr.Tick(now), keys)
			storm, ok := keys["trap:ups2:storm"]
			if !ok || storm.Rule != RuleStorm || storm.Severity != incident.Warning {
				t.Fatalf("no warning trap-storm incident: %+v", keys)
			}
			if len(keys) > DefaultMaxOpen+1 {
				t.Errorf("%d incidents raised, want at most %d", len(keys), DefaultMaxOpen+1)
			}
			if storm.Value != limited || limited != 500-DefaultMaxOpen || tr.Limited() != uint64(limited) {
				t.Errorf("storm counts %v, %d rate limited, Limited() %d; want %d", storm.Value, limited, tr.Limited(), 500-DefaultMaxOpen)
			}
		})
	}
}

// Nothing but devices and listed sources opens anything, and the most urgent trap is no
// exception.
func TestSenders(t *testing.T) {
	tr := newTracker(t, Config{Sources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32")}})
	for _, c := range []struct {
		from, device string
		want         Outcome
	}{
		{"192.0.2.10", "ups2", Accepted},
		{"192.0.2.11", "pdu-a", Accepted}, // by host name
		{"::ffff:192.0.2.10", "ups2", Accepted},
		{"198.51.100.23", "198.51.100.23", Accepted},
		{"203.0.113.7", "203.0.113.7", Accepted},
		{"203.0.113.8", "", UnknownSource},
		{"192.0.2.99", "", UnknownSource},
		{"127.0.0.1", "", UnknownSource},
	} {
		out, acts := tr.Handle(trap(c.from, onBattery), t0)
		if out != c.want {
			t.Errorf("%s: %s, want %s", c.from, out, c.want)
			continue
		}
		if c.want != Accepted {
			if len(acts) != 0 {
				t.Errorf("%s: actions %+v from an unknown sender", c.from, acts)
			}
			continue
		}
		if len(acts) != 1 || acts[0].Kind != Raise || acts[0].Device != c.device || acts[0].Severity != incident.Critical || acts[0].Key != "trap:"+c.device+":on-battery" {
			t.Errorf("%s: %+v", c.from, acts)
		}
	}
	if tr.Unknown() != 3 {
		t.Errorf("Unknown() = %d, want 3", tr.Unknown())
	}
	if tr.Admit(netip.MustParseAddr("192.0.2.99")) || !tr.Admit(netip.MustParseAddr("192.0.2.10")) || !tr.Admit(netip.MustParseAddr("198.51.100.1")) || tr.Unknown() != 4 {
		t.Errorf("Admit: Unknown() = %d after one stranger more", tr.Unknown())
	}
}

// The token bucket: Burst at once, then Rate per second; a dropped trap that would have
// opened a critical incident makes the storm critical, a dropped repeat does not.
func TestRateLimit(t *testing.T) {
	tr := newTracker(t, Config{Rate: 2, Burst: 5})
	n := 0
	for i := 0; i < 8; i++ {
		if out, _ := tr.Handle(trap("192.0.2.10", onBattery), t0); out == Accepted {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d of 8 accepted at once, want the burst of 5", n)
	}
	if _, acts := tr.Handle(trap("192.0.2.10", onBattery), t0.Add(400*time.Millisecond)); len(acts) != 0 {
		t.Fatalf("a repeat with no token: %+v", acts)
	}
	if out, _ := tr.Handle(trap("192.0.2.10", onBattery), t0.Add(600*time.Millisecond)); out != Accepted {
		t.Fatalf("after 0.6 s at 2/s: %s", out)
	}
	keys := map[string]Action{}
	raised(tr.Tick(t0.Add(time.Second)), keys)
	if s := keys["trap:ups2:storm"]; s.Severity != incident.Warning || s.Value != 4 {
		t.Fatalf("storm after dropped repeats: %+v", s)
	}
	// A new critical alarm with no token left.
	alarm := trap("192.0.2.10", "1.3.6.1.2.1.33.2.3")
	alarm.Alarm = "LowBattery"
	for i := 0; i < 5; i++ {
		tr.Handle(trap("192.0.2.10", onBattery), t0.Add(time.Second))
	}
	out, acts := tr.Handle(alarm, t0.Add(time.Second))
	if out != RateLimited || len(acts) != 1 || acts[0].Key != "trap:ups2:storm" || acts[0].Severity != incident.Critical {
		t.Fatalf("dropped critical alarm: %s %+v", out, acts)
	}
}

// On battery resolves on a poll that shows mains; the others after ResolveAfter without a
// repeat, and the storm once it has been quiet as long, with its final count.
func TestResolve(t *testing.T) {
	tr := newTracker(t, Config{ResolveAfter: time.Minute, MaxOpen: 2})
	tr.Handle(trap("192.0.2.10", onBattery), t0)
	tr.Handle(trap("192.0.2.10", "1.3.6.1.4.1.9999.0.1"), t0)
	if acts := tr.Observe("ups2", []sensors.Reading{{Metric: "ups.status", Text: "OB DISCHRG", IsText: true, Quality: sensors.Good}}); len(acts) != 0 {
		t.Fatalf("still on battery, resolved: %+v", acts)
	}
	acts := tr.Observe("ups2", []sensors.Reading{{Metric: "ups.status", Text: "OL CHRG", IsText: true, Quality: sensors.Good}})
	if len(acts) != 1 || acts[0].Kind != Resolve || acts[0].Key != "trap:ups2:on-battery" {
		t.Fatalf("back on mains: %+v", acts)
	}
	// The cap is 2 and on-battery is gone: this one opens.
	if out, _ := tr.Handle(trap("192.0.2.10", "1.3.6.1.4.1.9999.0.2"), t0.Add(10*time.Second)); out != Accepted {
		t.Fatalf("with room under the cap: %s", out)
	}
	if out, _ := tr.Handle(trap("192.0.2.10", "1.3.6.1.4.1.9999.0.3"), t0.Add(10*time.Second)); out != RateLimited {
		t.Fatalf("past the cap: %s", out)
	}
	if acts := tr.Tick(t0.Add(59 * time.Second)); len(acts) != 0 {
		t.Fatalf("before ResolveAfter: %+v", acts)
	}
	acts = tr.Tick(t0.Add(70 * time.Second))
	got := map[string]any{}
	for _, a := range acts {
		if a.Kind == Resolve {
			got[a.Key] = a.Value
		}
	}
	want := map[string]any{"trap:ups2:1.3.6.1.4.1.9999.0.1": nil, "trap:ups2:1.3.6.1.4.1.9999.0.2": nil, "trap:ups2:storm": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resolved %v, want %v", got, want)
	}
}

func TestCommunities(t *testing.T) {
	if l, w := Communities(nil); len(l) != 1 || l[0] != "public" || w == "" {
		t.Errorf("empty: %v %q", l, w)
	}
	if l, w := Communities([]string{"s3cret"}); len(l) != 1 || l[0] != "s3cret" || w != "" {
		t.Errorf("configured: %v %q", l, w)
	}
}

// Senders in a large listed prefix cannot grow the tracker without bound, nor crowd out a
// device.
func TestSendersBounded(t *testing.T) {
	tr := newTracker(t, Config{Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Burst: 1, Rate: 0.001})
	a := netip.MustParseAddr("10.0.0.0")
	bound := maxSenders + len(tr.cfg.Devices)
	for i := 0; i < 3*bound; i++ {
		a = a.Next()
		tr.Handle(trap(a.String(), onBattery), t0)
	}
	if len(tr.buckets) > bound {
		t.Errorf("%d buckets kept, bound %d", len(tr.buckets), bound)
	}
	if tr.Limited() != uint64(2*bound) {
		t.Errorf("Limited() = %d, want %d", tr.Limited(), 2*bound)
	}
	if out, acts := tr.Handle(trap("192.0.2.10", onBattery), t0); out != Accepted || len(acts) != 1 {
		t.Errorf("a device during a flood from a listed prefix: %s %+v", out, acts)
	}
	if tr.listed > maxOpenTotal || len(tr.opened) > maxOpenTotal+1 {
		t.Errorf("%d listed senders' incidents tracked, %d in all", tr.listed, len(tr.opened))
	}
}

// FuzzHandle: no trap makes the tracker panic, and no sender ever has more than MaxOpen
// incidents open.
func FuzzHandle(f *testing.F) {
	f.Add([]byte{192, 0, 2, 10}, onBattery, "", uint16(0))
	f.Add([]byte{192, 0, 2, 10}, "1.3.6.1.2.1.33.2.3", "OnBattery", uint16(1000))
	f.Add([]byte{192, 0, 2, 11}, "1.3.6.1.2.1.33.2.0.4", "unknown", uint16(1))
	f.Add([]byte{198, 51, 100, 1}, "1.3.6.1.6.3.1.1.5.3", "", uint16(60000))
	tr := newTracker(f, Config{Sources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, MaxOpen: 3, ResolveAfter: time.Minute})
	now := t0
	f.Fuzz(func(t *testing.T, ip []byte, oid, alarm string, ms uint16) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		now = now.Add(time.Duration(ms) * time.Millisecond)
		tr.Handle(snmptrap.Trap{Source: a, TrapOID: oid, Name: snmptrap.Name(oid), Alarm: alarm}, now)
		tr.Tick(now)
		for who, n := range tr.perSend {
			if n > 3 || n < 0 {
				t.Fatalf("%s has %d open", who, n)
			}
		}
	})
}

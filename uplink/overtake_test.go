package uplink

import (
	"fmt"
	"strings"
	"testing"
)

// The send loop takes incidents enqueued just now ahead of waiting telemetry; in the same
// turn a read-ahead chunk may already have put older incidents in front. Each topic must still
// go out in seq order (TestIncidentTx saw seqs 1 3 2 before overtake).
func TestOvertakeKeepsIncidentOrder(t *testing.T) {
	q := func(s string) []queued {
		var out []queued
		for _, f := range strings.Fields(s) {
			var seq uint64
			fmt.Sscan(f[1:], &seq)
			k := kindTelemetry
			if f[0] == 'I' {
				k = kindIncident
			}
			out = append(out, queued{kind: k, seq: seq})
		}
		return out
	}
	show := func(qs []queued) string {
		var b []string
		for _, x := range qs {
			b = append(b, fmt.Sprintf("%c%d", "IT"[x.kind], x.seq))
		}
		return strings.Join(b, " ")
	}
	for _, c := range []struct{ ahead, inc, want string }{
		{"", "I3", "I3"},
		{"T7 T8", "I3 I4", "I3 I4 T7 T8"},
		{"I2", "I3", "I2 I3"},
		{"I2 T7 T8", "I3", "I2 I3 T7 T8"},
		{"T7 I2 T8", "I3", "T7 I2 I3 T8"},
		{"I1 I2 T7", "I3 I4", "I1 I2 I3 I4 T7"},
	} {
		if got := show(overtake(q(c.ahead), q(c.inc))); got != c.want {
			t.Errorf("overtake(%q, %q) = %q, want %q", c.ahead, c.inc, got, c.want)
		}
	}
}

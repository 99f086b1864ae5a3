package megatec

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func seedFrames(f *testing.F) {
	for _, s := range []string{
		"(215.0 195.0 230.0 014 49.0 2.27 30.0 00001000\r",
		"(244.2 000.0 244.2 001 50.1 13.7 --.- 00001001\r",
		"(231.0 000.0 231.0 016 49.0 27.0 20.8 00001",
		"(\r", "NAK\r", "Q1\r", "\x00",
		"#220.0 000 024.0 50.0\r",
		"#NOT_A_LIVE_UPS  TESTING    TESTING   \r",
		"#                           V6.00     \r",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse feeds any bytes to the three frame parsers: they must return an error or a
// consistent result, never panic.
func FuzzParse(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := ParseQ1(b); err == nil {
			vs := q.Vars()
			if len(vs) < 10 {
				t.Fatalf("%q: %d vars", b, len(vs))
			}
			st, err := q.UPSStatus()
			if q.StatusOK() != (err == nil) {
				t.Fatalf("%q: StatusOK %v but UPSStatus err %v", b, q.StatusOK(), err)
			}
			st = strings.TrimPrefix(st, "ALARM ")
			if err == nil && !strings.HasPrefix(st, "OL") && !strings.HasPrefix(st, "OB") {
				t.Fatalf("%q: ups.status %q", b, st)
			}
			for _, v := range vs {
				_ = v.Value()
			}
		}
		if r, err := ParseF(b); err == nil {
			for _, v := range r.Vars() {
				_ = v.Value()
			}
		}
		if in, err := ParseI(b); err == nil && in == (Info{}) {
			t.Fatalf("%q: empty Info without error", b)
		}
	})
}

// FuzzReadReply: whatever bytes arrive, ReadReply returns within its deadline and never
// returns more than one frame.
func FuzzReadReply(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := ReadReply(bytes.NewReader(b), time.Now().Add(30*time.Millisecond), q1Complete)
		if err == nil && bytes.IndexByte(out, '\r') >= 0 && out[len(out)-1] != '\r' {
			t.Fatalf("%q: reply %q goes past its CR", b, out)
		}
	})
}

package nut

import (
	"context"
	"strings"
	"testing"
)

type fuzzSource struct{}

func (fuzzSource) UPSNames() []string { return []string{"ups1", "old"} }
func (fuzzSource) UPS(name string) (UPS, bool) {
	switch name {
	case "ups1":
		return UPS{Description: `d "q" #`, Vars: map[string]string{"ups.status": "OL", "x": "a\nb\"c"},
			Commands: []string{"load.off"}}, true
	case "old":
		return UPS{Stale: true}, true
	}
	return UPS{}, false
}
func (fuzzSource) InstCmd(context.Context, string, string, string) error { return nil }
func (fuzzSource) SetFSD(string) error                                   { return nil }

// FuzzDispatch: whatever a client sends on one connection, every answer is one or more
// whole lines of printable ASCII (DEL included, as parseconf keeps it), and nothing panics.
func FuzzDispatch(f *testing.F) {
	for _, s := range []string{
		"VER", "LIST VAR ups1", "GET VAR ups1 x", "LIST UPS", "USERNAME u\nPASSWORD p\nLOGIN ups1\nFSD ups1",
		"INSTCMD ups1 load.off 1", "SET VAR ups1 x y", "LIST ENUM old x", "GET DESC ups1 \"a\\\"b\"", "STARTTLS",
		"LOGOUT\nLOGOUT", "GET TRACKING 1", "LIST CLIENT ups1",
	} {
		f.Add(s)
	}
	srv, err := New(Config{Users: []User{{Name: "u", Password: "p", Upsmon: "primary", Instcmds: []string{"all"}}}},
		fuzzSource{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, session string) {
		c := &conn{s: srv, addr: "192.0.2.1"}
		for _, line := range strings.Split(session, "\n") {
			words, err := parseLine([]byte(line))
			if err != nil {
				continue
			}
			out, _ := c.dispatch(context.Background(), words)
			if out == "" || !strings.HasSuffix(out, "\n") {
				t.Fatalf("%q: answer %q is not whole lines", line, out)
			}
			for i := 0; i < len(out); i++ {
				if b := out[i]; (b < 0x20 && b != '\n') || b > 0x7f {
					t.Fatalf("%q: answer %q has byte %#x", line, out, b)
				}
			}
		}
	})
}

package nut_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/nut"
)

// TestSessions replays the conversations in testdata/sessions: "> " lines are sent, "< "
// lines are the exact answers expected (upsd's words, checked against NUT 2.8's server/net*.c),
// "< EOF" is the server closing, "===" starts a new connection, "#" lines are comments.
// Each file gets a fresh server and source.
func TestSessions(t *testing.T) {
	files, err := filepath.Glob("testdata/sessions/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sessions: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := start(t, nut.Config{Version: "test"}, newSource())
			c := dial(t, addr)
			for n, line := range strings.Split(string(b), "\n") {
				switch {
				case line == "" || strings.HasPrefix(line, "#"):
				case line == "===":
					c.c.Close()
					c = dial(t, addr)
				case strings.HasPrefix(line, "> "):
					c.send(line[2:])
				case line == ">":
					c.send("")
				case strings.HasPrefix(line, "< "):
					if got := c.readLine(); got != line[2:] {
						t.Fatalf("%s:%d: got  %q\n%*swant %q", f, n+1, got, len(f)+2, "", line[2:])
					}
				default:
					t.Fatalf("%s:%d: bad line %q", f, n+1, line)
				}
			}
		})
	}
}

package nut_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// answer reads one whole answer: a line, or a BEGIN LIST … END LIST block; after LOGOUT, the
// close too.
func (c *client) answer(req string) string {
	c.t.Helper()
	c.send(req)
	first := c.readLine()
	lines := []string{first}
	if strings.HasPrefix(first, "BEGIN LIST ") {
		for {
			l := c.readLine()
			lines = append(lines, l)
			if strings.HasPrefix(l, "END LIST ") || l == "EOF" {
				break
			}
		}
	}
	if strings.EqualFold(req, "LOGOUT") {
		lines = append(lines, c.readLine())
	}
	return strings.Join(lines, "\n")
}

// diffSessions are conversations whose every answer must be the same, byte for byte, from
// Debian's upsd (2.8.0) and from this server. "===" starts a new connection to each.
// Left out on purpose: GET TYPE and LIST RW (dummy-ups makes every variable writable; here
// nothing is), and an unterminated quote (upsd keeps reading the next lines into the word and
// answers nothing; this server answers ERR INVALID-ARGUMENT).
var diffSessions = []string{
	"VER", "NETVER", "PROTVER", "HELP", "VER x", "", "FOO bar", "# just a comment",
	"LIST UPS", "GET UPSDESC ups1", "GET UPSDESC nosuch", "LIST VAR ups1", "list var UPS1",
	"GET VAR ups1 ups.status", `GET VAR "ups1" "input.voltage"`, `GET VAR u\ps1 battery.charge # c`,
	"GET VAR ups1 nosuch", "GET VAR nosuch ups.status", "GET VAR ups1", "GET", "GET BOGUS ups1 x",
	"GET VAR any server.version", "GET VAR any server.info", "GET VAR any server.nosuch",
	"LIST", "LIST VAR", "LIST BOGUS ups1", "LIST BOGUS ups1 x", "LIST CMD ups1", "LIST CMD nosuch",
	"GET DESC ups1 ups.status", "GET DESC ups1 input.voltage", "GET DESC ups1 nosuch",
	"GET CMDDESC ups1 load.off", "GET CMDDESC ups1 nosuch", "GET NUMLOGINS ups1", "GET NUMLOGINS nosuch",
	"LIST CLIENT ups1", "LIST CLIENT nosuch", "LIST ENUM ups1 ups.status", "LIST RANGE ups1 ups.status",
	"LIST ENUM ups1 nosuch", "LIST ENUM ups1", "GET TRACKING", "STARTTLS",
	"LOGIN ups1", "FSD ups1", "INSTCMD ups1 load.off", "SET VAR ups1 ups.status OB", "PRIMARY ups1",
	"USERNAME monuser", "USERNAME other", "USERNAME", "LOGIN ups1", "MASTER ups1",
	"PASSWORD wrong", "PASSWORD secret", "LOGIN ups1", "LOGOUT",
	"===",
	"USERNAME monuser", "PASSWORD secret", "LOGIN nosuch", "LOGIN", "LOGIN ups1", "LOGIN ups1",
	"GET NUMLOGINS ups1", "LIST CLIENT ups1", "PRIMARY ups1", "MASTER ups1", "FSD ups1",
	"INSTCMD ups1 load.off", "SET VAR ups1 ups.status OB", "LOGOUT",
	"===",
	"GET NUMLOGINS ups1",
	"USERNAME admin", "PASSWORD adm1n", "LOGIN ups1", "PRIMARY ups1", "MASTER ups1", "PRIMARY nosuch",
	"INSTCMD ups1 load.off", "INSTCMD ups1 test.battery.start", "INSTCMD ups1", "INSTCMD nosuch load.off",
	"SET VAR ups1 nosuch 1", "SET VAR ups1 ups.status", "SET BOGUS ups1 x y", "FSD nosuch", "FSD ups1",
	"GET VAR ups1 ups.status", "LIST VAR ups1", "LOGOUT",
}

// Differential: Debian's real upsd, fed by NUT's dummy-ups driver, and this server, fed with
// the very variables upsd reports, answer every request of diffSessions identically.
func TestDifferentialUpsd(t *testing.T) {
	upsdBin := testpeer.Require(t, "/lib/nut/upsd", "nut-server")
	dummy := testpeer.Require(t, "/lib/nut/dummy-ups", "nut-server")
	dir := t.TempDir()
	port := testpeer.FreePort(t)
	files := map[string]string{
		"ups.conf":   "[ups1]\n\tdriver = dummy-ups\n\tport = ups1.dev\n\tdesc = \"Rack 12 \\\"A\\\" feed\"\n",
		"ups1.dev":   "ups.status: OL\nbattery.charge: 100\ninput.voltage: 215.0\n",
		"upsd.conf":  fmt.Sprintf("LISTEN 127.0.0.1 %d\n", port),
		"upsd.users": "[monuser]\n\tpassword = secret\n\tupsmon secondary\n[admin]\n\tpassword = adm1n\n\tupsmon primary\n\tinstcmds = test.battery.start\n\tactions = SET\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"NUT_CONFPATH=" + dir, "NUT_STATEPATH=" + dir, "NUT_ALTPIDPATH=" + dir}
	testpeer.StartEnv(t, env, dummy, "-a", "ups1", "-u", "root", "-F")
	testpeer.StartEnv(t, env, upsdBin, "-u", "root", "-F")
	upsdAddr := fmt.Sprintf("127.0.0.1:%d", port)
	testpeer.WaitTCP(t, upsdAddr, 20*time.Second)

	// Wait for the driver's data, then give this server exactly the same UPS.
	ref := dial(t, upsdAddr)
	// FreePort's port was free a moment ago; make sure it is our upsd that answers on it.
	if got := ref.answer("GET UPSDESC ups1"); got != `UPSDESC ups1 "Rack 12 \"A\" feed"` {
		t.Fatalf("something else answers on %s: %q", upsdAddr, got)
	}
	var list string
	// dummy-ups starts with ups.status "WAIT" and adds its variables and commands over its
	// first polls: wait until the dump is complete and the same twice in a row.
	testpeer.Eventually(t, 20*time.Second, "upsd to have all of ups1's data and commands", func() bool {
		prev := list
		list = ref.answer("LIST VAR ups1")
		return list == prev && strings.Contains(list, `VAR ups1 ups.status "OL"`) &&
			strings.Contains(list, "VAR ups1 ups.model ") &&
			strings.Contains(ref.answer("LIST CMD ups1"), "CMD ups1 load.off")
	})
	src := newSource()
	vars := map[string]string{}
	for _, l := range strings.Split(list, "\n") {
		if rest, ok := strings.CutPrefix(l, "VAR ups1 "); ok {
			name, val, _ := strings.Cut(rest, " ")
			vars[name] = strings.Trim(val, `"`) // no escapes in these values
		}
	}
	src.ups = map[string]nut.UPS{"ups1": {Description: `Rack 12 "A" feed`, Vars: vars, Commands: []string{"load.off"}}}
	src.order = []string{"ups1"}
	ourAddr, _ := start(t, nut.Config{Users: []nut.User{
		{Name: "monuser", Password: "secret", Upsmon: "secondary"},
		{Name: "admin", Password: "adm1n", Upsmon: "primary", Instcmds: []string{"test.battery.start"}, Actions: []string{"SET"}},
	}}, src)

	theirs, ours := dial(t, upsdAddr), dial(t, ourAddr)
	for i, req := range diffSessions {
		if req == "===" {
			theirs, ours = dial(t, upsdAddr), dial(t, ourAddr)
			continue
		}
		want, got := theirs.answer(req), ours.answer(req)
		if got != want {
			t.Errorf("request %d %q:\nupsd:      %q\nrackwatch: %q", i, req, want, got)
		}
	}
}

package nut_test

import (
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestOneHostCannotFillTheServer: a host opening connection after connection gets its share
// (16 of the default 64) and no more, and upsc from another address still reads the UPS.
// upsc cannot choose its source address, so the greedy host is 127.0.0.2 and upsc 127.0.0.1.
func TestOneHostCannotFillTheServer(t *testing.T) {
	upsc := testpeer.Require(t, "upsc", "nut-client")
	addr, _ := start(t, nut.Config{}, newSource())
	kept := testpeer.HoldNUT(t, "127.0.0.2", addr, 100)
	if kept != 16 {
		t.Errorf("one address holds %d connections, want its share, 16", kept)
	}
	out, err := runTool(t, upsc, "ups1@"+addr, "ups.status")
	if err != nil || out != "OL\n" {
		t.Errorf("upsc from another address while one holds its share: %q, %v", out, err)
	}
}

// TestLoginThrottle: after five wrong passwords from one address, even the right one is
// refused from there (ERR ACCESS-DENIED, as upsd answers a bad login), while the same user
// logs in from another address.
func TestLoginThrottle(t *testing.T) {
	addr, _ := start(t, nut.Config{}, newSource())
	try := func(src, pw string) string {
		c := dialFrom(t, src, addr)
		defer c.c.Close()
		for _, l := range []string{"USERNAME monuser", "PASSWORD " + pw} {
			if got := c.ask(l); got != "OK" {
				t.Fatalf("%s: %s", l, got)
			}
		}
		return c.ask("LOGIN ups1")
	}
	for i := range 5 {
		if got := try("127.0.0.2", "guess"); got != "ERR ACCESS-DENIED" {
			t.Fatalf("wrong password %d: %q", i+1, got)
		}
	}
	if got := try("127.0.0.2", "secret"); got != "ERR ACCESS-DENIED" {
		t.Errorf("right password after five wrong ones from the same address: %q, want ERR ACCESS-DENIED", got)
	}
	if got := try("127.0.0.1", "secret"); got != "OK" {
		t.Errorf("right password from another address: %q, want OK", got)
	}
	// INSTCMD checks the password too, and is throttled the same way.
	c := dialFrom(t, "127.0.0.2", addr)
	for _, l := range []string{"USERNAME admin", "PASSWORD adm1n"} {
		c.ask(l)
	}
	if got := c.ask("INSTCMD ups1 test.battery.start"); !strings.HasPrefix(got, "ERR ACCESS-DENIED") {
		t.Errorf("INSTCMD from the throttled address: %q", got)
	}
}

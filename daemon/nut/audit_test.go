package nut_test

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/nut"
)

// TestAuditHook: PRIMARY, FSD and INSTCMD reach Config.Audit with the user and the client's
// address, done or refused; reading commands do not.
func TestAuditHook(t *testing.T) {
	var mu sync.Mutex
	var got []string
	cfg := nut.Config{Audit: func(user, addr, action, ups, detail string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if addr != "127.0.0.1" {
			t.Errorf("audit: address %q", addr)
		}
		got = append(got, strings.Join([]string{user, action, ups, detail, map[bool]string{true: "ok", false: "refused"}[ok]}, "|"))
	}}
	addr, _ := start(t, cfg, newSource())
	c := dial(t, addr)
	for _, l := range []string{"USERNAME monuser", "PASSWORD secret"} {
		if a := c.ask(l); a != "OK" {
			t.Fatalf("%s: %s", l, a)
		}
	}
	c.ask("PRIMARY ups1")
	c.ask("FSD ups1")
	c.ask("GET VAR ups1 ups.status")
	a := dial(t, addr)
	a.ask("USERNAME admin")
	a.ask("PASSWORD adm1n")
	if r := a.ask("PRIMARY ups1"); r != "OK PRIMARY-GRANTED" {
		t.Fatalf("PRIMARY: %s", r)
	}
	if r := a.ask("INSTCMD ups1 test.battery.start"); r != "OK" {
		t.Fatalf("INSTCMD: %s", r)
	}
	a.ask("INSTCMD ups1 load.off")
	if r := a.ask("FSD ups1"); r != "OK FSD-SET" {
		t.Fatalf("FSD: %s", r)
	}
	want := []string{
		"monuser|primary|ups1|access denied|refused",
		"monuser|fsd|ups1|access denied|refused",
		"admin|primary|ups1|PRIMARY|ok",
		"admin|instcmd|ups1|test.battery.start|ok",
		"admin|instcmd|ups1|load.off: access denied|refused",
		"admin|fsd|ups1|set|ok",
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("audit calls:\n got %q\nwant %q", got, want)
	}
}

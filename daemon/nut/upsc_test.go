package nut_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func runTool(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	// stdout only: upsc says "Init SSL without certificate database" on stderr.
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// Debian's upsc reads every variable, lists the UPSes, and reports a stale UPS as upsd's
// clients know it.
func TestUpsc(t *testing.T) {
	upsc := testpeer.Require(t, "upsc", "nut-client")
	src := newSource()
	addr, _ := start(t, nut.Config{}, src)

	out, err := runTool(t, upsc, "ups1@"+addr)
	if err != nil {
		t.Fatalf("upsc: %v\n%s", err, out)
	}
	var want []string
	u, _ := src.UPS("ups1")
	for k, v := range u.Vars {
		want = append(want, k+": "+v)
	}
	slices.Sort(want)
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("upsc ups1 printed\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}

	out, err = runTool(t, upsc, "ups1@"+addr, "ups.status")
	if err != nil || out != "OL\n" {
		t.Errorf("upsc ups1 ups.status = %q, %v; want OL", out, err)
	}
	src.set("ups1", "ups.status", "OB LB")
	out, err = runTool(t, upsc, "ups1@"+addr, "ups.status")
	if err != nil || out != "OB LB\n" {
		t.Errorf("after the change, upsc ups1 ups.status = %q, %v; want OB LB", out, err)
	}

	out, err = runTool(t, upsc, "-l", addr)
	if err != nil || out != "ups1\nups2\nups3\n" {
		t.Errorf("upsc -l = %q, %v", out, err)
	}
	out, err = runTool(t, upsc, "-L", addr)
	if err != nil || !strings.Contains(out, `ups1: Rack 12 "A" feed #1`) {
		t.Errorf("upsc -L = %q, %v", out, err)
	}

	out, err = runTool(t, upsc, "ups2@"+addr)
	if err == nil || !strings.Contains(out, "Data stale") {
		t.Errorf("upsc of a stale UPS: %q, %v; want the Data stale error", out, err)
	}
	out, err = runTool(t, upsc, "ups3@"+addr)
	if err == nil || !strings.Contains(out, "Driver not connected") {
		t.Errorf("upsc of a disconnected UPS: %q, %v; want Driver not connected", out, err)
	}
	out, err = runTool(t, upsc, "nosuch@"+addr)
	if err == nil || !strings.Contains(out, "Unknown UPS") {
		t.Errorf("upsc of an unknown UPS: %q, %v; want Unknown UPS", out, err)
	}
	src.setStale("ups2", false)
	out, err = runTool(t, upsc, "ups2@"+addr, "ups.status")
	if err != nil || out != "OB\n" {
		t.Errorf("once fresh, upsc ups2 ups.status = %q, %v", out, err)
	}

	// upsc -c lists the clients logged in.
	c := dial(t, addr)
	for _, l := range []string{"USERNAME monuser", "PASSWORD secret", "LOGIN ups1"} {
		if got := c.ask(l); got != "OK" {
			t.Fatalf("%s: %s", l, got)
		}
	}
	out, err = runTool(t, upsc, "-c", "ups1@"+addr)
	if err != nil || out != "127.0.0.1\n" {
		t.Errorf("upsc -c = %q, %v", out, err)
	}
}

// Debian's upscmd lists and runs instant commands through INSTCMD, with the user's rights.
func TestUpscmd(t *testing.T) {
	upscmd := testpeer.Require(t, "upscmd", "nut-client")
	src := newSource()
	addr, _ := start(t, nut.Config{}, src)

	out, err := runTool(t, upscmd, "-l", "ups1@"+addr)
	if err != nil || !strings.Contains(out, "test.battery.start - Start a battery test") {
		t.Errorf("upscmd -l: %q, %v", out, err)
	}
	out, err = runTool(t, upscmd, "-u", "admin", "-p", "adm1n", "ups1@"+addr, "test.battery.start")
	if err != nil {
		t.Errorf("upscmd test.battery.start: %q, %v", out, err)
	}
	out, err = runTool(t, upscmd, "-u", "admin", "-p", "adm1n", "ups1@"+addr, "load.off")
	if err == nil || !strings.Contains(out, "ACCESS-DENIED") {
		t.Errorf("upscmd load.off by a user without it: %q, %v; want ACCESS-DENIED", out, err)
	}
	out, err = runTool(t, upscmd, "-u", "admin", "-p", "wrong", "ups1@"+addr, "test.battery.start")
	if err == nil || !strings.Contains(out, "ACCESS-DENIED") {
		t.Errorf("upscmd with a wrong password: %q, %v; want ACCESS-DENIED", out, err)
	}
	src.mu.Lock()
	ran := slices.Clone(src.ran)
	src.mu.Unlock()
	if !slices.Equal(ran, []string{"ups1 test.battery.start"}) {
		t.Errorf("the source ran %q; want exactly the one allowed command", ran)
	}
}

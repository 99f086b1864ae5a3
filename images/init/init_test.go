//go:build linux

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	def := options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 30}
	for _, c := range []struct {
		line string
		want options
	}{
		{"", def},
		{"console=ttyAMA0,115200 panic=10 rw quiet", def},
		{"console=ttyAMA0 rackwatch.ip=192.168.1.50/24 rackwatch.gw=192.168.1.1 rackwatch.dns=192.168.1.1\n",
			options{IP: "192.168.1.50/24", GW: "192.168.1.1", DNS: "192.168.1.1", DataPartition: "rackwatch-data", Watchdog: 30}},
		{"rackwatch.ip=off rackwatch.gw=", options{IP: "off", DataPartition: "rackwatch-data", Watchdog: 30}},
		{`rackwatch.data="site-data" rackwatch.ip`, options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "site-data", Watchdog: 30}},
		{"rackwatch.watchdog=5", options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 5}},
		{"rackwatch.watchdog=0", def},
		{"rackwatch.watchdog=-3", def},
		{"rackwatch.watchdog=601", def},
		{"rackwatch.watchdog=5s", def},
		{"rackwatch.data=", def},
		{"rackwatch.ipx=1.2.3.4/8 xrackwatch.gw=1.1.1.1", def},
	} {
		if got := parseCmdline(c.line); got != c.want {
			t.Errorf("parseCmdline(%q) = %+v, want %+v", c.line, got, c.want)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyAMA0 rackwatch.ip=10.0.2.15/24 rackwatch.gw=10.0.2.2")
	f.Add(`rackwatch.data="x" rackwatch.dns==`)
	f.Add("\x00=\xff rackwatch.ip=\"")
	f.Fuzz(func(t *testing.T, s string) {
		if o := parseCmdline(s); o.DataPartition == "" || o.Watchdog < 1 || o.Watchdog > 600 {
			t.Fatalf("parseCmdline(%q) = %+v", s, o)
		}
	})
}

func TestParseNotify(t *testing.T) {
	for _, c := range []struct {
		in   string
		want map[string]string
	}{
		{"READY=1", map[string]string{"READY": "1"}},
		{"READY=1\nSTATUS=site dc1 running\n", map[string]string{"READY": "1", "STATUS": "site dc1 running"}},
		{"WATCHDOG=1", map[string]string{"WATCHDOG": "1"}},
		{"garbage\n=x\nA=b=c", map[string]string{"A": "b=c"}},
		{"", map[string]string{}},
	} {
		if got := parseNotify([]byte(c.in)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseNotify(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func FuzzParseNotify(f *testing.F) {
	f.Add([]byte("READY=1\nSTATUS=ok\nWATCHDOG=1"))
	f.Add([]byte("\n\n=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for k := range parseNotify(b) {
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}

func TestParseConsole(t *testing.T) {
	for _, c := range []struct {
		line string
		want consoleCommand
	}{
		{"rwinit kill", cmdKill},
		{"  rwinit   kill \r", cmdKill},
		{"rwinit status", cmdStatus},
		{"rwinit reboot", cmdReboot},
		{"rwinit poweroff", cmdPowerOff},
		{"rwinit watchdog-test", cmdWatchdogTest},
		{"rwinit", cmdUnknown},
		{"rwinit kill now", cmdUnknown},
		{"rwinit format", cmdUnknown},
		{"", cmdNone},
		{"kill", cmdNone},
		{"[    4.69] reboot: Restarting system", cmdNone},
	} {
		if got := parseConsole(c.line); got != c.want {
			t.Errorf("parseConsole(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

func FuzzParseConsole(f *testing.F) {
	f.Add("rwinit kill")
	f.Add("rwinit \x00")
	f.Fuzz(func(t *testing.T, s string) {
		if c := parseConsole(s); c < cmdNone || c > cmdUnknown {
			t.Fatalf("parseConsole(%q) = %d", s, c)
		}
	})
}

func TestInstallDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "default.yaml")
	dst := filepath.Join(dir, "data", "rackwatch.yaml")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	os.WriteFile(src, []byte("site: a\n"), 0o644)
	if err := installDefaultConfig(dst, src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "site: a\n" {
		t.Fatalf("installed %q", b)
	}
	// An operator's config is never overwritten.
	os.WriteFile(dst, []byte("site: mine\n"), 0o644)
	os.WriteFile(src, []byte("site: b\n"), 0o644)
	if err := installDefaultConfig(dst, src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "site: mine\n" {
		t.Fatalf("the site config was replaced: %q", b)
	}
}

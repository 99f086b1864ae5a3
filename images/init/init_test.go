//go:build linux

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

func TestParseCmdline(t *testing.T) {
	def := options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 30, StartTimeout: 120}
	for _, c := range []struct {
		line string
		want options
	}{
		{"", def},
		{"console=ttyAMA0,115200 panic=10 rw quiet", def},
		{"console=ttyAMA0 rackwatch.ip=192.168.1.50/24 rackwatch.gw=192.168.1.1 rackwatch.dns=192.168.1.1\n",
			options{IP: "192.168.1.50/24", GW: "192.168.1.1", DNS: "192.168.1.1", DataPartition: "rackwatch-data", Watchdog: 30, StartTimeout: 120}},
		{"rackwatch.ip=off rackwatch.gw=", options{IP: "off", DataPartition: "rackwatch-data", Watchdog: 30, StartTimeout: 120}},
		{`rackwatch.data="site-data" rackwatch.ip`, options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "site-data", Watchdog: 30, StartTimeout: 120}},
		{"rackwatch.watchdog=5", options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 5, StartTimeout: 120}},
		{"rackwatch.slot=b rackwatch.start_timeout=300", options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 30, Slot: "b", StartTimeout: 300}},
		{"rackwatch.slot=a", options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 30, Slot: "a", StartTimeout: 120}},
		{"rackwatch.slot=B", def},
		{"rackwatch.slot=c", def},
		{"rackwatch.start_timeout=0", def},
		{"rackwatch.start_timeout=3601", def},
		{"rackwatch.start_timeout=2m", def},
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
		if o := parseCmdline(s); o.DataPartition == "" || o.Watchdog < 1 || o.Watchdog > 600 ||
			o.StartTimeout < 1 || (o.Slot != "" && o.Slot != "a" && o.Slot != "b") {
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
		{"rwinit bootstate", cmdBootState},
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

func TestOnTrial(t *testing.T) {
	for _, c := range []struct {
		name  string
		trial string // "-": no state at all
		slot  string
		want  bool
	}{
		{"booted the slot on trial", "B", "b", true},
		{"booted the other slot (rolled back)", "B", "a", false},
		{"committed", "", "b", false},
		{"not booted by the boot script", "B", "", false},
		{"no state", "-", "b", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.trial != "-" {
				s := bootstate.Default()
				s.Trial = c.trial
				if err := s.Save(dir); err != nil {
					t.Fatal(err)
				}
			}
			if got := onTrial(dir, c.slot); got != c.want {
				t.Errorf("onTrial = %v, want %v", got, c.want)
			}
		})
	}
	// The state is read again at each exit: a commit in between ends the trial.
	dir := t.TempDir()
	s := bootstate.Default()
	s.Trial = "A"
	s.Save(dir)
	if !onTrial(dir, "a") {
		t.Fatal("not on trial")
	}
	s.Trial = ""
	s.Save(dir)
	if onTrial(dir, "a") {
		t.Error("still on trial after the commit")
	}
}

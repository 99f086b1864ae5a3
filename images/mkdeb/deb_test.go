package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

var (
	payloadMu  sync.Mutex
	payloadDir string
	payloads   = map[string]string{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if payloadDir != "" {
		os.RemoveAll(payloadDir)
	}
	os.Exit(code)
}

// payload cross-builds a tiny static program as the package's binary, once per
// architecture: the packaging does not depend on what the binary does, and a daemon build
// per architecture would take a minute. `make deb` packages the real daemon with the same
// code; the boot test of images/mkimage runs the real daemon.
func payload(t *testing.T, goarch string) string {
	t.Helper()
	payloadMu.Lock()
	defer payloadMu.Unlock()
	if p, ok := payloads[goarch]; ok {
		return p
	}
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	if payloadDir == "" {
		if payloadDir, err = os.MkdirTemp("", "mkdeb-test"); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(payloadDir, "rackwatch."+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./images/mkdeb/testdata/hello")
	cmd.Dir = strings.TrimSpace(string(root))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM=7")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	payloads[goarch] = out
	return out
}

func src(t *testing.T) string {
	t.Helper()
	s, err := filepath.Abs("../deb")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeb(t *testing.T) {
	dpkg := testpeer.Require(t, "dpkg-deb", "dpkg")
	for _, c := range []struct{ arch, goarch string }{{"arm64", "arm64"}, {"armhf", "arm"}} {
		t.Run(c.arch, func(t *testing.T) {
			bin := payload(t, c.goarch)
			out := t.TempDir()
			deb, err := build(options{Arch: c.arch, Binary: bin, Version: "v1.2.3-4-gabcdef", Src: src(t), OutDir: out, Epoch: 1735689600})
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(out, "rackwatch_1.2.3+4.gabcdef_"+c.arch+".deb"); deb != want {
				t.Errorf("package %s, want %s", deb, want)
			}

			info := run(t, dpkg, "-I", deb)
			for _, want := range []string{
				"Package: rackwatch", "Version: 1.2.3+4.gabcdef", "Architecture: " + c.arch,
				"Depends: systemd | adduser", " postinst", " prerm", " postrm", " conffiles", " md5sums",
			} {
				if !strings.Contains(info, want) {
					t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
				}
			}
			if got := run(t, dpkg, "-f", deb, "Installed-Size"); strings.TrimSpace(got) == "0" {
				t.Error("Installed-Size is 0")
			}

			list := run(t, dpkg, "-c", deb)
			for _, want := range []*regexp.Regexp{
				regexp.MustCompile(`(?m)^-rwxr-xr-x root/root .* \./usr/bin/rackwatch$`),
				regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \./etc/rackwatch/rackwatch\.yaml$`),
				regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \./usr/lib/systemd/system/rackwatch\.service$`),
				regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \./usr/lib/sysusers\.d/rackwatch\.conf$`),
				regexp.MustCompile(`(?m)^-rw-r--r-- root/root .* \./usr/share/doc/rackwatch/copyright$`),
				regexp.MustCompile(`(?m)^drwxr-xr-x root/root .* \./etc/rackwatch/$`),
				regexp.MustCompile(`(?m) 2025-01-01 00:00 `),
			} {
				if !want.MatchString(list) {
					t.Errorf("dpkg-deb -c has no line matching %s:\n%s", want, list)
				}
			}

			// What is inside is what is in images/deb, and the binary as given.
			x := t.TempDir()
			run(t, dpkg, "-x", deb, x)
			for pkgPath, srcName := range map[string]string{
				"usr/lib/systemd/system/rackwatch.service": "rackwatch.service",
				"etc/rackwatch/rackwatch.yaml":             "rackwatch.yaml",
				"usr/lib/sysusers.d/rackwatch.conf":        "sysusers.conf",
			} {
				same(t, filepath.Join(x, pkgPath), filepath.Join(src(t), srcName))
			}
			same(t, filepath.Join(x, "usr/bin/rackwatch"), bin)
			ctl := t.TempDir()
			run(t, dpkg, "-e", deb, ctl)
			same(t, filepath.Join(ctl, "postinst"), filepath.Join(src(t), "postinst"))
			if b, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(b) != "/etc/rackwatch/rackwatch.yaml\n" {
				t.Errorf("conffiles = %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(ctl, "md5sums")); !strings.Contains(string(b), "  usr/bin/rackwatch\n") {
				t.Errorf("md5sums lacks the binary:\n%s", b)
			}
		})
	}
}

// TestUnit checks the systemd unit for what the issue asks and lets systemd parse it.
func TestUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(src(t), "rackwatch.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"Type=notify", "WatchdogSec=", "User=rackwatch", "SupplementaryGroups=gpio i2c dialout",
		"ProtectSystem=strict", "StateDirectory=rackwatch", "NoNewPrivileges=yes",
		"ExecStart=/usr/bin/rackwatch -config /etc/rackwatch/rackwatch.yaml", "ExecReload=/bin/kill -HUP $MAINPID",
	} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	sysusers, err := os.ReadFile(filepath.Join(src(t), "sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"gpio", "i2c", "dialout"} {
		if !strings.Contains(string(sysusers), "m rackwatch "+g+"\n") {
			t.Errorf("sysusers.conf does not put rackwatch in %s", g)
		}
	}

	for _, script := range []string{"postinst", "prerm", "postrm"} {
		if b, err := exec.Command("sh", "-n", filepath.Join(src(t), script)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", script, err, b)
		}
	}

	analyze := testpeer.Require(t, "systemd-analyze", "systemd")
	// systemd-analyze wants ExecStart to exist: verify a copy pointing at a program that does.
	dir := t.TempDir()
	unitCopy := filepath.Join(dir, "rackwatch.service")
	if err := os.WriteFile(unitCopy, []byte(strings.ReplaceAll(unit, "/usr/bin/rackwatch", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", unitCopy)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	// Outside a booted systemd (containers, CI) verify may complain about the manager itself;
	// what must not appear is a complaint about our unit's own lines.
	if strings.Contains(out, "rackwatch.service:") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestReproducible(t *testing.T) {
	bin := payload(t, "arm64")
	var debs [][]byte
	for i := 0; i < 2; i++ {
		p, err := build(options{Arch: "arm64", Binary: bin, Version: "1.0", Src: src(t), OutDir: t.TempDir(), Epoch: 1735689600})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		debs = append(debs, b)
	}
	if !bytes.Equal(debs[0], debs[1]) {
		t.Fatal("two builds of the same package differ")
	}
}

func TestWrongArchitecture(t *testing.T) {
	bin := payload(t, "arm64")
	_, err := build(options{Arch: "armhf", Binary: bin, Version: "1.0", Src: src(t), OutDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "want EM_ARM") {
		t.Fatalf("an arm64 binary packaged as armhf: err = %v", err)
	}
	if _, err := build(options{Arch: "mips", Binary: bin, Version: "1.0", Src: src(t), OutDir: t.TempDir()}); err == nil {
		t.Fatal("unknown architecture accepted")
	}
}

func TestDebVersion(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-4-gabcdef", "1.2.3+4.gabcdef"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabcdef-dirty", "1.2.3+4.gabcdef.dirty"},
		{"0.0.0~dev", "0.0.0~dev"},
		{"dev", "0.0.0~dev"},
		{"devel", ""},
		{"", ""},
		{"1.0 beta", ""},
		{"abcdef0", "0.0.0+gabcdef0"},
		{"71b64fc-dirty", "0.0.0+g71b64fc.dirty"},
		{"71b64fc", "0.0.0+g71b64fc"},
		{"abcdef", ""},
	} {
		got, err := debVersion(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("debVersion(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("debVersion(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func FuzzDebVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3-4-gabcdef-dirty", "1.0", "", "v", "1--2", "1+2-3"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	f.Fuzz(func(t *testing.T, s string) {
		v, err := debVersion(s)
		if err == nil && !re.MatchString(v) {
			t.Fatalf("debVersion(%q) = %q: not a valid Debian version", s, v)
		}
	})
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, b)
	}
	return string(b)
}

func same(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s", got, want)
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

type options struct {
	Arch, Binary, Version, Src, OutDir string
	Epoch                              int64
}

// machines maps a Debian architecture to the ELF machine its binaries must have: a binary
// of the wrong architecture would install fine and fail at the first start.
var machines = map[string]elf.Machine{
	"arm64": elf.EM_AARCH64,
	"armhf": elf.EM_ARM,
	"amd64": elf.EM_X86_64,
}

// entry is one file of the package's data or control archive.
type entry struct {
	name string // without the leading "./"
	mode int64
	data []byte
}

// build writes OutDir/rackwatch_VERSION_ARCH.deb and returns its path.
func build(o options) (string, error) {
	want, ok := machines[o.Arch]
	if !ok {
		return "", fmt.Errorf("mkdeb: unknown architecture %q", o.Arch)
	}
	if err := checkELF(o.Binary, want); err != nil {
		return "", fmt.Errorf("mkdeb: %s for %s: %w", o.Binary, o.Arch, err)
	}
	version, err := debVersion(o.Version)
	if err != nil {
		return "", fmt.Errorf("mkdeb: %w", err)
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(o.Src, name))
		if err != nil {
			return nil, fmt.Errorf("mkdeb: read packaging file: %w", err)
		}
		return b, nil
	}
	files := map[string]string{ // package path → source (in Src, or the binary)
		"usr/bin/rackwatch":                        "",
		"etc/rackwatch/rackwatch.yaml":             "rackwatch.yaml",
		"usr/lib/systemd/system/rackwatch.service": "rackwatch.service",
		"usr/lib/sysusers.d/rackwatch.conf":        "sysusers.conf",
		"usr/share/doc/rackwatch/copyright":        "copyright",
	}
	var data []entry
	for name, src := range files {
		var b []byte
		var err error
		mode := int64(0o644)
		if src == "" {
			b, err = os.ReadFile(o.Binary)
			mode = 0o755
		} else {
			b, err = read(src)
		}
		if err != nil {
			return "", err
		}
		data = append(data, entry{name, mode, b})
	}
	data = withDirs(data)

	var size int64
	var sums strings.Builder
	for _, e := range data {
		size += int64(len(e.data))
		if e.mode&040000 == 0 {
			h := md5.Sum(e.data)
			fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), e.name)
		}
	}
	control := fmt.Sprintf(`Package: rackwatch
Version: %s
Architecture: %s
Maintainer: rackwatch maintainers <rackwatch@example.org>
Installed-Size: %d
Depends: systemd | adduser
Section: admin
Priority: optional
Homepage: https://github.com/rackwatch/rackwatch
Description: rack power, cooling and UPS monitor for data-centre appliances
 rackwatch reads UPS, power, cooling and environment sensors over GPIO, I2C,
 serial and SNMP, decides locally (thresholds, power and cooling failover),
 reports telemetry and incidents to central ITOps over MQTT, serves a local
 status page and speaks the NUT protocol so that servers take their shutdown
 orders from it.
`, version, o.Arch, (size+1023)/1024)
	ctl := []entry{
		{"control", 0o644, []byte(control)},
		{"conffiles", 0o644, []byte("/etc/rackwatch/rackwatch.yaml\n")},
		{"md5sums", 0o644, []byte(sums.String())},
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, err := read(s)
		if err != nil {
			return "", err
		}
		ctl = append(ctl, entry{s, 0o755, b})
	}

	mtime := time.Unix(o.Epoch, 0)
	controlTar, err := tarGz(withDirs(ctl), mtime)
	if err != nil {
		return "", fmt.Errorf("mkdeb: control.tar.gz: %w", err)
	}
	dataTar, err := tarGz(data, mtime)
	if err != nil {
		return "", fmt.Errorf("mkdeb: data.tar.gz: %w", err)
	}
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	for _, m := range []struct {
		name string
		b    []byte
	}{
		{"debian-binary", []byte("2.0\n")},
		{"control.tar.gz", controlTar},
		{"data.tar.gz", dataTar},
	} {
		fmt.Fprintf(&deb, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, o.Epoch, 0, 0, "100644", len(m.b))
		deb.Write(m.b)
		if len(m.b)%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("mkdeb: %w", err)
	}
	out := filepath.Join(o.OutDir, fmt.Sprintf("rackwatch_%s_%s.deb", version, o.Arch))
	if err := os.WriteFile(out, deb.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("mkdeb: %w", err)
	}
	return out, nil
}

// withDirs adds the parent folders of the entries and sorts them, parents first.
func withDirs(es []entry) []entry {
	dirs := map[string]bool{}
	for _, e := range es {
		for d := path.Dir(e.name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		es = append(es, entry{name: d + "/", mode: 040755})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	return append([]entry{{name: "", mode: 040755}}, es...)
}

func tarGz(es []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		h := &tar.Header{Name: "./" + e.name, Mode: e.mode & 0o7777, Size: int64(len(e.data)),
			ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatGNU, Typeflag: tar.TypeReg}
		if e.mode&040000 != 0 {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func checkELF(path string, want elf.Machine) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("built for %v, want %v", f.Machine, want)
	}
	return nil
}

var (
	debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	// A bare commit from `git describe --always` in a repository without tags.
	gitHashRE = regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`)
)

// debVersion turns a git-describe version (v1.2.3, v1.2.3-4-gabcdef, v1.2.3-dirty, or a bare
// commit abcdef0 when there is no tag) into a Debian upstream version (1.2.3,
// 1.2.3+4.gabcdef, 1.2.3+dirty, 0.0.0+gabcdef0; dev is 0.0.0~dev); anything else that is not valid is refused
// rather than guessed.
func debVersion(v string) (string, error) {
	if v == "dev" { // the Makefile's VERSION outside a git checkout
		return "0.0.0~dev", nil
	}
	if m := gitHashRE.FindStringSubmatch(v); m != nil {
		s := "0.0.0+g" + m[1]
		if m[2] != "" {
			s += ".dirty"
		}
		return s, nil
	}
	s := strings.TrimPrefix(v, "v")
	s = strings.ReplaceAll(s, "-", "+")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i+1] + strings.ReplaceAll(s[i+1:], "+", ".")
	}
	if !debVersionRE.MatchString(s) {
		return "", fmt.Errorf("version %q is not a Debian version (it must start with a digit)", v)
	}
	return s, nil
}

package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeInputs writes small stand-ins for the kernel, /init and rackwatch: the layout does not
// depend on what they contain. The kernel folder has the files the licence notice reads.
func fakeInputs(t *testing.T) options {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("kernel/LICENSE.linux", "GPL-2.0 text\n")
	write("kernel/_build/upstream-url.txt", "https://cdn.kernel.org/pub/linux/kernel/v7.x/linux-7.1.3.tar.xz")
	write("kernel/_build/series", "0001-gokrazy-logo.patch\n")
	return options{
		Kernel:    write("kernel/vmlinuz", strings.Repeat("K", 3*mib+17)),
		Init:      write("init", "INIT"),
		Rackwatch: write("rackwatch", "RACKWATCH"),
		Config:    write("rackwatch.yaml", "site: s\nnode: n\ndevices: []\n"),
		Out:       filepath.Join(dir, "out", "test.img"),
		Epoch:     defaultEpoch,
		SlotMiB:   34,
		DataMiB:   33,
	}
}

// TestLayout opens a built image the way a board's firmware and /init see it and compares
// what it finds with testdata/layout.golden: partition table, boot partition (boot script,
// state, command line), both slots (files, manifest, initramfs listing) and the data
// partition.
func TestLayout(t *testing.T) {
	o := fakeInputs(t)
	o.Keys = filepath.Join(filepath.Dir(o.Kernel), "..", "keys")
	os.MkdirAll(o.Keys, 0o755)
	os.WriteFile(filepath.Join(o.Keys, "site.pub"), []byte("untrusted comment: minisign public key 1\nRWQ=\n"), 0o644)
	os.WriteFile(filepath.Join(o.Keys, "README"), []byte("not a key\n"), 0o644)
	o.Version = "1.2.3"
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	d, err := diskfs.Open(o.Out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table := pt.(*gpt.Table)
	fmt.Fprintf(&got, "disk guid %s protective-mbr %v\n", table.GUID, table.ProtectiveMBR)
	for _, p := range table.Partitions {
		fmt.Fprintf(&got, "partition %d %q type %s guid %s sectors %d-%d attributes %#x\n",
			p.Index, p.Name, p.Type, p.GUID, p.Start, p.End, p.Attributes)
	}
	boot := readFS(t, d, 1)
	for _, name := range sortedKeys(boot) {
		if name == "/boot.scr" {
			fmt.Fprintf(&got, "boot %s %d bytes sha256 %x\n", name, len(boot[name]), sha256.Sum256(boot[name]))
			continue
		}
		if bytes.IndexByte(boot[name], 0) >= 0 {
			fmt.Fprintf(&got, "boot %s:\n%q\n", name, boot[name])
			continue
		}
		fmt.Fprintf(&got, "boot %s:\n%s\n", name, boot[name])
	}
	slots := [2]map[string][]byte{readFS(t, d, 2), readFS(t, d, 3)}
	for _, name := range sortedKeys(slots[0]) {
		switch name {
		case "/vmlinuz":
			fmt.Fprintf(&got, "slot %s %d bytes\n", name, len(slots[0][name]))
		case "/initramfs.cpio.gz":
			fmt.Fprintf(&got, "slot %s:\n%s", name, listInitramfs(t, slots[0][name]))
		default:
			fmt.Fprintf(&got, "slot %s:\n%s\n", name, slots[0][name])
		}
	}
	data := readFS(t, d, 4)
	for _, name := range sortedKeys(data) {
		fmt.Fprintf(&got, "data %s:\n%s\n", name, data[name])
	}
	golden(t, "layout.golden", got.String())
	if k, _ := os.ReadFile(o.Kernel); !bytes.Equal(slots[0]["/vmlinuz"], k) {
		t.Error("vmlinuz in slot A differs from the kernel given")
	}
	// The two slots hold the same bytes, and those of the slot image a bundle carries.
	a, b := partBytes(t, d, 2), partBytes(t, d, 3)
	if !bytes.Equal(a, b) {
		t.Error("slot A and slot B differ")
	}
	o.SlotOut = filepath.Join(t.TempDir(), "slot.img")
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	if slot, err := os.ReadFile(o.SlotOut); err != nil || !bytes.Equal(slot, a) {
		t.Errorf("the -slot-out image (%d bytes, %v) differs from slot A's partition (%d bytes)", len(slot), err, len(a))
	}
	// Initramfs: firmware.json and the keys.
	files := initramfsFiles(t, slots[0]["/initramfs.cpio.gz"])
	if got := string(files["etc/rackwatch/firmware.json"]); got != `{"version":"1.2.3","board":"rackwatch-arm64","epoch":1735689600}`+"\n" {
		t.Errorf("firmware.json = %q", got)
	}
	if got := string(files["etc/rackwatch/keys/site.pub"]); !strings.Contains(got, "RWQ=") {
		t.Errorf("keys/site.pub = %q", got)
	}
	// The initial state is generation 0 in both copies, A first.
	for _, f := range bootstate.Files {
		s, err := bootstate.Parse(boot["/"+f])
		if err != nil || !reflect.DeepEqual(s, bootstate.Default()) {
			t.Errorf("%s = %+v, %v; want the default state", f, s, err)
		}
	}
}

// TestSlotB checks the test hook that gives slot B another rackwatch.
func TestSlotB(t *testing.T) {
	o := fakeInputs(t)
	o.RackwatchB = filepath.Join(t.TempDir(), "exit1")
	os.WriteFile(o.RackwatchB, []byte("EXIT1"), 0o755)
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(o.Out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for part, want := range map[int]string{2: "RACKWATCH", 3: "EXIT1"} {
		files := initramfsFiles(t, readFS(t, d, part)["/initramfs.cpio.gz"])
		if got := string(files["usr/bin/rackwatch"]); got != want {
			t.Errorf("partition %d: rackwatch = %q, want %q", part, got, want)
		}
	}
}

func partBytes(t *testing.T, d *disk.Disk, part int) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := d.ReadPartitionContents(part, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func initramfsFiles(t *testing.T, gz []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	r := cpio.NewReader(zr)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
}

func readFS(t *testing.T, d *disk.Disk, part int) map[string][]byte {
	t.Helper()
	fs, err := d.GetFilesystem(part)
	if err != nil {
		t.Fatalf("partition %d: %v", part, err)
	}
	out := map[string][]byte{}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := fs.ReadDir(dir)
		if err != nil {
			t.Fatalf("partition %d: read %s: %v", part, dir, err)
		}
		for _, e := range ents {
			rel := path.Join(dir, e.Name()) // io/fs style: "." is the root
			if e.IsDir() {
				walk(rel)
				continue
			}
			p := "/" + rel
			f, err := fs.OpenFile(p, os.O_RDONLY)
			if err != nil {
				t.Fatalf("partition %d: open %s: %v", part, p, err)
			}
			b, err := io.ReadAll(f)
			if err != nil {
				t.Fatalf("partition %d: read %s: %v", part, p, err)
			}
			// go-diskfs's reader can run on to the end of the last cluster: the
			// directory entry has the size.
			if info, err := e.Info(); err == nil && int64(len(b)) > info.Size() {
				b = b[:info.Size()]
			}
			out[p] = b
		}
	}
	walk(".")
	return out
}

func listInitramfs(t *testing.T, gz []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q and time %v", zr.Name, zr.ModTime)
	}
	var b strings.Builder
	r := cpio.NewReader(zr)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  %-30s %s %7d uid %d gid %d %s\n", h.Name, h.Mode, h.Size, h.Uid, h.Guid, h.ModTime.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return b.String()
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestBuildErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(o *options)
		want   string
	}{
		{"no kernel", func(o *options) { o.Kernel = o.Kernel + ".missing" }, "read kernel"},
		{"no licence", func(o *options) { os.Remove(filepath.Join(filepath.Dir(o.Kernel), "LICENSE.linux")) }, "licence"},
		{"no init", func(o *options) { o.Init = "" }, "read init"},
		{"no rackwatch", func(o *options) { o.Rackwatch = o.Rackwatch + ".missing" }, "read rackwatch"},
		{"no config", func(o *options) { o.Config = o.Config + ".missing" }, "read config"},
		{"slot too small", func(o *options) { o.SlotMiB = 4 }, "too small"},
		{"no keys folder", func(o *options) { o.Keys = o.Keys + ".missing" }, "keys"},
		{"version of two lines", func(o *options) { o.Version = "1\n2" }, "version"},
		{"quote in the command line", func(o *options) { o.Cmdline = `a="b"` }, "command line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := fakeInputs(t)
			c.change(&o)
			_, err := build(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one about %q", err, c.want)
			}
			if _, err := os.Stat(o.Out); err == nil {
				t.Error("a failed build left an image behind")
			}
		})
	}
}

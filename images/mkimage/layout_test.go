package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"
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
		BootMiB:   40,
		DataMiB:   40,
	}
}

// TestLayout opens a built image the way a board's firmware and /init see it and compares
// what it finds with testdata/layout.golden: partition table, boot files, extlinux.conf, the
// initramfs listing and the data partition.
func TestLayout(t *testing.T) {
	o := fakeInputs(t)
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
		if name == "/vmlinuz" {
			fmt.Fprintf(&got, "boot %s %d bytes\n", name, len(boot[name]))
			continue
		}
		if name == "/initramfs.cpio.gz" {
			fmt.Fprintf(&got, "boot %s:\n%s", name, listInitramfs(t, boot[name]))
			continue
		}
		fmt.Fprintf(&got, "boot %s:\n%s\n", name, boot[name])
	}
	data := readFS(t, d, 2)
	for _, name := range sortedKeys(data) {
		fmt.Fprintf(&got, "data %s:\n%s\n", name, data[name])
	}
	golden(t, "layout.golden", got.String())
	if k, _ := os.ReadFile(o.Kernel); !bytes.Equal(boot["/vmlinuz"], k) {
		t.Error("vmlinuz on the boot partition differs from the kernel given")
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
		{"boot too small", func(o *options) { o.BootMiB = 4 }, "too small"},
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

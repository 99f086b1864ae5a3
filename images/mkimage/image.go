package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/cavaliergopher/cpio"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	kernelModule = "github.com/gokrazy/kernel.arm64"
	// defaultEpoch is used when SOURCE_DATE_EPOCH is not set, so that even a bare build is
	// reproducible (2025-01-01T00:00:00Z).
	defaultEpoch   = 1735689600
	defaultCmdline = "console=ttyAMA0,115200 panic=10 oops=panic rackwatch.ip=10.0.2.15/24 rackwatch.gw=10.0.2.2"

	// Partition names: /init finds the data partition by its name (rackwatch.data=).
	bootName = "rackwatch-boot"
	dataName = "rackwatch-data"

	// Fixed GUIDs: random ones would make every build differ. They identify this image
	// layout, not a device; two boards flashed with the same image share them, as with any
	// distribution image.
	diskGUID = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F10"
	bootGUID = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F11"
	dataGUID = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F12"

	sector = 512
	mib    = 1 << 20
	// gptLegacyBootable is GPT attribute bit 2, which U-Boot's distro boot looks for.
	gptLegacyBootable = 1 << 2
)

type options struct {
	Kernel, Init, Rackwatch, Config string
	Cmdline                         string
	Out                             string
	Epoch                           int64
	BootMiB, DataMiB                int64
}

// build writes the image and its .sha256 file and returns the hex digest.
func build(o options) (string, error) {
	if o.BootMiB == 0 {
		o.BootMiB = 128
	}
	if o.DataMiB == 0 {
		o.DataMiB = 64
	}
	if o.Cmdline == "" {
		o.Cmdline = defaultCmdline
	}
	// go-diskfs stamps FAT directory entries with SOURCE_DATE_EPOCH.
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(o.Epoch, 10))
	mtime := time.Unix(o.Epoch, 0).UTC()

	kernel, err := os.ReadFile(o.Kernel)
	if err != nil {
		return "", fmt.Errorf("read kernel: %w", err)
	}
	config, err := os.ReadFile(o.Config)
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	initrd, err := initramfs(o, config, mtime)
	if err != nil {
		return "", err
	}
	if need := int64(len(kernel)+len(initrd)) + 4*mib; need > o.BootMiB*mib {
		return "", fmt.Errorf("boot partition of %d MiB is too small for %d MiB of kernel and initramfs", o.BootMiB, need/mib)
	}

	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return "", fmt.Errorf("create output folder: %w", err)
	}
	tmp := o.Out + ".tmp"
	os.Remove(tmp)
	defer os.Remove(tmp)
	size := (1 + o.BootMiB + o.DataMiB + 1) * mib
	d, err := diskfs.Create(tmp, size, diskfs.SectorSize512)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, err)
	}
	bootStart := uint64(mib / sector)
	bootEnd := bootStart + uint64(o.BootMiB*mib/sector) - 1
	dataStart := bootEnd + 1
	dataEnd := dataStart + uint64(o.DataMiB*mib/sector) - 1
	table := &gpt.Table{
		GUID:               diskGUID,
		LogicalSectorSize:  sector,
		PhysicalSectorSize: sector,
		ProtectiveMBR:      true,
		Partitions: []*gpt.Partition{
			{Index: 1, Start: bootStart, End: bootEnd, Type: gpt.MicrosoftBasicData, Name: bootName, GUID: bootGUID, Attributes: gptLegacyBootable},
			{Index: 2, Start: dataStart, End: dataEnd, Type: gpt.MicrosoftBasicData, Name: dataName, GUID: dataGUID},
		},
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return "", fmt.Errorf("write partition table: %w", err)
	}

	extlinux := fmt.Sprintf("# U-Boot distro boot reads this file; edit append to change the network.\n"+
		"default rackwatch\ntimeout 0\n\nlabel rackwatch\n"+
		"  kernel /vmlinuz\n  initrd /initramfs.cpio.gz\n  append %s\n", o.Cmdline)
	notice, license, err := kernelNotice(o.Kernel)
	if err != nil {
		return "", err
	}
	boot := []file{
		{"/vmlinuz", kernel},
		{"/LICENSE.linux", license},
		{"/KERNEL-SOURCE.txt", notice},
		{"/initramfs.cpio.gz", initrd},
		{"/extlinux/extlinux.conf", []byte(extlinux)},
	}
	if err := writeFAT(d, 1, "RWBOOT", boot); err != nil {
		d.Close()
		return "", err
	}
	data := []file{
		{"/rackwatch.yaml", config},
	}
	if err := writeFAT(d, 2, "RWDATA", data); err != nil {
		d.Close()
		return "", err
	}
	if err := d.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", tmp, err)
	}

	sum, err := sha256File(tmp)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, o.Out); err != nil {
		return "", fmt.Errorf("install %s: %w", o.Out, err)
	}
	line := fmt.Sprintf("%s  %s\n", sum, filepath.Base(o.Out))
	if err := os.WriteFile(o.Out+".sha256", []byte(line), 0o644); err != nil {
		return "", fmt.Errorf("write checksum: %w", err)
	}
	return sum, nil
}

// kernelNotice returns the text that says where the kernel's source is, and the kernel's
// licence, both shipped on the boot partition next to vmlinuz: the image distributes a
// GPL-2.0 binary. They come from the kernel's folder (the gokrazy module's layout: LICENSE.linux,
// _build/upstream-url.txt, _build/series and the patches, _build/config.addendum.txt).
func kernelNotice(kernel string) (notice, license []byte, err error) {
	dir := filepath.Dir(kernel)
	license, err = os.ReadFile(filepath.Join(dir, "LICENSE.linux"))
	if err != nil {
		return nil, nil, fmt.Errorf("the kernel's licence must ship with it: %w", err)
	}
	upstream, _ := os.ReadFile(filepath.Join(dir, "_build", "upstream-url.txt"))
	series, _ := os.ReadFile(filepath.Join(dir, "_build", "series"))
	var b bytes.Buffer
	fmt.Fprintf(&b, "vmlinuz is Linux, licensed under the GNU General Public License version 2\n"+
		"with the Linux syscall note (LICENSE.linux).\n\n"+
		"It is the prebuilt kernel of the Go module %s, at the version\n"+
		"pinned in rackwatch's go.mod (module folder: %s).\n\n",
		kernelModule, filepath.Base(dir))
	if len(upstream) > 0 {
		fmt.Fprintf(&b, "Upstream source: %s\n", bytes.TrimSpace(upstream))
	}
	if len(series) > 0 {
		fmt.Fprintf(&b, "Patches applied (in the module's _build folder): %s\n", bytes.Join(bytes.Fields(series), []byte(", ")))
	}
	fmt.Fprintf(&b, "Configuration: gokrazy's base config plus the module's _build/config.addendum.txt,\n"+
		"built by github.com/gokrazy/autoupdate/cmd/gokr-rebuild-kernel (-cross=arm64).\n"+
		"Source and build files: https://github.com/gokrazy/kernel.arm64 at that version.\n")
	return b.Bytes(), license, nil
}

type file struct {
	path string
	data []byte
}

func writeFAT(d *disk.Disk, part int, label string, files []file) error {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: part, FSType: filesystem.TypeFat32, VolumeLabel: label, Reproducible: true})
	if err != nil {
		return fmt.Errorf("partition %d: make FAT32: %w", part, err)
	}
	for _, f := range files {
		if dir := filepath.Dir(f.path); dir != "/" {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("partition %d: mkdir %s: %w", part, dir, err)
			}
		}
		w, err := fs.OpenFile(f.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("partition %d: create %s: %w", part, f.path, err)
		}
		if _, err := w.Write(f.data); err != nil {
			return fmt.Errorf("partition %d: write %s: %w", part, f.path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("partition %d: close %s: %w", part, f.path, err)
		}
	}
	return nil
}

// initramfs makes the gzip'd newc archive the kernel unpacks as its root filesystem.
func initramfs(o options, config []byte, mtime time.Time) ([]byte, error) {
	initBin, err := os.ReadFile(o.Init)
	if err != nil {
		return nil, fmt.Errorf("read init: %w", err)
	}
	rw, err := os.ReadFile(o.Rackwatch)
	if err != nil {
		return nil, fmt.Errorf("read rackwatch: %w", err)
	}
	type entry struct {
		mode cpio.FileMode
		data []byte
	}
	dir := cpio.FileMode(cpio.TypeDir | 0o755)
	entries := map[string]entry{
		"data": {dir, nil}, "dev": {dir, nil}, "etc": {dir, nil}, "etc/rackwatch": {dir, nil},
		"proc": {dir, nil}, "run": {dir, nil}, "sys": {dir, nil}, "tmp": {cpio.FileMode(cpio.TypeDir | 0o1777), nil},
		"usr": {dir, nil}, "usr/bin": {dir, nil},
		"init":                         {cpio.FileMode(cpio.TypeReg | 0o755), initBin},
		"usr/bin/rackwatch":            {cpio.FileMode(cpio.TypeReg | 0o755), rw},
		"etc/rackwatch/rackwatch.yaml": {cpio.FileMode(cpio.TypeReg | 0o644), config},
		"etc/hostname":                 {cpio.FileMode(cpio.TypeReg | 0o644), []byte("rackwatch\n")},
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	cw := cpio.NewWriter(zw)
	for i, n := range names {
		e := entries[n]
		links := 1
		if e.mode.IsDir() {
			links = 2
		}
		h := &cpio.Header{Name: n, Mode: e.mode, Size: int64(len(e.data)), ModTime: mtime, Inode: int64(i + 1), Links: links}
		if err := cw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("initramfs: %s: %w", n, err)
		}
		if _, err := cw.Write(e.data); err != nil {
			return nil, fmt.Errorf("initramfs: %s: %w", n, err)
		}
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("initramfs: gzip: %w", err)
	}
	return buf.Bytes(), nil
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

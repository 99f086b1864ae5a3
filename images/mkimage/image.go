package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cavaliergopher/cpio"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

const (
	kernelModule = "github.com/gokrazy/kernel.arm64"
	// defaultEpoch is used when SOURCE_DATE_EPOCH is not set, so that even a bare build is
	// reproducible (2025-01-01T00:00:00Z).
	defaultEpoch   = 1735689600
	defaultCmdline = "console=ttyAMA0,115200 panic=10 oops=panic rackwatch.ip=10.0.2.15/24 rackwatch.gw=10.0.2.2"
	defaultVersion = "dev"
	// board names the hardware an image and an update bundle are for: a bundle for another
	// board is refused.
	board = "rackwatch-arm64"

	// Partition names: /init, the boot script and the updater find partitions by name.
	bootName  = "rackwatch-boot"
	slotAName = "rackwatch-a"
	slotBName = "rackwatch-b"
	dataName  = "rackwatch-data"

	// Fixed GUIDs: random ones would make every build differ. They identify this image
	// layout, not a device; two boards flashed with the same image share them, as with any
	// distribution image.
	diskGUID  = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F10"
	bootGUID  = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F11"
	dataGUID  = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F12"
	slotAGUID = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F13"
	slotBGUID = "8C1A4E52-7B3D-4F0A-9E61-2D5C7A9B3F14"

	sector = 512
	mib    = 1 << 20
	// gptLegacyBootable is GPT attribute bit 2, which U-Boot's distro boot looks for: only
	// the boot partition has it, so distro boot runs its boot.scr and nothing else.
	gptLegacyBootable = 1 << 2

	defaultBootMiB = 32
	defaultSlotMiB = 96
	defaultDataMiB = 64
)

type options struct {
	Kernel, Init, Rackwatch, Config string
	// RackwatchB, when set, is slot B's rackwatch instead of Rackwatch (tests give it a
	// program that fails, to prove the fallback to slot A).
	RackwatchB string
	Keys       string // folder of minisign public keys (*.pub) built into the initramfs
	Version    string
	Cmdline    string
	Out        string
	// SlotOut, when set, makes build write only one slot's file system image there (what
	// an update bundle carries) instead of the whole disk image.
	SlotOut                   string
	Epoch                     int64
	BootMiB, SlotMiB, DataMiB int64
}

func (o *options) defaults() {
	if o.BootMiB == 0 {
		o.BootMiB = defaultBootMiB
	}
	if o.SlotMiB == 0 {
		o.SlotMiB = defaultSlotMiB
	}
	if o.DataMiB == 0 {
		o.DataMiB = defaultDataMiB
	}
	if o.Cmdline == "" {
		o.Cmdline = defaultCmdline
	}
	if o.Version == "" {
		o.Version = defaultVersion
	}
}

var buildMu sync.Mutex

// build writes the image (or with SlotOut the slot image) and its .sha256 file and returns
// the hex digest.
func build(o options) (string, error) {
	// One build at a time: go-diskfs takes its timestamps from the process environment.
	buildMu.Lock()
	defer buildMu.Unlock()
	o.defaults()
	if strings.ContainsAny(o.Version, "\n\r\x00") || len(o.Version) > 128 {
		return "", fmt.Errorf("version %q: one line of at most 128 bytes", o.Version)
	}
	if strings.ContainsAny(o.Cmdline, "\n\r\x00") {
		return "", fmt.Errorf("kernel command line: one line")
	}
	// go-diskfs stamps FAT directory entries with SOURCE_DATE_EPOCH.
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(o.Epoch, 10))
	mtime := time.Unix(o.Epoch, 0).UTC()

	kernel, err := os.ReadFile(o.Kernel)
	if err != nil {
		return "", fmt.Errorf("read kernel: %w", err)
	}
	notice, license, err := kernelNotice(o.Kernel)
	if err != nil {
		return "", err
	}
	config, err := os.ReadFile(o.Config)
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	keys, err := readKeys(o.Keys)
	if err != nil {
		return "", err
	}
	slotFiles := func(rackwatch string) ([]file, error) {
		initrd, err := initramfs(o, rackwatch, config, keys, mtime)
		if err != nil {
			return nil, err
		}
		if need := int64(len(kernel)+len(initrd)) + 4*mib; need > o.SlotMiB*mib {
			return nil, fmt.Errorf("slot partition of %d MiB is too small for %d MiB of kernel and initramfs", o.SlotMiB, need/mib)
		}
		return slotContent(o, kernel, initrd, license, notice)
	}

	if o.SlotOut != "" {
		files, err := slotFiles(o.Rackwatch)
		if err != nil {
			return "", err
		}
		return install(o.SlotOut, func(tmp string) error { return writeSlotImage(tmp, o.SlotMiB, files) })
	}

	slotA, err := slotFiles(o.Rackwatch)
	if err != nil {
		return "", err
	}
	slotB := slotA
	if o.RackwatchB != "" {
		if slotB, err = slotFiles(o.RackwatchB); err != nil {
			return "", err
		}
	}
	script, err := bootScript(o.Cmdline, mtime)
	if err != nil {
		return "", err
	}
	st := bootstate.Default()
	boot := []file{
		{"/boot.cmd", []byte(script.text)},
		{"/boot.scr", script.image},
		{"/cmdline.txt", cmdlineFile(o.Cmdline)},
		{"/LICENSE.linux", license},
		{"/KERNEL-SOURCE.txt", notice},
		{"/" + bootstate.Files[0], st.Marshal()},
		{"/" + bootstate.Files[1], st.Marshal()},
	}
	data := []file{{"/rackwatch.yaml", config}}
	return install(o.Out, func(tmp string) error { return writeDisk(tmp, o, boot, slotA, slotB, data) })
}

// install runs write on a temporary file next to out, renames it to out and writes
// out.sha256; nothing is left behind on failure.
func install(out string, write func(tmp string) error) (string, error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("create output folder: %w", err)
	}
	tmp := out + ".tmp"
	os.Remove(tmp)
	defer os.Remove(tmp)
	if err := write(tmp); err != nil {
		return "", err
	}
	sum, err := sha256File(tmp)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("install %s: %w", out, err)
	}
	line := fmt.Sprintf("%s  %s\n", sum, filepath.Base(out))
	if err := os.WriteFile(out+".sha256", []byte(line), 0o644); err != nil {
		return "", fmt.Errorf("write checksum: %w", err)
	}
	return sum, nil
}

// writeDisk writes the GPT disk: boot, slot A, slot B, data. Each slot partition holds the
// bytes of a slot image, the same bytes an update bundle writes there.
func writeDisk(path string, o options, boot, slotA, slotB, data []file) error {
	parts := []struct {
		name, guid string
		mib        int64
		attr       uint64
	}{
		{bootName, bootGUID, o.BootMiB, gptLegacyBootable},
		{slotAName, slotAGUID, o.SlotMiB, 0},
		{slotBName, slotBGUID, o.SlotMiB, 0},
		{dataName, dataGUID, o.DataMiB, 0},
	}
	size := int64(2 * mib) // the GPT and its backup
	table := &gpt.Table{GUID: diskGUID, LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true}
	start := uint64(mib / sector)
	for i, p := range parts {
		end := start + uint64(p.mib*mib/sector) - 1
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: end,
			Type: gpt.MicrosoftBasicData, Name: p.name, GUID: p.guid, Attributes: p.attr})
		start = end + 1
		size += p.mib * mib
	}
	d, err := diskfs.Create(path, size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return fmt.Errorf("write partition table: %w", err)
	}
	if err := writeFAT(d, 1, "RWBOOT", boot); err != nil {
		d.Close()
		return err
	}
	if err := writeFAT(d, 4, "RWDATA", data); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	for i, files := range [][]file{slotA, slotB} {
		img := path + ".slot"
		err := writeSlotImage(img, o.SlotMiB, files)
		if err == nil {
			err = copySparse(path, int64(table.Partitions[1+i].Start)*sector, img)
		}
		os.Remove(img)
		if err != nil {
			return fmt.Errorf("slot %c: %w", 'a'+i, err)
		}
	}
	return nil
}

// writeSlotImage writes a FAT32 file system of exactly mibs MiB holding files.
func writeSlotImage(path string, mibs int64, files []file) error {
	os.Remove(path)
	d, err := diskfs.Create(path, mibs*mib, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := writeFAT(d, 0, "RWSLOT", files); err != nil {
		d.Close()
		return err
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// copySparse writes the file src into dst at offset off, skipping blocks of zeros: dst is
// a fresh sparse file whose holes read as zeros already, and most of a slot is free space.
func copySparse(dst string, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for pos := off; ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], pos); werr != nil {
				out.Close()
				return werr
			}
		}
		pos += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// slotContent is what a slot holds: the kernel, the initramfs, the version and a manifest
// with the size and SHA-256 of each, and the kernel's licence, which travels with it.
func slotContent(o options, kernel, initrd, license, notice []byte) ([]file, error) {
	files := []file{
		{"/vmlinuz", kernel},
		{"/initramfs.cpio.gz", initrd},
		{"/VERSION", []byte(o.Version + "\n")},
		{"/LICENSE.linux", license},
		{"/KERNEL-SOURCE.txt", notice},
	}
	type entry struct {
		Name   string `json:"name"`
		Size   int    `json:"size"`
		SHA256 string `json:"sha256"`
	}
	m := struct {
		Format  int     `json:"format"`
		Board   string  `json:"board"`
		Version string  `json:"version"`
		Epoch   int64   `json:"epoch"`
		Files   []entry `json:"files"`
	}{Format: 1, Board: board, Version: o.Version, Epoch: o.Epoch}
	for _, f := range files {
		sum := sha256.Sum256(f.data)
		m.Files = append(m.Files, entry{strings.TrimPrefix(f.path, "/"), len(f.data), hex.EncodeToString(sum[:])})
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(files, file{"/manifest.json", append(b, '\n')}), nil
}

// firmwareJSON is /etc/rackwatch/firmware.json in the initramfs: what the running firmware
// is, for the updater (the board a bundle must name, the epoch a bundle must not go below).
func firmwareJSON(o options) []byte {
	b, _ := json.Marshal(struct {
		Version string `json:"version"`
		Board   string `json:"board"`
		Epoch   int64  `json:"epoch"`
	}{o.Version, board, o.Epoch})
	return append(b, '\n')
}

// readKeys reads the minisign public keys (*.pub) of dir, by name. No dir: no keys, and
// the image will refuse every update bundle.
func readKeys(dir string) (map[string][]byte, error) {
	keys := map[string][]byte{}
	if dir == "" {
		return keys, nil
	}
	m, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("update keys: %w", err)
	}
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("update keys: %w", err)
		}
		if len(b) > 4096 {
			return nil, fmt.Errorf("update key %s: %d bytes is not a minisign public key", p, len(b))
		}
		keys[filepath.Base(p)] = b
	}
	return keys, nil
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
func initramfs(o options, rackwatch string, config []byte, keys map[string][]byte, mtime time.Time) ([]byte, error) {
	initBin, err := os.ReadFile(o.Init)
	if err != nil {
		return nil, fmt.Errorf("read init: %w", err)
	}
	rw, err := os.ReadFile(rackwatch)
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
		"etc/rackwatch/firmware.json":  {cpio.FileMode(cpio.TypeReg | 0o644), firmwareJSON(o)},
		"etc/rackwatch/keys":           {dir, nil},
		"boot":                         {dir, nil},
	}
	for name, b := range keys {
		entries["etc/rackwatch/keys/"+name] = entry{cpio.FileMode(cpio.TypeReg | 0o644), b}
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

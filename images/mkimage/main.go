// Command mkimage builds the rackwatch firmware: a GPT disk image for arm64 boards whose
// U-Boot runs a boot script (distro boot), also proven in QEMU. Partition 1 (FAT32,
// "rackwatch-boot") holds boot.scr, its A/B boot state and the kernel command line;
// partitions 2 and 3 ("rackwatch-a", "rackwatch-b") are the two slots, each a FAT32 file
// system with a kernel, an initramfs (our /init, rackwatch, the default config, the update
// keys) and a manifest; partition 4 ("rackwatch-data") holds the site config and
// rackwatch's data_dir, and is never touched by updates.
//
// The output is reproducible: the same inputs and SOURCE_DATE_EPOCH give the same bytes
// (fixed GUIDs, fixed volume IDs, sorted initramfs with fixed times, no gzip name or time,
// boot.scr stamped with SOURCE_DATE_EPOCH).
//
//	mkimage -init init.arm64 -rackwatch rackwatch.arm64 -config images/rackwatch-image.yaml \
//	        -version 1.2.3 -keys images/keys -o images/out/rackwatch-arm64.img
//
// It writes IMG and IMG.sha256. With -slot-out FILE it writes only one slot's file system
// image (FILE and FILE.sha256), the payload of an update bundle. It is a build tool: it must
// not import the daemon.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

func main() {
	var o options
	flag.StringVar(&o.Kernel, "kernel", "", "arm64 kernel Image (default: vmlinuz of the Go module github.com/gokrazy/kernel.arm64)")
	flag.StringVar(&o.Init, "init", "", "static linux/arm64 /init program (go build ./images/init)")
	flag.StringVar(&o.Rackwatch, "rackwatch", "", "static linux/arm64 rackwatch binary (go build ./daemon)")
	flag.StringVar(&o.RackwatchB, "rackwatch-b", "", "for tests: another rackwatch for slot B (default: the same as slot A)")
	flag.StringVar(&o.Config, "config", "images/rackwatch-image.yaml", "site config installed on first boot")
	flag.StringVar(&o.Keys, "keys", "images/keys", "folder of minisign public keys (*.pub) that updates must be signed with")
	flag.StringVar(&o.Version, "version", defaultVersion, "firmware version (VERSION, manifest.json, firmware.json)")
	flag.StringVar(&o.Cmdline, "cmdline", defaultCmdline, "kernel command line (cmdline.txt, and boot.scr's default)")
	flag.Int64Var(&o.BootMiB, "boot-mib", defaultBootMiB, "boot partition size in MiB")
	flag.Int64Var(&o.SlotMiB, "slot-mib", defaultSlotMiB, "size of each slot partition in MiB")
	flag.Int64Var(&o.DataMiB, "data-mib", defaultDataMiB, "data partition size in MiB")
	flag.StringVar(&o.SlotOut, "slot-out", "", "write only a slot's file system image to this file (for an update bundle)")
	out := flag.String("o", "images/out/rackwatch-arm64.img", "output image")
	flag.Parse()
	o.Out = *out
	if o.Init == "" || o.Rackwatch == "" {
		log.Fatal("mkimage: -init and -rackwatch are required")
	}
	if o.Kernel == "" {
		k, err := moduleKernel()
		if err != nil {
			log.Fatal(err)
		}
		o.Kernel = k
	}
	o.Epoch = defaultEpoch
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		e, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			log.Fatalf("mkimage: SOURCE_DATE_EPOCH=%q: %v", s, err)
		}
		o.Epoch = e
	}
	sum, err := build(o)
	if err != nil {
		log.Fatal(err)
	}
	if o.SlotOut != "" {
		o.Out = o.SlotOut
	}
	fmt.Printf("%s  %s\n", sum, o.Out)
}

// moduleKernel finds the kernel of the module pinned by go.mod, downloading the module when
// the module cache does not have it yet: `go list -m` would print an empty folder then.
func moduleKernel() (string, error) {
	dir, err := moduleDir(kernelModule)
	if err != nil {
		return "", fmt.Errorf("mkimage: %w", err)
	}
	return filepath.Join(dir, "vmlinuz"), nil
}

// moduleDir returns the folder of module mod, at the version of the build list, in the
// module cache.
func moduleDir(mod string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	// On failure go mod download -json still prints the module with its Error.
	var m struct{ Path, Version, Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		if runErr != nil {
			return "", fmt.Errorf("go mod download %s: %v\n%s", mod, runErr, stderr.Bytes())
		}
		return "", fmt.Errorf("go mod download %s: %v", mod, err)
	}
	if m.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, m.Error)
	}
	if runErr != nil {
		return "", fmt.Errorf("go mod download %s: %v\n%s", mod, runErr, stderr.Bytes())
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no folder in the module cache", mod)
	}
	return m.Dir, nil
}

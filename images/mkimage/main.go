// Command mkimage builds the rackwatch firmware: a GPT disk image for arm64 boards that boot
// with U-Boot's distro boot (extlinux.conf), also proven in QEMU. Partition 1 (FAT32,
// "rackwatch-boot") holds the kernel, the initramfs (our /init, rackwatch, the default
// config) and extlinux/extlinux.conf; partition 2 (FAT32, "rackwatch-data") holds the site
// config and rackwatch's data_dir, and survives updates of partition 1.
//
// The output is reproducible: the same inputs and SOURCE_DATE_EPOCH give the same bytes
// (fixed GUIDs, fixed volume IDs, sorted initramfs with fixed times, no gzip name or time).
//
//	mkimage -init init.arm64 -rackwatch rackwatch.arm64 -config images/rackwatch-image.yaml \
//	        -o images/out/rackwatch-arm64.img
//
// It writes IMG and IMG.sha256. It is a build tool: it must not import the daemon.
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
	flag.StringVar(&o.Config, "config", "images/rackwatch-image.yaml", "site config installed on first boot")
	flag.StringVar(&o.Cmdline, "cmdline", defaultCmdline, "kernel command line (extlinux.conf append)")
	flag.Int64Var(&o.BootMiB, "boot-mib", 128, "boot partition size in MiB")
	flag.Int64Var(&o.DataMiB, "data-mib", 64, "data partition size in MiB")
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

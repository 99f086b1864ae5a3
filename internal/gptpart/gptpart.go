// Package gptpart finds block devices by their GPT partition name, as the kernel reports it
// in /sys/class/block/*/uevent (PARTNAME). The firmware's partitions are named, not numbered,
// so that /init and the updater agree on them whatever the disk is called on a board.
package gptpart

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// SysBlock is where the kernel lists block devices.
const SysBlock = "/sys/class/block"

// Find returns the /dev path of the partition whose GPT name is name.
func Find(name string) (string, error) {
	return FindIn(SysBlock, name)
}

// FindIn is Find over another /sys/class/block (tests use a fake one).
func FindIn(sysBlock, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("no partition name given")
	}
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", sysBlock, err)
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(sysBlock, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		kv := parseUevent(f)
		f.Close()
		if kv["PARTNAME"] == name && kv["DEVNAME"] != "" {
			return "/dev/" + kv["DEVNAME"], nil
		}
	}
	return "", fmt.Errorf("no partition named %q", name)
}

func parseUevent(r io.Reader) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	return kv
}

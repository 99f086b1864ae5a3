//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackwatch/rackwatch/internal/gptpart"
)

// earlyMounts mounts the kernel filesystems. It runs before the console is set up, so it
// cannot log; a failure here shows up as the next step failing, with a message.
func earlyMounts() {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		os.MkdirAll(m.dst, 0o755)
		unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data)
	}
}

// setupConsole points stdin, stdout and stderr at /dev/console: the initramfs has no device
// nodes, so the kernel could not open one for us.
func setupConsole() {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return
	}
	for fd := 0; fd < 3; fd++ {
		unix.Dup3(int(f.Fd()), fd, 0)
	}
	if f.Fd() > 2 {
		f.Close()
	}
}

// mountPartition waits for the partition named name (block devices may be probed after
// init starts) and mounts it on dir; what ("data", "boot") names it in the log.
func mountPartition(what, name, dir string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var dev string
	for {
		var err error
		if dev, err = gptpart.Find(name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("find %s partition: %w", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.MkdirAll(dir, 0o755)
	// flush: vfat writes back at close, so a power cut loses less. On /data rackwatch's
	// bbolt stores and queue fsync on their own; on /boot the boot state is written twice
	// (internal/bootstate) and fsynced.
	if err := unix.Mount(dev, dir, "vfat", unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV, "flush,umask=022"); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, dir, err)
	}
	slog.Info(what+" partition mounted", "dev", dev, "on", dir)
	return nil
}

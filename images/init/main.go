//go:build linux

// Command init is PID 1 of the rackwatch firmware image: the whole userland besides rackwatch
// itself. It mounts the kernel filesystems, brings up the network, mounts the data partition
// (site config and rackwatch's data_dir), feeds the hardware watchdog, and runs rackwatch,
// restarting it with backoff when it dies or stops sending its sd_notify watchdog pings.
// Everything is logged to the console.
//
// Settings come from the kernel command line (extlinux.conf on the boot partition):
//
//	rackwatch.ip=10.0.2.15/24   address of eth0 ("off": leave eth0 down)
//	rackwatch.gw=10.0.2.2       default gateway ("" for none)
//	rackwatch.dns=10.0.2.3      written to /etc/resolv.conf when set
//	rackwatch.data=rackwatch-data  GPT partition name of the data partition
//	rackwatch.watchdog=30       hardware watchdog timeout in seconds (1-600)
//
// The serial console accepts commands, one a line, for tests and for an operator with a
// cable: "rwinit status", "rwinit kill" (SIGKILL rackwatch, to prove the restart),
// "rwinit reboot" and "rwinit poweroff" (orderly: rackwatch stopped with SIGTERM, data
// unmounted, then reboot), and "rwinit watchdog-test" (stop feeding the hardware watchdog,
// to prove that it resets the board).
//
// It is a separate static program: it must not import the daemon, sensors or uplink packages,
// so that the firmware's PID 1 stays small and cannot be broken by the application.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Paths inside the initramfs and on the data partition.
const (
	rackwatchBin  = "/usr/bin/rackwatch"
	defaultConfig = "/etc/rackwatch/rackwatch.yaml"
	dataMount     = "/data"
	siteConfig    = "/data/rackwatch.yaml"
	notifySocket  = "/run/rackwatch/notify"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: this is the firmware's PID 1; it only runs as process 1")
		os.Exit(2)
	}
	earlyMounts()
	setupConsole()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{})).With("prog", "init")
	slog.SetDefault(log)

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error("read kernel command line", "err", err)
	}
	opts := parseCmdline(string(cmdline))
	if h, err := os.ReadFile("/etc/hostname"); err == nil {
		if err := unix.Sethostname(bytes.TrimSpace(h)); err != nil {
			log.Error("set hostname", "err", err)
		}
	}
	log.Info("starting", "ip", opts.IP, "gw", opts.GW, "data", opts.DataPartition)

	if err := setupNetwork(opts); err != nil {
		log.Error("network", "err", err)
	}
	if err := mountData(opts.DataPartition, 20*time.Second); err != nil {
		log.Error("data partition: falling back to tmpfs, nothing will survive a reboot", "err", err)
		if err := unix.Mount("tmpfs", dataMount, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			log.Error("mount tmpfs on /data", "err", err)
		}
	}
	if err := installDefaultConfig(siteConfig, defaultConfig); err != nil {
		log.Error("first-boot config", "err", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	wd := openWatchdog("/dev/watchdog", time.Duration(opts.Watchdog)*time.Second)
	sup := newSupervisor(rackwatchBin, []string{"rackwatch", "-config", siteConfig}, notifySocket)
	reboot := make(chan rebootKind, 1)

	// These goroutines live as long as the system: PID 1 never returns, it reboots (finish).
	// Only the supervisor is waited for, because rackwatch must be stopped before /data is
	// unmounted.
	done := make(chan struct{})
	go func() {
		defer close(done)
		sup.run(ctx)
	}()
	go reap(context.Background(), sup)
	go wd.feed(ctx, 5*time.Second)
	go readConsole(ctx, os.Stdin, sup, wd, reboot)
	go handleSignals(ctx, reboot)

	kind := <-reboot
	log.Info("shutting down", "then", kind)
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		log.Error("rackwatch did not stop within 30s")
	}
	finish(kind)
}

// installDefaultConfig copies the image's demo config to the data partition on first boot, so
// that the site config lives where an operator can edit it (the partition is FAT: any PC can).
func installDefaultConfig(dst, src string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", dst, err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read default config: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(dst), ".rackwatch.yaml.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	unix.Sync()
	slog.Info("first boot: installed the default config", "path", dst)
	return nil
}

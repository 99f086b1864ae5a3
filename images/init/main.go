//go:build linux

// Command init is PID 1 of the rackwatch firmware image: the whole userland besides rackwatch
// itself. It mounts the kernel filesystems, brings up the network, mounts the data partition
// (site config and rackwatch's data_dir), feeds the hardware watchdog, and runs rackwatch,
// restarting it with backoff when it dies or stops sending its sd_notify watchdog pings.
// Everything is logged to the console.
//
// Settings come from the kernel command line (RW_ARGS in cmdline.txt on the boot partition):
//
//	rackwatch.ip=10.0.2.15/24   address of eth0 ("off": leave eth0 down)
//	rackwatch.gw=10.0.2.2       default gateway ("" for none)
//	rackwatch.dns=10.0.2.3      written to /etc/resolv.conf when set
//	rackwatch.data=rackwatch-data  GPT partition name of the data partition
//	rackwatch.watchdog=30       hardware watchdog timeout in seconds (1-600)
//	rackwatch.slot=a            the slot the boot script booted (it adds this key itself)
//	rackwatch.start_timeout=120 seconds rackwatch may take to say READY=1 (1-3600)
//
// The boot partition is mounted read-write on /boot: rackwatch's updater writes the boot
// state there (internal/bootstate). When the booted slot is on trial (a new version, not yet
// committed), an exit of rackwatch reboots instead of restarting it: the boot script has
// already used the slot's only try, so the board comes back on the old slot.
//
// The serial console accepts commands, one a line, for tests and for an operator with a
// cable: "rwinit status", "rwinit kill" (SIGKILL rackwatch, to prove the restart),
// "rwinit reboot" and "rwinit poweroff" (orderly: rackwatch stopped with SIGTERM, data
// unmounted, then reboot), "rwinit watchdog-test" (stop feeding the hardware watchdog,
// to prove that it resets the board) and "rwinit bootstate" (the booted slot and the A/B
// boot state).
//
// It is a separate static program: it must not import the daemon, sensors or uplink packages,
// so that the firmware's PID 1 stays small and cannot be broken by the application.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

// Paths inside the initramfs and on the data partition.
const (
	rackwatchBin  = "/usr/bin/rackwatch"
	defaultConfig = "/etc/rackwatch/rackwatch.yaml"
	dataMount     = "/data"
	siteConfig    = "/data/rackwatch.yaml"
	notifySocket  = "/run/rackwatch/notify"
	bootMount     = "/boot"
	bootPartition = "rackwatch-boot"
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
	log.Info("starting", "slot", opts.Slot, "version", firmwareVersion(), "ip", opts.IP, "gw", opts.GW, "data", opts.DataPartition)

	if err := setupNetwork(opts); err != nil {
		log.Error("network", "err", err)
	}
	if err := mountPartition("data", opts.DataPartition, dataMount, 20*time.Second); err != nil {
		log.Error("data partition: falling back to tmpfs, nothing will survive a reboot", "err", err)
		if err := unix.Mount("tmpfs", dataMount, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			log.Error("mount tmpfs on /data", "err", err)
		}
	}
	if err := installDefaultConfig(siteConfig, defaultConfig); err != nil {
		log.Error("first-boot config", "err", err)
	}
	// Without /boot the board still runs, but cannot be updated or commit an update.
	if err := mountPartition("boot", bootPartition, bootMount, 5*time.Second); err != nil {
		log.Error("boot partition: updates are not possible", "err", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	wd := openWatchdog("/dev/watchdog", time.Duration(opts.Watchdog)*time.Second)
	sup := newSupervisor(rackwatchBin, []string{"rackwatch", "-config", siteConfig}, notifySocket)
	sup.timing.startTimeout = time.Duration(opts.StartTimeout) * time.Second
	sup.env = []string{"RACKWATCH_SLOT=" + opts.Slot, "RACKWATCH_BOOT_DIR=" + bootMount}
	reboot := make(chan rebootKind, 1)
	sup.restart = func(syscall.WaitStatus) bool {
		if !onTrial(bootMount, opts.Slot) {
			return true
		}
		slog.Error("rackwatch failed on a slot on trial: rebooting; the boot script returns to the other slot", "slot", opts.Slot)
		trySend(reboot, doReboot)
		return false
	}

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
	go readConsole(ctx, os.Stdin, sup, wd, reboot, opts.Slot)
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

// onTrial reports whether slot, the booted one, is on trial in the boot state under dir.
// It reads the state at each call: rackwatch commits an update by clearing the trial, and
// from then on an exit is restarted like any other. An unreadable state is no trial: a
// board that cannot read its state keeps restarting rackwatch rather than rebooting.
func onTrial(dir, slot string) bool {
	if slot == "" {
		return false
	}
	s, err := bootstate.Load(dir)
	if err != nil {
		slog.Error("read the boot state", "err", err)
		return false
	}
	return s.Trial == strings.ToUpper(slot)
}

// firmwareVersion is the version mkimage wrote into the initramfs ("" when missing).
func firmwareVersion() string {
	b, err := os.ReadFile("/etc/rackwatch/firmware.json")
	if err != nil {
		return ""
	}
	var f struct{ Version string }
	if json.Unmarshal(b, &f) != nil {
		return ""
	}
	return f.Version
}

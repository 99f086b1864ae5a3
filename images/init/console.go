//go:build linux

package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rackwatch/rackwatch/internal/bootstate"
)

type rebootKind string

const (
	doReboot   rebootKind = "reboot"
	doPowerOff rebootKind = "poweroff"
)

// consoleCommand is one line typed on the serial console.
type consoleCommand int

const (
	cmdNone consoleCommand = iota
	cmdStatus
	cmdKill
	cmdReboot
	cmdPowerOff
	cmdWatchdogTest
	cmdBootState
	cmdUnknown
)

// parseConsole recognises "rwinit <verb>" lines. Anything else typed on the console (or
// echoed back by the line discipline) is not for us.
func parseConsole(line string) consoleCommand {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "rwinit" {
		return cmdNone
	}
	if len(f) != 2 {
		return cmdUnknown
	}
	switch f[1] {
	case "status":
		return cmdStatus
	case "kill":
		return cmdKill
	case "reboot":
		return cmdReboot
	case "poweroff":
		return cmdPowerOff
	case "watchdog-test":
		return cmdWatchdogTest
	case "bootstate":
		return cmdBootState
	}
	return cmdUnknown
}

func readConsole(ctx context.Context, r io.Reader, s *supervisor, wd *watchdog, reboot chan<- rebootKind, slot string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() && ctx.Err() == nil {
		switch parseConsole(sc.Text()) {
		case cmdStatus:
			s.mu.Lock()
			slog.Info("console: status", "pid", s.pid, "ready", s.ready, "starts", s.starts, "last_ping", s.lastPing)
			s.mu.Unlock()
		case cmdKill:
			select {
			case s.kill <- struct{}{}:
			default:
			}
		case cmdReboot:
			slog.Warn("console: reboot")
			trySend(reboot, doReboot)
		case cmdPowerOff:
			slog.Warn("console: poweroff")
			trySend(reboot, doPowerOff)
		case cmdWatchdogTest:
			wd.stopFeeding()
		case cmdBootState:
			st, err := bootstate.Load(bootMount)
			if err != nil {
				slog.Error("console: bootstate", "err", err)
				break
			}
			slog.Info("console: bootstate", "booted", slot, "gen", st.Gen, "order", strings.Join(st.Order, " "),
				"a_left", st.Left[bootstate.SlotA], "b_left", st.Left[bootstate.SlotB], "trial", st.Trial)
		case cmdUnknown:
			slog.Warn("console: unknown command; try rwinit status|kill|reboot|poweroff|watchdog-test|bootstate", "line", sc.Text())
		}
	}
}

func trySend(c chan<- rebootKind, k rebootKind) {
	select {
	case c <- k:
	default:
	}
}

// handleSignals maps the signals the kernel sends PID 1 to an orderly stop: SIGINT is
// Ctrl-Alt-Del, SIGTERM a reboot request, SIGPWR/SIGUSR2 a power-off request.
func handleSignals(ctx context.Context, reboot chan<- rebootKind) {
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF) // deliver Ctrl-Alt-Del to us as SIGINT
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM, unix.SIGPWR, unix.SIGUSR2)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sig:
			if s == unix.SIGPWR || s == unix.SIGUSR2 {
				trySend(reboot, doPowerOff)
			} else {
				trySend(reboot, doReboot)
			}
		}
	}
}

// finish flushes and unmounts the boot and data partitions and restarts or powers off the
// machine.
func finish(kind rebootKind) {
	unix.Sync()
	for _, dir := range []string{bootMount, dataMount} {
		if err := unix.Unmount(dir, 0); err != nil && err != unix.EINVAL {
			slog.Error("unmount; remounting read-only", "dir", dir, "err", err)
			unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		}
	}
	unix.Sync()
	slog.Info("bye", "then", kind)
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if kind == doPowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := unix.Reboot(cmd); err != nil {
		slog.Error("reboot", "err", err)
	}
	select {} // PID 1 must not exit: the kernel would panic
}

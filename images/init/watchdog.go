//go:build linux

package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux watchdog ioctls (linux/watchdog.h).
const (
	wdiocKeepalive  = 0x80045705 // _IOR('W', 5, int)
	wdiocSetTimeout = 0xc0045706 // _IOWR('W', 6, int)
)

// watchdog is the hardware watchdog, or nothing when the board has none.
type watchdog struct {
	f       *os.File
	timeout time.Duration
	starve  chan struct{} // closed by the console's watchdog-test
	once    sync.Once
}

// openWatchdog opens the watchdog and sets its timeout. Once opened it must be fed for as
// long as the system runs: the device is never closed (closing may disarm it, which would
// hide an init hang).
func openWatchdog(path string, timeout time.Duration) *watchdog {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		if !os.IsNotExist(err) {
			slog.Error("open watchdog", "path", path, "err", err)
		} else {
			slog.Info("no hardware watchdog", "path", path)
		}
		return &watchdog{starve: make(chan struct{})}
	}
	secs := int32(timeout.Seconds())
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), wdiocSetTimeout, uintptr(unsafe.Pointer(&secs))); e != 0 {
		slog.Warn("set watchdog timeout; keeping the driver's", "err", e)
	}
	slog.Info("hardware watchdog armed", "path", path, "timeout_s", secs)
	return &watchdog{f: f, timeout: time.Duration(secs) * time.Second, starve: make(chan struct{})}
}

// stopFeeding makes feed stop for good: the board must then reset within the timeout. It is
// how an operator (or the boot test) proves that the watchdog works.
func (w *watchdog) stopFeeding() {
	if w.f == nil {
		slog.Warn("console: watchdog-test: there is no hardware watchdog")
		return
	}
	w.once.Do(func() {
		slog.Warn("console: watchdog-test: no longer feeding the watchdog; the board resets", "within", w.timeout)
		close(w.starve)
	})
}

// feed pets the watchdog every interval (at most a third of the timeout) until ctx ends. After that, finish reboots within
// the watchdog timeout anyway, and a hang there is exactly what the watchdog is for.
func (w *watchdog) feed(ctx context.Context, every time.Duration) {
	if w.f == nil {
		return
	}
	// Several feeds per timeout, whatever the command line set it to.
	if w.timeout > 0 && every > w.timeout/3 {
		every = w.timeout / 3
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var dummy int32
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, w.f.Fd(), wdiocKeepalive, uintptr(unsafe.Pointer(&dummy))); e != 0 {
			w.f.Write([]byte{0})
		}
		select {
		case <-ctx.Done():
			return
		case <-w.starve:
			return
		case <-t.C:
		}
	}
}

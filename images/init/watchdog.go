//go:build linux

package main

import (
	"context"
	"log/slog"
	"os"
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
type watchdog struct{ f *os.File }

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
		return &watchdog{}
	}
	secs := int32(timeout.Seconds())
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), wdiocSetTimeout, uintptr(unsafe.Pointer(&secs))); e != 0 {
		slog.Warn("set watchdog timeout; keeping the driver's", "err", e)
	}
	slog.Info("hardware watchdog armed", "path", path, "timeout_s", secs)
	return &watchdog{f: f}
}

// feed pets the watchdog every interval until ctx ends. After that, finish reboots within
// the watchdog timeout anyway, and a hang there is exactly what the watchdog is for.
func (w *watchdog) feed(ctx context.Context, every time.Duration) {
	if w.f == nil {
		return
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
		case <-t.C:
		}
	}
}

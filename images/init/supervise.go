//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// timing is how the supervisor paces restarts; tests shorten it.
type timing struct {
	backoffMin, backoffMax time.Duration
	// A run longer than healthyRun counts as good: the next failure starts the backoff afresh.
	healthyRun time.Duration
	// watchdog is what rackwatch is told (WATCHDOG_USEC); go-systemd pings at half that, and
	// a silence of this long after READY=1 gets it killed.
	watchdog    time.Duration
	stopTimeout time.Duration
	// startTimeout is how long the program may take to say READY=1 before it counts as hung:
	// the notify watchdog only covers it once it is ready.
	startTimeout time.Duration
}

var defaultTiming = timing{
	backoffMin: time.Second, backoffMax: 30 * time.Second, healthyRun: 60 * time.Second,
	watchdog: 30 * time.Second, stopTimeout: 20 * time.Second, startTimeout: 120 * time.Second,
}

// supervisor runs one program and restarts it when it exits. PID 1 reaps every process, so
// the program is started with ForkExec and its exit is delivered by reap, not by os/exec.
type supervisor struct {
	path   string
	argv   []string
	notify string
	dir    string // working folder and HOME
	timing timing
	logs   *logSink
	// env is added to the program's environment.
	env []string
	// restart is asked after each exit that ctx did not ask for; false stops the restarts
	// (on a slot on trial an exit means: reboot into the other slot). nil: always restart.
	restart func(ws syscall.WaitStatus) bool

	kill   chan struct{} // console "kill": SIGKILL the program
	exited chan syscall.WaitStatus

	mu       sync.Mutex
	pid      int
	ready    bool
	lastPing time.Time
	started  time.Time
	starts   int
}

func newSupervisor(path string, argv []string, notify string) *supervisor {
	return &supervisor{path: path, argv: argv, notify: notify, dir: dataMount, timing: defaultTiming,
		logs: newLogSink(os.Stderr, 4096),
		kill: make(chan struct{}, 1), exited: make(chan syscall.WaitStatus, 1)}
}

func (s *supervisor) currentPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// run starts the program and keeps it running until ctx ends, then stops it with SIGTERM
// (SIGKILL after stopTimeout) and returns.
func (s *supervisor) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// The log sink and the notify socket outlive ctx until the program has exited: its last
	// words (and its clean stop, which a write to a closed log pipe would cut short with
	// SIGPIPE) come after the SIGTERM.
	nctx, ncancel := context.WithCancel(context.Background())
	defer ncancel()
	wg.Add(1)
	go func() { defer wg.Done(); s.logs.run(nctx) }()
	if conn := s.listenNotify(); conn != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.readNotify(nctx, conn) }()
		go func() { <-nctx.Done(); conn.Close() }()
	}

	backoff := s.timing.backoffMin
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		started := time.Now()
		pid, err := s.start()
		if err != nil {
			slog.Error("start rackwatch", "err", err)
		} else {
			ws := s.wait(ctx, pid, check.C)
			if ctx.Err() != nil {
				return
			}
			if s.restart != nil && !s.restart(ws) {
				slog.Error("rackwatch exited; not restarting it", "pid", pid, "status", describe(ws))
				<-ctx.Done()
				return
			}
			slog.Error("rackwatch exited; restarting", "pid", pid, "status", describe(ws), "after", backoff)
		}
		if time.Since(started) > s.timing.healthyRun {
			backoff = s.timing.backoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.timing.backoffMax)
	}
}

func (s *supervisor) start() (int, error) {
	env := append(os.Environ(),
		"NOTIFY_SOCKET="+s.notify,
		"WATCHDOG_USEC="+itoa(s.timing.watchdog.Microseconds()),
		"HOME="+s.dir, "TZ=UTC",
		// /run is a tmpfs: the uplink's hold file (held telemetry, mqtt.queue_flush) lives
		// here, outliving a crash of rackwatch but costing the flash nothing.
		"RUNTIME_DIRECTORY="+filepath.Dir(s.notify))
	env = append(env, s.env...)
	// stdin is /dev/null: the console's input is for /init's commands.
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	out, err := s.logs.pipe()
	if err != nil {
		return 0, err
	}
	defer out.Close() // the child has its own copy
	// Hold the lock across the fork so that reap cannot see the exit of a pid not yet recorded.
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, err := syscall.ForkExec(s.path, s.argv, &syscall.ProcAttr{
		Dir:   s.dir,
		Env:   env,
		Files: []uintptr{null.Fd(), out.Fd(), out.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", s.path, err)
	}
	select { // a kill asked for during the backoff was for the previous run
	case <-s.kill:
	default:
	}
	s.pid, s.ready, s.lastPing, s.started = pid, false, time.Time{}, time.Now()
	s.starts++
	slog.Info("rackwatch started", "pid", pid, "start", s.starts)
	return pid, nil
}

// wait returns when the program exits. It kills it on a console request or when its
// watchdog pings stop, and stops it when ctx ends.
func (s *supervisor) wait(ctx context.Context, pid int, tick <-chan time.Time) syscall.WaitStatus {
	var aborted time.Time
	for {
		select {
		case ws := <-s.exited:
			s.mu.Lock()
			s.pid = 0
			s.mu.Unlock()
			return ws
		case <-s.kill:
			slog.Warn("console: killing rackwatch", "pid", pid)
			unix.Kill(pid, unix.SIGKILL)
		case <-tick:
			s.mu.Lock()
			overdue := s.ready && !s.lastPing.IsZero() && time.Since(s.lastPing) > s.timing.watchdog
			slow := !s.ready && s.timing.startTimeout > 0 && time.Since(s.started) > s.timing.startTimeout
			s.mu.Unlock()
			// SIGABRT: a goroutine dump on the console says where it hung. A program that
			// survives it for stopTimeout gets SIGKILL.
			switch {
			case !aborted.IsZero():
				if time.Since(aborted) > s.timing.stopTimeout {
					slog.Error("rackwatch survived SIGABRT: SIGKILL", "pid", pid)
					unix.Kill(pid, unix.SIGKILL)
				}
			case overdue:
				slog.Error("rackwatch stopped its watchdog pings: killing it", "pid", pid)
				unix.Kill(pid, unix.SIGABRT)
				aborted = time.Now()
			case slow:
				slog.Error("rackwatch did not say READY=1 in time: killing it", "pid", pid, "start_timeout", s.timing.startTimeout)
				unix.Kill(pid, unix.SIGABRT)
				aborted = time.Now()
			}
		case <-ctx.Done():
			unix.Kill(pid, unix.SIGTERM)
			select {
			case ws := <-s.exited:
				slog.Info("rackwatch stopped", "status", describe(ws))
				return ws
			case <-time.After(s.timing.stopTimeout):
				slog.Error("rackwatch ignored SIGTERM: killing it")
				unix.Kill(pid, unix.SIGKILL)
				return <-s.exited
			}
		}
	}
}

// exit is called by reap for every child that ends.
func (s *supervisor) exit(pid int, ws syscall.WaitStatus) {
	s.mu.Lock()
	mine := pid == s.pid
	s.mu.Unlock()
	if mine {
		s.exited <- ws
	}
}

func (s *supervisor) listenNotify() *net.UnixConn {
	os.MkdirAll(filepath.Dir(s.notify), 0o755)
	os.Remove(s.notify)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.notify, Net: "unixgram"})
	if err != nil {
		slog.Error("notify socket: rackwatch's watchdog pings will be ignored", "err", err)
		return nil
	}
	return conn
}

func (s *supervisor) readNotify(ctx context.Context, conn *net.UnixConn) {
	buf := make([]byte, 4096)
	for ctx.Err() == nil {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		msg := parseNotify(buf[:n])
		s.mu.Lock()
		if msg["READY"] == "1" && !s.ready {
			s.ready = true
			slog.Info("rackwatch is ready", "pid", s.pid)
		}
		if msg["WATCHDOG"] == "1" || msg["READY"] == "1" {
			s.lastPing = time.Now()
		}
		s.mu.Unlock()
		if st, ok := msg["STATUS"]; ok {
			slog.Info("rackwatch status", "status", st)
		}
	}
}

// parseNotify splits an sd_notify datagram ("READY=1\nSTATUS=...") into its assignments.
func parseNotify(b []byte) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// reap collects every child that exits until ctx ends: as PID 1 we inherit every orphan in
// the system. main never ends it: stopping rackwatch at shutdown needs its exit reaped.
func reap(ctx context.Context, s *supervisor) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			s.exit(pid, ws)
		}
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-time.After(time.Second): // a missed SIGCHLD costs at most a second
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	case ws.Exited():
		return "exit " + itoa(int64(ws.ExitStatus()))
	}
	return "status " + itoa(int64(ws))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

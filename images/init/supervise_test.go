//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// startSupervisor runs a supervisor over a real program, with reap, as main does, and
// stops it when the test ends. It returns the supervisor and a func that reports whether
// the program's current pid is alive.
func startSupervisor(t *testing.T, argv []string, tm timing) *supervisor {
	t.Helper()
	return startSupervisorOpts(t, argv, tm, nil)
}

func startSupervisorEnv(t *testing.T, argv, env []string) *supervisor {
	t.Helper()
	return startSupervisorOpts(t, argv, fast, env)
}

func startSupervisorOpts(t *testing.T, argv []string, tm timing, env []string) *supervisor {
	t.Helper()
	dir := t.TempDir()
	s := newSupervisor(argv[0], argv, filepath.Join(dir, "notify"))
	s.dir = dir
	s.timing = tm
	s.env = env
	ctx, cancel := context.WithCancel(context.Background())
	rctx, rcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); reap(rctx, s) }()
	done := make(chan struct{})
	go func() { defer wg.Done(); defer close(done); s.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("supervisor did not stop its program")
		}
		rcancel()
		wg.Wait()
	})
	return s
}

func (s *supervisor) startCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(int64(pid)) + "/stat")
	if err != nil {
		return false
	}
	// A reaped process is gone; a zombie (state Z) is dead but not yet reaped.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

var fast = timing{backoffMin: 50 * time.Millisecond, backoffMax: 200 * time.Millisecond,
	healthyRun: time.Minute, watchdog: 2 * time.Second, stopTimeout: 10 * time.Second}

func TestSupervisorRestartsAfterKill(t *testing.T) {
	sleep := testpeer.Require(t, "sleep", "coreutils")
	s := startSupervisor(t, []string{sleep, "1000"}, fast)
	testpeer.Eventually(t, 10*time.Second, "first start", func() bool { return s.currentPID() != 0 })
	first := s.currentPID()
	s.kill <- struct{}{}
	testpeer.Eventually(t, 10*time.Second, "a second start with a new pid", func() bool {
		p := s.currentPID()
		return s.startCount() == 2 && p != 0 && p != first
	})
	if alive(first) {
		t.Errorf("the killed pid %d is still there (or unreaped)", first)
	}
}

func TestSupervisorRestartsAfterExit(t *testing.T) {
	// A program that fails at once is restarted again and again, with backoff.
	s := startSupervisor(t, []string{"/bin/false"}, fast)
	testpeer.Eventually(t, 10*time.Second, "three starts", func() bool { return s.startCount() >= 3 })
}

func TestSupervisorStopsOnCancel(t *testing.T) {
	sleep := testpeer.Require(t, "sleep", "coreutils")
	var pid int
	t.Run("run", func(t *testing.T) {
		s := startSupervisor(t, []string{sleep, "1000"}, fast)
		testpeer.Eventually(t, 10*time.Second, "start", func() bool { return s.currentPID() != 0 })
		pid = s.currentPID()
	}) // its cleanup cancels the supervisor
	if alive(pid) {
		t.Fatalf("pid %d still runs after the supervisor stopped", pid)
	}
}

func notify(t *testing.T, s *supervisor, msg string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.notify, Net: "unixgram"})
	if err != nil {
		t.Fatalf("dial notify socket: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func TestSupervisorWatchdog(t *testing.T) {
	sleep := testpeer.Require(t, "sleep", "coreutils")
	// Pings every 300 ms against a 3 s watchdog: a loaded machine delays a goroutine by far
	// less than the 2.7 s slack.
	tm := fast
	tm.watchdog = 3 * time.Second
	s := startSupervisor(t, []string{sleep, "1000"}, tm)
	testpeer.Eventually(t, 10*time.Second, "start", func() bool { return s.currentPID() != 0 })
	first := s.currentPID()

	// Before READY=1 there is no watchdog: a slow start is not a hang.
	time.Sleep(3 * tm.watchdog / 2)
	if s.currentPID() != first {
		t.Fatal("killed before it said READY=1")
	}
	// Pings keep it alive past the interval...
	notify(t, s, "READY=1\nSTATUS=running")
	testpeer.Eventually(t, 10*time.Second, "ready", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ready
	})
	for end := time.Now().Add(3 * tm.watchdog / 2); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		notify(t, s, "WATCHDOG=1")
	}
	if s.currentPID() != first {
		t.Fatal("killed although it pinged")
	}
	// ...silence gets it killed and started again.
	testpeer.Eventually(t, 20*time.Second, "a restart after the pings stopped", func() bool {
		p := s.currentPID()
		return p != 0 && p != first
	})
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		t.Error("the new run inherited READY from the old one")
	}
}

// TestSupervisorStartTimeout: a program that never says READY=1 is killed after the start
// timeout and started again; the notify watchdog alone would wait for it forever.
func TestSupervisorStartTimeout(t *testing.T) {
	sleep := testpeer.Require(t, "sleep", "coreutils")
	tm := fast
	tm.startTimeout = time.Second
	s := startSupervisor(t, []string{sleep, "1000"}, tm)
	testpeer.Eventually(t, 10*time.Second, "start", func() bool { return s.currentPID() != 0 })
	first := s.currentPID()
	testpeer.Eventually(t, 30*time.Second, "a restart after the start timeout", func() bool {
		p := s.currentPID()
		return p != 0 && p != first
	})
	if alive(first) {
		t.Errorf("the hung pid %d is still there", first)
	}
}

// TestSupervisorReadyBeatsStartTimeout: READY=1 in time, then pings: no kill, however long
// the run.
func TestSupervisorReadyBeatsStartTimeout(t *testing.T) {
	sleep := testpeer.Require(t, "sleep", "coreutils")
	tm := fast
	tm.startTimeout = 2 * time.Second
	tm.watchdog = 3 * time.Second
	s := startSupervisor(t, []string{sleep, "1000"}, tm)
	testpeer.Eventually(t, 10*time.Second, "start", func() bool { return s.currentPID() != 0 })
	first := s.currentPID()
	notify(t, s, "READY=1")
	for end := time.Now().Add(2 * tm.startTimeout); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		notify(t, s, "WATCHDOG=1")
	}
	if s.currentPID() != first || s.startCount() != 1 {
		t.Fatal("killed after READY=1 by the start timeout")
	}
}

// TestSupervisorNoRestart: when the restart hook says no (a slot on trial), an exit is not
// followed by a new start.
func TestSupervisorNoRestart(t *testing.T) {
	var calls atomic.Int32
	starts := make(chan int, 10)
	tm := fast
	dir := t.TempDir()
	s := newSupervisor("/bin/false", []string{"/bin/false"}, filepath.Join(dir, "notify"))
	s.dir, s.timing = dir, tm
	s.restart = func(ws syscall.WaitStatus) bool {
		calls.Add(1)
		starts <- s.startCount()
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go reap(rctx, s)
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	select {
	case n := <-starts:
		if n != 1 {
			t.Errorf("%d starts before the hook, want 1", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the restart hook was not called after the program exited")
	}
	// run now only waits for ctx: it must return when told, having started nothing more.
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the supervisor did not return")
	}
	if s.startCount() != 1 || calls.Load() != 1 {
		t.Errorf("%d starts, %d hook calls; want 1 and 1", s.startCount(), calls.Load())
	}
}

// TestSupervisorEnv: rackwatch gets the slot and the boot folder in its environment.
func TestSupervisorEnv(t *testing.T) {
	sh := testpeer.Require(t, "sh", "dash")
	s := startSupervisorEnv(t, []string{sh, "-c", `echo "$RACKWATCH_SLOT $RACKWATCH_BOOT_DIR" > "$HOME/env.tmp" && mv "$HOME/env.tmp" "$HOME/env"; exec sleep 1000`},
		[]string{"RACKWATCH_SLOT=b", "RACKWATCH_BOOT_DIR=/boot"})
	var got []byte
	testpeer.Eventually(t, 10*time.Second, "the program writing its environment", func() bool {
		got, _ = os.ReadFile(filepath.Join(s.dir, "env"))
		return len(got) > 0
	})
	if string(got) != "b /boot\n" {
		t.Errorf("environment: %q", got)
	}
}

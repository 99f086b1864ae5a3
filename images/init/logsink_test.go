//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func TestChildOutputReachesConsole(t *testing.T) {
	sh := testpeer.Require(t, "sh", "dash")
	var out testpeer.Buffer
	dir := t.TempDir()
	s := newSupervisor(sh, []string{"sh", "-c", "echo to-stdout; echo to-stderr >&2; read x || echo stdin-is-empty; exec sleep 1000"}, dir+"/notify")
	s.dir = dir
	s.timing = fast
	s.logs = newLogSink(&out, 100)
	ctx, cancel := context.WithCancel(context.Background())
	rctx, rcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); reap(rctx, s) }()
	go func() { defer wg.Done(); s.run(ctx); rcancel() }()
	defer wg.Wait()
	defer cancel()
	testpeer.Eventually(t, 10*time.Second, "the child's stdout, stderr and an empty stdin on the console", func() bool {
		o := out.String()
		return strings.Contains(o, "to-stdout\n") && strings.Contains(o, "to-stderr\n") && strings.Contains(o, "stdin-is-empty\n")
	})
}

// blockingWriter stands for a console slower than the logs: it blocks until released.
type blockingWriter struct {
	release chan struct{}
	buf     testpeer.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.buf.Write(p)
}

func TestSlowConsoleDropsLinesNotTime(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	l := newLogSink(w, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()

	start := time.Now()
	for i := 0; i < 100; i++ {
		l.put([]byte(fmt.Sprintf("line %d\n", i)))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("putting 100 lines on a stuck console took %v", d)
	}
	if l.dropped.Load() == 0 {
		t.Fatal("nothing dropped although the console is stuck")
	}
	close(w.release)
	testpeer.Eventually(t, 10*time.Second, "the queue drained", func() bool { return len(l.lines) == 0 })
	l.put([]byte("after\n"))
	testpeer.Eventually(t, 10*time.Second, "the drop notice and the next line", func() bool {
		o := w.buf.String()
		return strings.Contains(o, "lines of rackwatch's log dropped") && strings.Contains(o, "after\n")
	})
	cancel()
	<-done
}

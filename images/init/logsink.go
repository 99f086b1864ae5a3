//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// logSink carries rackwatch's output to the console. A serial console at 115200 baud takes
// about 11 KB/s; written to directly, a burst of logs would block rackwatch in write(2) and
// stall its alarms. Through the sink a slow console costs log lines (counted and reported),
// never time.
type logSink struct {
	out     io.Writer
	lines   chan []byte
	dropped atomic.Int64

	mu      sync.Mutex
	readers map[*os.File]bool
	copiers sync.WaitGroup
}

func newLogSink(out io.Writer, capacity int) *logSink {
	return &logSink{out: out, lines: make(chan []byte, capacity), readers: map[*os.File]bool{}}
}

// run writes lines to out until ctx ends, then closes the pipes still open (a grandchild may
// hold one) and waits for their copiers.
func (l *logSink) run(ctx context.Context) {
	defer func() {
		l.mu.Lock()
		for r := range l.readers {
			r.Close()
		}
		l.mu.Unlock()
		l.copiers.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			// Drain what is already queued: the last words of a stopping rackwatch matter.
			for {
				select {
				case b := <-l.lines:
					l.out.Write(b)
				default:
					return
				}
			}
		case b := <-l.lines:
			if n := l.dropped.Swap(0); n > 0 {
				fmt.Fprintf(l.out, "init: %d lines of rackwatch's log dropped: the console is too slow\n", n)
			}
			l.out.Write(b)
		}
	}
}

// pipe returns the write end to give a child as stdout and stderr; the read end is copied to
// the console line by line until the child (and any process that inherited it) closes it.
func (l *logSink) pipe() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("log pipe: %w", err)
	}
	l.mu.Lock()
	l.readers[r] = true
	l.mu.Unlock()
	l.copiers.Add(1)
	go func() {
		defer l.copiers.Done()
		defer func() {
			l.mu.Lock()
			delete(l.readers, r)
			l.mu.Unlock()
			r.Close()
		}()
		br := bufio.NewReaderSize(r, 16<<10)
		for {
			b, err := br.ReadSlice('\n')
			if len(b) > 0 {
				l.put(append([]byte(nil), b...))
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()
	return w, nil
}

func (l *logSink) put(b []byte) {
	select {
	case l.lines <- b:
	default:
		l.dropped.Add(1)
	}
}

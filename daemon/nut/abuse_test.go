package nut_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// watchdog is a well-behaved second client that keeps asking while the test abuses the
// server, and fails the test if an answer is wrong or takes more than 5 s.
type watchdog struct {
	answers atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func startWatchdog(t *testing.T, addr string) *watchdog {
	t.Helper()
	c := dial(t, addr)
	w := &watchdog{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			c.c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c.c, "GET VAR ups1 ups.load\n"); err != nil {
				t.Errorf("watchdog client: send: %v", err)
				return
			}
			l, err := c.r.ReadString('\n')
			if err != nil || l != "VAR ups1 ups.load \"14\"\n" {
				t.Errorf("watchdog client: answer %q, %v", l, err)
				return
			}
			w.answers.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(w.halt)
	return w
}

// sawAnswers waits until the watchdog got n more answers than it had.
func (w *watchdog) sawAnswers(t *testing.T, n int64, during string) {
	t.Helper()
	base := w.answers.Load()
	testpeer.Eventually(t, 15*time.Second, "the other client to get answers "+during, func() bool {
		return w.answers.Load() >= base+n
	})
}

func (w *watchdog) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func TestGarbageAndUnknownCommands(t *testing.T) {
	addr, _ := start(t, nut.Config{}, newSource())
	w := startWatchdog(t, addr)
	c := dial(t, addr)
	for _, line := range []string{
		"\x00\x01\x02\x03",
		"\xff\xfe\xfd GET VAR",
		`"""`,
		`GET VAR "ups1`,
		`LIST VAR ups1 \`,
		`"#"`,
		"FROBNICATE ups1",
		"GET VAR ups1 ups.status extra words are ignored by upsd " + strings.Repeat("x ", 100),
		"\x1b[2J\x1b[H",
		"SELECT * FROM ups;",
		"LIST",
		strings.Repeat("\"", 500),
	} {
		c.send(line)
		got := c.readLine()
		if !strings.HasPrefix(got, "ERR ") && !strings.HasPrefix(got, "VAR ups1 ups.status") {
			t.Errorf("%q: answer %q, want ERR", line, got)
		}
	}
	for range 200 {
		c.send("NOPE")
	}
	for range 200 {
		if got := c.readLine(); got != "ERR UNKNOWN-COMMAND" {
			t.Fatalf("unknown command: %q", got)
		}
	}
	if got := c.ask("VER"); !strings.HasPrefix(got, "Network UPS Tools upsd") {
		t.Errorf("after the garbage, VER = %q", got)
	}
	w.sawAnswers(t, 3, "after the garbage")
}

// A 10 MB line is never buffered: the server answers ERR after MaxLineLength bytes and hangs
// up, and another client is served all along.
func TestHugeLine(t *testing.T) {
	addr, _ := start(t, nut.Config{}, newSource())
	w := startWatchdog(t, addr)
	c := dial(t, addr)
	sent := make(chan error, 1)
	go func() {
		c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		line := append(bytes.Repeat([]byte("A"), 10<<20), '\n')
		_, err := c.c.Write(line)
		sent <- err
	}()
	if got := c.readLine(); got != "ERR INVALID-ARGUMENT" {
		t.Errorf("10 MB line: answer %q, want ERR INVALID-ARGUMENT", got)
	}
	if got := c.readLine(); got != "EOF" {
		t.Errorf("10 MB line: then %q, want the connection closed", got)
	}
	// The writer is stopped by the close (reset or broken pipe), never by having sent it all
	// into a server that buffered it.
	select {
	case err := <-sent:
		if err == nil {
			t.Log("the kernel buffered the whole 10 MB line; the server still closed after its limit")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the 10 MB writer is still blocked 30 s after the server closed")
	}
	w.sawAnswers(t, 3, "after the huge line")

	// A line of exactly the limit is still fine; one byte more is not.
	addr2, _ := start(t, nut.Config{MaxLineLength: 100}, newSource())
	ok := dial(t, addr2)
	req := "GET VAR ups1 ups.status"
	if got := ok.ask(req + strings.Repeat(" ", 99-len(req))); got != `VAR ups1 ups.status "OL"` {
		t.Errorf("100-byte line: %q", got)
	}
	long := dial(t, addr2)
	if got := long.ask(req + strings.Repeat(" ", 100-len(req))); got != "ERR INVALID-ARGUMENT" {
		t.Errorf("101-byte line: %q", got)
	}
}

// Half-open and silent connections, and a client that never reads its answers, stall nobody
// else, and are closed by the idle timeout (or the write timeout).
func TestSlowAndHalfOpenClients(t *testing.T) {
	addr, _ := start(t, nut.Config{IdleTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}, newSource())
	w := startWatchdog(t, addr)

	var silent []*client
	for i := range 5 {
		c := dial(t, addr)
		if i%2 == 0 {
			io.WriteString(c.c, "GET VAR ups1 ups.sta") // half a request, never finished
		}
		silent = append(silent, c)
	}
	// A client that writes requests as fast as it can and never reads: the server's writes
	// to it block once the socket buffers are full.
	greedy := dial(t, addr)
	greedyDone := make(chan struct{})
	go func() {
		defer close(greedyDone)
		req := []byte(strings.Repeat("LIST VAR ups1\n", 1000))
		greedy.c.SetWriteDeadline(time.Now().Add(40 * time.Second))
		for {
			if _, err := greedy.c.Write(req); err != nil {
				return
			}
		}
	}()
	w.sawAnswers(t, 20, "while others are silent, half-open or not reading")

	for i, c := range silent {
		c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.r.ReadString('\n'); !errors.Is(err, io.EOF) {
			t.Errorf("silent client %d: %v, want closed by the idle timeout", i, err)
		}
	}
	select {
	case <-greedyDone:
	case <-time.After(40 * time.Second):
		t.Error("the client that never reads was never cut off")
	}
	w.sawAnswers(t, 3, "at the end")
}

// TestConnectionCap: one address gets at most its share, all addresses together at most
// max_connections; more are closed at once, and a client that leaves gives its place back.
func TestConnectionCap(t *testing.T) {
	addr, _ := start(t, nut.Config{MaxConnections: 3, MaxConnsPerAddr: 2}, newSource())
	var cs []*client
	for _, src := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		c := dialFrom(t, src, addr)
		if got := c.ask("NETVER"); got != "1.3" {
			t.Fatalf("NETVER from %s = %q", src, got)
		}
		cs = append(cs, c)
	}
	if !refused(t, "127.0.0.1", addr) {
		t.Errorf("3rd connection from one address of 2 allowed")
	}
	if !refused(t, "127.0.0.3", addr) {
		t.Errorf("4th connection of 3 allowed")
	}
	cs[0].c.Close()
	testpeer.Eventually(t, 10*time.Second, "a free slot after one client left", func() bool {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "NETVER\n")
		b := make([]byte, 4)
		n, _ := io.ReadFull(c, b)
		return string(b[:n]) == "1.3\n"
	})
	if got := cs[1].ask("NETVER"); got != "1.3" {
		t.Errorf("an admitted client after the cap: %q", got)
	}
}

// Serve returns once its context ends, closing every client, even silent ones.
func TestServeStops(t *testing.T) {
	srv, err := nut.New(nut.Config{Users: testUsers}, newSource(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() { defer wg.Done(); serr = srv.Serve(ctx, l) }()
	c := dial(t, l.Addr().String())
	for _, line := range []string{"USERNAME monuser", "PASSWORD secret", "LOGIN ups1"} {
		if got := c.ask(line); got != "OK" {
			t.Fatalf("%s: %q", line, got)
		}
	}
	if cl := srv.Clients(); len(cl) != 1 || cl[0].UPS != "ups1" || cl[0].User != "monuser" || cl[0].Addr != "127.0.0.1" {
		t.Errorf("Clients() = %+v", cl)
	}
	silent := dial(t, l.Addr().String())
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Serve still running 20 s after its context ended")
	}
	if serr != nil {
		t.Errorf("Serve: %v", serr)
	}
	if got := silent.readLine(); got != "EOF" {
		t.Errorf("after Serve returned, a client read %q", got)
	}
	if cl := srv.Clients(); len(cl) != 0 {
		t.Errorf("after Serve returned, Clients() = %+v", cl)
	}
}

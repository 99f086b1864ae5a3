package nut_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// source is the test's site: a few UPSes whose variables the test changes as it goes.
type source struct {
	mu    sync.Mutex
	order []string
	ups   map[string]nut.UPS
	fsd   map[string]bool
	ran   []string // instant commands run, "ups cmd arg"
}

func newSource() *source {
	return &source{
		order: []string{"ups1", "ups2", "ups3"},
		ups: map[string]nut.UPS{
			"ups1": {
				Description: `Rack 12 "A" feed #1`,
				Vars: map[string]string{
					"ups.status":      "OL",
					"battery.charge":  "100",
					"battery.runtime": "1800",
					"battery.voltage": "2.27",
					"input.voltage":   "215.0",
					"input.frequency": "49.0",
					"output.voltage":  "230.0",
					"ups.load":        "14",
					"ups.temperature": "30.0",
					"ups.type":        "online",
					"ups.mfr":         `ACME "Power" \ Co`,
				},
				Commands: []string{"beeper.toggle", "load.off", "test.battery.start"},
			},
			"ups2": {Vars: map[string]string{"ups.status": "OB"}, Stale: true},
			"ups3": {Vars: map[string]string{"ups.status": "OL"}, Disconnected: true},
		},
		fsd: map[string]bool{},
	}
}

func (s *source) UPSNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

func (s *source) UPS(name string) (nut.UPS, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.ups[name]
	if !ok {
		return nut.UPS{}, false
	}
	vars := make(map[string]string, len(u.Vars))
	for k, v := range u.Vars {
		vars[k] = v
	}
	if s.fsd[name] {
		vars["ups.status"] = "FSD " + vars["ups.status"]
	}
	u.Vars = vars
	return u, true
}

func (s *source) InstCmd(_ context.Context, name, cmd, arg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cmd == "beeper.toggle" {
		return fmt.Errorf("the UPS did not answer")
	}
	s.ran = append(s.ran, strings.TrimSpace(name+" "+cmd+" "+arg))
	return nil
}

func (s *source) SetFSD(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fsd[name] = true
	return nil
}

// set changes one variable of one UPS.
func (s *source) set(name, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ups[name].Vars[key] = value
}

func (s *source) setStale(name string, stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.ups[name]
	u.Stale = stale
	s.ups[name] = u
}

var testUsers = []nut.User{
	{Name: "monuser", Password: "secret", Upsmon: "secondary"},
	{Name: "admin", Password: "adm1n", Upsmon: "primary", Instcmds: []string{"test.battery.start", "beeper.toggle"}, Actions: []string{"SET"}},
	{Name: "viewer", Password: "v", Upsmon: "none"},
}

// logWriter sends the server's log to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// start runs a server on a free loopback port until the test ends and returns its address.
func start(t testing.TB, cfg nut.Config, src nut.Source) (string, *nut.Server) {
	t.Helper()
	if cfg.Users == nil {
		cfg.Users = testUsers
	}
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := nut.New(cfg, src, log)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return 20 s after its context ended")
		}
	})
	return l.Addr().String(), srv
}

// client is a raw protocol client.
type client struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// dialFrom dials addr from the loopback address src (testpeer.DialFrom) as a client.
func dialFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	c, err := testpeer.DialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// refused reports whether a connection from src is closed by the server before it answers
// NETVER. A connection refused at once may already fail at the dial, with a reset.
func refused(t testing.TB, src, addr string) bool {
	t.Helper()
	c, err := testpeer.DialFrom(src, addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "NETVER\n") // may fail on a reset connection; the read tells
	l, err := bufio.NewReader(c).ReadString('\n')
	if err == nil {
		return false
	}
	if err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return l == ""
	}
	t.Fatalf("read from %s: %v", src, err)
	return false
}

func (c *client) send(line string) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// readLine returns the next line without its newline, or "EOF" when the server closed.
func (c *client) readLine() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	l, err := c.r.ReadString('\n')
	if (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) && l == "" {
		return "EOF" // closed, gracefully or not
	}
	if err != nil {
		c.t.Fatalf("read: %v (after %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// ask sends a request and returns the first line of the answer.
func (c *client) ask(line string) string {
	c.t.Helper()
	c.send(line)
	return c.readLine()
}

package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tarm/serial"
)

// session runs the command with a stdin the test writes to, and returns the first stdout
// line (the address or pty), a way to send a command and read its answer, and a wait.
type session struct {
	in    *io.PipeWriter
	lines chan string
	done  chan error
}

func start(t *testing.T, listen, dial string) (*session, string) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{in: inW, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		err := run(listen, dial, inR, outW)
		outW.Close()
		s.done <- err
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		inW.Close()
		wg.Wait()
	})
	return s, s.next(t)
}

func (s *session) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-s.lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output")
	}
	return ""
}

func (s *session) say(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := io.WriteString(s.in, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	return s.next(t)
}

func (s *session) quit(t *testing.T) {
	t.Helper()
	io.WriteString(s.in, "quit\n")
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("quit did not stop it")
	}
}

func query(t *testing.T, rw io.ReadWriter, cmd string) string {
	t.Helper()
	if _, err := io.WriteString(rw, cmd+"\r"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, _ := rw.Read(buf)
		got = append(got, buf[:n]...)
		if strings.Contains(string(got), "\r") {
			break
		}
	}
	return string(got)
}

func TestPty(t *testing.T) {
	s, path := start(t, "", "")
	if !strings.HasPrefix(path, "/dev/pts/") {
		t.Fatalf("first line %q", path)
	}
	p, err := serial.OpenPort(&serial.Config{Name: path, Baud: 2400, ReadTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, step := range []struct{ cmd, bits string }{
		{"ob", "10001001"}, {"lb", "11001001"}, {"nolb", "10001001"}, {"ol", "00001001"}, {"status 00100000", "00100000"},
	} {
		if got := s.say(t, step.cmd); got != "ok" {
			t.Fatalf("%s: %q", step.cmd, got)
		}
		if got := query(t, p, "Q1"); !strings.HasSuffix(got, " "+step.bits+"\r") {
			t.Fatalf("after %s: %q", step.cmd, got)
		}
	}
	s.say(t, "input 199.5")
	s.say(t, "fault nak")
	if got := query(t, p, "Q1"); got != "NAK\r" {
		t.Fatalf("fault nak: %q", got)
	}
	s.say(t, "fault none")
	s.say(t, "fault echo F")
	if got := query(t, p, "F"); got != "F\r" {
		t.Fatalf("fault echo F: %q", got)
	}
	if got := query(t, p, "Q1"); !strings.HasPrefix(got, "(199.5 ") {
		t.Fatalf("input 199.5: %q", got)
	}
	for _, bad := range []string{"status 2", "fault loud", "input x", "dance"} {
		if got := s.say(t, bad); !strings.HasPrefix(got, "error:") {
			t.Errorf("%q: %q", bad, got)
		}
	}
	s.quit(t)
}

func TestUnixListen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ups.sock")
	s, addr := start(t, "unix:"+sock, "")
	if addr != "unix:"+sock {
		t.Fatalf("first line %q", addr)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.say(t, "ob")
	if got := query(t, c, "Q1"); !strings.HasSuffix(got, " 10001001\r") {
		t.Fatalf("Q1: %q", got)
	}
	s.quit(t)
}

// TestDial: QEMU's chardev as the server (server=on); upsemu connects and answers.
func TestDial(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qemu.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, _ := start(t, "", "unix:"+sock)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := query(t, c, "I"); !strings.HasPrefix(got, "#RACKWATCH") {
		t.Fatalf("I: %q", got)
	}
	s.quit(t)
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
}

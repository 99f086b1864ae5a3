// Package testpeer starts the real peers that integration tests talk to (mosquitto, snmpsimd,
// NUT's upsd, Chromium) on loopback ports, and decides what happens when one is missing: with
// CI=true the test fails, because a CI run that silently skips its integration tests proves
// nothing; locally it skips with a loud message naming the Debian package to install.
package testpeer

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Require returns the path of a peer program, or stops the test: Fatal under CI=true, Skip
// otherwise. pkg is the Debian package that provides it.
func Require(t testing.TB, program, pkg string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/sbin/", "/lib/nut/", "/usr/lib/nut/"} {
		name := program
		if dir != "" {
			name = dir + filepath.Base(program)
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, fmt.Sprintf("\n*** %s not found: install the Debian package %q (make test does) ***\n", program, pkg))
	return ""
}

// RequireFile returns path, or stops the test as Require does when that file is missing. pkg
// is the Debian package that provides it.
func RequireFile(t testing.TB, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, fmt.Sprintf("\n*** %s not found: install the Debian package %q (make test does) ***\n", path, pkg))
	}
	return path
}

// Missing stops a test that cannot run here because a peer (a program, a file, a privilege)
// is missing: Fatal under CI=true, Skip otherwise. Every such skip goes through here.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// WaitTCP waits until something accepts connections on addr, or fails the test.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %v: %v", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eventually polls cond every 50ms until it returns true or within passes. Tests wait on
// conditions with generous deadlines, never on fixed sleeps: the machines are shared and noisy.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Buffer is a bytes.Buffer safe for concurrent use: a process's output, a logger's target,
// written on one goroutine and read by the test on another.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Proc is a peer process whose output is kept for the test log.
type Proc struct {
	Cmd *exec.Cmd
	out Buffer
}

func (p *Proc) Write(b []byte) (int, error) { return p.out.Write(b) }

// Output is what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Stop ends the process (SIGTERM, then SIGKILL) and waits for it.
func (p *Proc) Stop() {
	if p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return
	}
	p.Cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.Cmd.Process.Kill()
		<-done
	}
}

// Start runs a peer in the background; it is stopped when the test ends, and its output is
// logged if the test failed.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, nil, name, args...)
}

// StartEnv is Start with extra environment variables.
func StartEnv(t testing.TB, env []string, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(name, args...)}
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	p.Cmd.Env = append(os.Environ(), env...)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.Output())
		}
	})
	return p
}

// Mosquitto is a running mosquitto broker.
type Mosquitto struct {
	Port int
	Addr string // host:port
	URL  string // tcp://host:port
	Dir  string
	conf string
	bin  string
	t    testing.TB
	Proc *Proc
}

// StartMosquitto runs a private mosquitto on a free loopback port, with persistence in a
// temporary folder so that a restart keeps sessions (Restart). extra lines go into its config.
func StartMosquitto(t testing.TB, extra ...string) *Mosquitto {
	t.Helper()
	bin := Require(t, "mosquitto", "mosquitto")
	m := &Mosquitto{Port: FreePort(t), Dir: t.TempDir(), bin: bin, t: t}
	m.Addr = fmt.Sprintf("127.0.0.1:%d", m.Port)
	m.URL = "tcp://" + m.Addr
	m.conf = filepath.Join(m.Dir, "mosquitto.conf")
	// As root, mosquitto drops to its own user, which cannot write the test's 0700 folder:
	// the store would not survive a restart. "user root" keeps it.
	user := rootUser()
	for _, e := range extra {
		if strings.HasPrefix(e, "user ") {
			user = ""
		}
	}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nmax_queued_messages 0\n%s",
		m.Port, m.Dir, user)
	if len(extra) > 0 {
		// Extra lines may replace the listener (TLS); put them first and drop ours if so.
		if strings.Contains(strings.Join(extra, "\n"), "listener ") {
			conf = fmt.Sprintf("allow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nmax_queued_messages 0\n%s", m.Dir, user)
		}
		conf += strings.Join(extra, "\n") + "\n"
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.start()
	return m
}

func rootUser() string {
	if os.Geteuid() == 0 {
		return "user root\n"
	}
	return ""
}

func (m *Mosquitto) start() {
	m.t.Helper()
	m.Proc = Start(m.t, m.bin, "-c", m.conf)
	WaitTCP(m.t, m.Addr, 20*time.Second)
}

// Stop stops the broker; Start starts it again on the same port with the same store.
func (m *Mosquitto) Stop()  { m.Proc.Stop() }
func (m *Mosquitto) Start() { m.start() }

// Sub is an MQTT subscriber collecting messages as "topic payload" lines.
type Sub struct {
	c     mqtt.Client
	mu    sync.Mutex
	lines []string
}

// Subscribe subscribes to topic at QoS 1 (a persistent session with id when id is not
// empty) and returns once the broker has confirmed the subscription, so no message published
// after it is missed. The client is paho, not mosquitto_sub, because only a SUBACK says when
// the subscription is in place.
func (m *Mosquitto) Subscribe(t testing.TB, topic, id string) *Sub {
	t.Helper()
	s := &Sub{}
	o := mqtt.NewClientOptions().AddBroker(m.URL).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second)
	if id != "" {
		o.SetClientID(id).SetCleanSession(false)
	} else {
		o.SetClientID(fmt.Sprintf("testsub-%d", time.Now().UnixNano()))
	}
	handler := func(_ mqtt.Client, msg mqtt.Message) {
		s.mu.Lock()
		s.lines = append(s.lines, msg.Topic()+" "+string(msg.Payload()))
		s.mu.Unlock()
	}
	o.SetDefaultPublishHandler(handler)
	// Resubscribe after a broker restart (a persistent session keeps it anyway).
	o.SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe(topic, 1, handler) })
	s.c = mqtt.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: connect %s: %v", m.URL, tok.Error())
	}
	if tok := s.c.Subscribe(topic, 1, handler); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: subscribe %s: %v", topic, tok.Error())
	}
	t.Cleanup(s.Stop)
	return s
}

// Lines returns the messages so far as "topic payload".
func (s *Sub) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Matching returns the payloads of messages whose topic ends with suffix and whose payload
// contains every one of the strings in has.
func (s *Sub) Matching(suffix string, has ...string) []string {
	var out []string
	for _, l := range s.Lines() {
		topic, payload, _ := strings.Cut(l, " ")
		if !strings.HasSuffix(topic, suffix) {
			continue
		}
		if ContainsAll(payload, has...) {
			out = append(out, payload)
		}
	}
	return out
}

// ContainsAll reports whether s contains every one of has.
func ContainsAll(s string, has ...string) bool {
	for _, h := range has {
		if !strings.Contains(s, h) {
			return false
		}
	}
	return true
}

// Stop ends the subscriber.
func (s *Sub) Stop() {
	if s.c.IsConnected() {
		s.c.Disconnect(100)
	}
}

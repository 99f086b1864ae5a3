package upsemu

import (
	"bufio"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tarm/serial"
)

// ask opens the emulator's tty as a serial port, as a driver would, and returns the reply
// to cmd (up to CR), or "" after the timeout.
func ask(t *testing.T, port *serial.Port, cmd string) string {
	t.Helper()
	if _, err := port.Write([]byte(cmd + "\r")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _ := port.Read(buf)
		got = append(got, buf[:n]...)
		if i := strings.IndexByte(string(got), '\r'); i >= 0 {
			return string(got[:i+1])
		}
	}
	return string(got)
}

func open(t *testing.T, e *Emulator) *serial.Port {
	t.Helper()
	p, err := serial.OpenPort(&serial.Config{Name: e.Path(), Baud: 2400, ReadTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAnswersOnPty(t *testing.T) {
	e := StartT(t)
	if !strings.HasPrefix(e.Path(), "/dev/pts/") {
		t.Fatalf("path %q", e.Path())
	}
	p := open(t, e)
	tests := []struct{ cmd, want string }{
		{"Q1", "(230.0 230.0 230.0 025 50.0 27.0 30.0 00001001\r"},
		{"F", "#230.0 004 24.00 50.0\r"},
		{"I", "#RACKWATCH       EMU-1000   V1.00     \r"},
		{"QGS", "QGS\r"}, // unknown: echoed
	}
	for _, tc := range tests {
		if got := ask(t, p, tc.cmd); got != tc.want {
			t.Errorf("%s -> %q, want %q", tc.cmd, got, tc.want)
		}
	}
	if n := len(FormatI(Defaults)); n != 39 {
		t.Errorf("I reply is %d bytes, nutdrv_qx wants 39", n)
	}
	if n := len(e.Q1Frame()); n != 47 {
		t.Errorf("Q1 reply is %d bytes, nutdrv_qx wants 47", n)
	}

	e.SetOnBattery(true)
	e.SetLowBattery(true)
	e.Update(func(f *Fields) { f.InputVoltage = 0; f.Frequency = 0; f.BatteryVoltage = 2.05; f.TemperatureNA = true })
	if got, want := ask(t, p, "Q1"), "(000.0 230.0 230.0 025 00.0 2.05 --.- 11001001\r"; got != want {
		t.Errorf("Q1 -> %q, want %q", got, want)
	}
	e.SetOnBattery(false)
	e.SetLowBattery(false)
	if st := e.Fields().Status; st != Standby|BeeperOn {
		t.Errorf("status %08b", st)
	}
	if q := e.Queries(); q != 2 {
		t.Errorf("Queries() = %d, want 2", q)
	}
}

func TestInstantCommands(t *testing.T) {
	e := StartT(t)
	p := open(t, e)
	steps := []struct {
		cmd  string
		want Status
	}{
		{"Q", Standby},
		{"Q", Standby | BeeperOn},
		{"T", Standby | BeeperOn | TestInProgress},
		{"CT", Standby | BeeperOn},
		{"TL", Standby | BeeperOn | TestInProgress},
		{"CT", Standby | BeeperOn},
		{"T10", Standby | BeeperOn | TestInProgress},
		{"CT", Standby | BeeperOn},
		{"S.5R0003", Standby | BeeperOn | ShutdownActive},
		{"C", Standby | BeeperOn},
		{"S00R0000", Standby | BeeperOn | ShutdownActive}, // load.off: at once, stay off
		{"C", Standby | BeeperOn},
	}
	for _, s := range steps {
		if _, err := p.Write([]byte(s.cmd + "\r")); err != nil {
			t.Fatal(err)
		}
		// A command has no reply; the next Q1 shows its effect, in order.
		got := ask(t, p, "Q1")
		if !strings.HasSuffix(got, FormatQ1(Fields{Status: s.want})[39:]) {
			t.Errorf("after %s: %q, want status %08b", s.cmd, got, s.want)
		}
	}
	rec := e.Received()
	if len(rec) != 2*len(steps) || rec[0] != "Q" || rec[1] != "Q1" {
		t.Errorf("Received() = %q", rec)
	}
}

func TestFaults(t *testing.T) {
	e := StartT(t)
	p := open(t, e)
	tests := []struct {
		fault Fault
		want  string
	}{
		{FaultSilent, ""},
		{FaultEcho, "Q1\r"},
		{FaultNAK, "NAK\r"},
		{FaultTruncated, "(230.0 230.0 230.0 0\r"},
		{FaultNoCR, "(230.0 230.0 230.0 025 50.0 27.0 30.0 00001001"},
		{FaultGarbage, "(2#9.?\xff\xfe garbage !!\r"},
		{FaultNone, "(230.0 230.0 230.0 025 50.0 27.0 30.0 00001001\r"},
	}
	for _, tc := range tests {
		e.SetFault(tc.fault)
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := ask(t, p, "Q1"); got != tc.want {
			t.Errorf("fault %d: %q, want %q", tc.fault, got, tc.want)
		}
	}
	for name, f := range faultNames {
		if g, err := ParseFault(strings.ToUpper(name)); err != nil || g != f {
			t.Errorf("ParseFault(%q) = %v, %v", name, g, err)
		}
	}
	if _, err := ParseFault("loud"); err == nil {
		t.Error("ParseFault(loud): no error")
	}
}

// TestReopen: a driver that closes and reopens the port (after errors) finds the emulator
// still answering.
func TestReopen(t *testing.T) {
	e := StartT(t)
	for i := 0; i < 3; i++ {
		p, err := serial.OpenPort(&serial.Config{Name: e.Path(), Baud: 2400, ReadTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if got := ask(t, p, "Q1"); !strings.HasPrefix(got, "(230.0") {
			t.Errorf("open %d: %q", i, got)
		}
		p.Close()
	}
}

func TestCloseIsPrompt(t *testing.T) {
	e, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	path := e.Path()
	done := make(chan error, 1)
	go func() { done <- e.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := os.Stat(path); err == nil {
		// The pts node goes away with the last descriptor; it may linger briefly.
		t.Logf("%s still listed after Close", path)
	}
}

// TestServeSocket: the same emulator answers on a socket (QEMU's chardev), and stops
// when its context ends.
func TestServeSocket(t *testing.T) {
	e := New()
	a, b := net.Pipe()
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var serveErr error
	go func() { defer wg.Done(); serveErr = e.Serve(ctx, b) }()
	if _, err := a.Write([]byte("I\r")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(a).ReadString('\r')
	if err != nil || line != FormatI(Defaults) {
		t.Fatalf("I -> %q, %v", line, err)
	}
	cancel()
	wg.Wait()
	if serveErr != nil {
		t.Fatalf("Serve: %v", serveErr)
	}
}

// TestAddPTY: a second line answers from the same fields.
func TestAddPTY(t *testing.T) {
	e := StartT(t)
	path2, err := e.AddPTY()
	if err != nil {
		t.Fatal(err)
	}
	if path2 == e.Path() {
		t.Fatalf("same path %s", path2)
	}
	p1 := open(t, e)
	p2, err := serial.OpenPort(&serial.Config{Name: path2, Baud: 2400, ReadTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	e.SetOnBattery(true)
	a, b := ask(t, p1, "Q1"), ask(t, p2, "Q1")
	if a != b || !strings.HasSuffix(a, " 10001001\r") {
		t.Fatalf("line 1 %q, line 2 %q", a, b)
	}
	if _, err := New().AddPTY(); err == nil {
		t.Fatal("AddPTY on New(): no error")
	}
}

func TestCommandFault(t *testing.T) {
	e := StartT(t)
	p := open(t, e)
	e.SetCommandFault("I", FaultNAK)
	if got := ask(t, p, "I"); got != "NAK\r" {
		t.Errorf("I -> %q", got)
	}
	if got := ask(t, p, "F"); got != FormatF(Defaults) {
		t.Errorf("F -> %q", got)
	}
	e.SetFault(FaultEcho)
	e.SetCommandFault("Q1", FaultNone)
	if got := ask(t, p, "F"); got != "F\r" {
		t.Errorf("F -> %q", got)
	}
	if got := ask(t, p, "Q1"); got != e.Q1Frame() {
		t.Errorf("Q1 -> %q", got)
	}
}

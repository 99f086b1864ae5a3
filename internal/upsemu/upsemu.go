// Package upsemu is a Megatec/Q1 UPS emulator for tests and demos: it answers Q1, F and I
// and the instant commands on a pseudo-terminal (or any io.ReadWriter, such as a socket for
// QEMU's chardev), the way a real unit on a serial line does, so that rackwatch's megatec
// driver and NUT's own nutdrv_qx can both read it.
//
//	e := upsemu.StartT(t)              // or upsemu.Start(ctx) outside tests
//	dev := e.Path()                    // "/dev/pts/N": give it to the driver as its port
//	e.SetOnBattery(true)               // utility fail (bit 7)
//	e.SetLowBattery(true)              // battery low (bit 6)
//	e.Update(func(f *upsemu.Fields) { f.InputVoltage = 0; f.Load = 40 })
//	e.SetFault(upsemu.FaultSilent)     // stop answering
//
// The pty is put in raw mode, as a serial line is: without it, the line discipline would
// echo the emulator's replies back to it and turn CR into LF. The emulator keeps the slave
// side open itself, so a driver may close and reopen the port at will.
//
// AddPTY gives the same UPS a second line, so that two drivers (rackwatch's and NUT's
// nutdrv_qx) can read it side by side; New and Serve answer on a socket instead (QEMU's
// chardev); cmd/upsemu does all this from a shell, driven by lines on stdin.
//
// It formats frames on its own, independently of drivers/megatec, so that a test comparing
// the two proves something. It must not import daemon/, sensors/ or drivers/.
package upsemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Status bits of the Q1 reply, b7 (first character) to b0.
type Status uint8

const (
	UtilityFail    Status = 1 << 7 // on battery: OB
	BatteryLow     Status = 1 << 6 // LB
	BypassBoost    Status = 1 << 5 // bypass/boost/buck active
	UPSFailed      Status = 1 << 4 // ups.alarm
	Standby        Status = 1 << 3 // UPS type: standby / line interactive (0: online)
	TestInProgress Status = 1 << 2 // CAL
	ShutdownActive Status = 1 << 1 // FSD
	BeeperOn       Status = 1 << 0
)

// Fields are the values the emulator reports.
type Fields struct {
	InputVoltage      float64 // V
	InputFaultVoltage float64 // V
	OutputVoltage     float64 // V
	Load              int     // %
	Frequency         float64 // Hz
	// BatteryVoltage below 10 is sent as a per-cell value (S.SS), otherwise as a pack
	// voltage (SS.S), as online and standby units do.
	BatteryVoltage float64
	Temperature    float64 // °C
	// TemperatureNA sends "--.-" for the temperature, as units without a sensor do.
	TemperatureNA bool
	Status        Status

	// F reply.
	RatedVoltage        float64
	RatedCurrent        int
	RatedBatteryVoltage float64
	RatedFrequency      float64

	// I reply (at most 15, 10 and 10 characters).
	Company, Model, Version string
}

// Defaults is a healthy 24 V line-interactive unit on mains with its beeper on.
var Defaults = Fields{
	InputVoltage: 230.0, InputFaultVoltage: 230.0, OutputVoltage: 230.0, Load: 25,
	Frequency: 50.0, BatteryVoltage: 27.0, Temperature: 30.0, Status: Standby | BeeperOn,
	RatedVoltage: 230.0, RatedCurrent: 4, RatedBatteryVoltage: 24.0, RatedFrequency: 50.0,
	Company: "RACKWATCH", Model: "EMU-1000", Version: "V1.00",
}

// Fault makes the emulator misbehave the way real lines and units do.
type Fault int

const (
	FaultNone      Fault = iota
	FaultSilent          // answers nothing
	FaultGarbage         // answers line noise ending in CR
	FaultEcho            // echoes every command (as units do for commands they do not know)
	FaultTruncated       // sends the first 20 bytes of the reply, then CR
	FaultNoCR            // sends the reply without its CR
	FaultNAK             // answers NAK
)

var faultNames = map[string]Fault{"none": FaultNone, "silent": FaultSilent, "garbage": FaultGarbage,
	"echo": FaultEcho, "truncated": FaultTruncated, "nocr": FaultNoCR, "nak": FaultNAK}

// ParseFault returns the fault named none, silent, garbage, echo, truncated, nocr or nak.
func ParseFault(name string) (Fault, error) {
	f, ok := faultNames[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("unknown fault %q (none, silent, garbage, echo, truncated, nocr, nak)", name)
	}
	return f, nil
}

// maxReceived bounds the command log of a long-running emulator.
const maxReceived = 256

// Emulator is one emulated UPS. Its methods are safe for concurrent use.
type Emulator struct {
	mu       sync.Mutex
	f        Fields
	fault    Fault
	cmdFault map[string]Fault
	received []string
	queries  int

	// Set by Start and AddPTY.
	ctx    context.Context
	cancel context.CancelFunc
	lines  []*line
	closed bool
	wg     sync.WaitGroup
}

// line is one pty: the master the emulator answers on, and the slave it keeps open so that
// a driver closing the tty does not hang the line up.
type line struct {
	master, slave *os.File
}

// New returns an emulator with Defaults that serves nothing yet: see Serve, or Start.
func New() *Emulator {
	return &Emulator{f: Defaults}
}

// Start makes a pty, puts it in raw mode and answers on it until ctx ends or Close.
func Start(ctx context.Context) (*Emulator, error) {
	e := New()
	e.ctx, e.cancel = context.WithCancel(ctx)
	if _, err := e.AddPTY(); err != nil {
		e.cancel()
		return nil, err
	}
	return e, nil
}

// AddPTY gives a started emulator one more serial line: a new pty answered from the same
// fields, like a UPS with both a serial and a USB port. Two drivers cannot share one tty
// (each would read the other's replies), so a test that compares two drivers on one UPS
// gives each its own. It returns the new tty's path.
func (e *Emulator) AddPTY() (string, error) {
	if e.ctx == nil {
		return "", errors.New("upsemu: AddPTY on an emulator not made by Start")
	}
	m, s, err := pty.Open()
	if err != nil {
		return "", fmt.Errorf("upsemu: open pty: %w", err)
	}
	if err := makeRaw(s); err != nil {
		m.Close()
		s.Close()
		return "", fmt.Errorf("upsemu: raw mode on %s: %w", s.Name(), err)
	}
	// pty.Open leaves the master in blocking mode, where Close cannot interrupt a Read.
	// A non-blocking duplicate goes through Go's poller, so Close (and deadlines) work.
	fd, err := unix.Dup(int(m.Fd()))
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	m.Close()
	if err != nil {
		s.Close()
		return "", fmt.Errorf("upsemu: pty master: %w", err)
	}
	unix.CloseOnExec(fd)
	p := &line{master: os.NewFile(uintptr(fd), "/dev/ptmx"), slave: s}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		p.master.Close()
		s.Close()
		return "", errors.New("upsemu: closed")
	}
	e.lines = append(e.lines, p)
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		e.Serve(e.ctx, p.master)
	}()
	return s.Name(), nil
}

// StartT is Start for a test: it fails the test if the pty cannot be made and closes the
// emulator when the test ends.
func StartT(t testing.TB) *Emulator {
	t.Helper()
	e, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// makeRaw sets a tty the way cfmakeraw does: no echo, no line editing, no CR/NL mapping.
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN] = 1
	tio.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, tio)
}

// Path is the tty of the first pty, to give a driver as its serial port ("" when not
// started with Start).
func (e *Emulator) Path() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.lines) == 0 {
		return ""
	}
	return e.lines[0].slave.Name()
}

// Close stops answering and releases the ptys; it waits for the serving goroutines.
func (e *Emulator) Close() error {
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	e.mu.Lock()
	e.closed = true
	lines := e.lines
	e.mu.Unlock()
	for _, l := range lines {
		l.master.Close()
	}
	e.wg.Wait()
	for _, l := range lines {
		l.slave.Close()
	}
	return nil
}

// Fields returns the values the emulator reports now.
func (e *Emulator) Fields() Fields {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.f
}

// Update changes fields at once, under the emulator's lock.
func (e *Emulator) Update(change func(*Fields)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	change(&e.f)
}

// SetInput sets the input voltage.
func (e *Emulator) SetInput(v float64) { e.Update(func(f *Fields) { f.InputVoltage = v }) }

// SetStatus replaces all 8 status bits.
func (e *Emulator) SetStatus(s Status) { e.Update(func(f *Fields) { f.Status = s }) }

// SetOnBattery sets or clears the utility-fail bit (OB); it changes no voltage.
func (e *Emulator) SetOnBattery(on bool) { e.setBit(UtilityFail, on) }

// SetLowBattery sets or clears the battery-low bit (LB).
func (e *Emulator) SetLowBattery(low bool) { e.setBit(BatteryLow, low) }

func (e *Emulator) setBit(b Status, on bool) {
	e.Update(func(f *Fields) {
		if on {
			f.Status |= b
		} else {
			f.Status &^= b
		}
	})
}

// SetFault makes the emulator misbehave from the next command on (FaultNone: behave).
func (e *Emulator) SetFault(f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fault = f
}

// SetCommandFault makes the emulator misbehave on one command only ("Q1", "F", "I", …),
// overriding SetFault for it: a unit that NAKs I, or ignores F. FaultNone makes that
// command behave even while SetFault is in force.
func (e *Emulator) SetCommandFault(cmd string, f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmdFault == nil {
		e.cmdFault = map[string]Fault{}
	}
	e.cmdFault[cmd] = f
}

// Received returns the last commands received (without CR), oldest first.
func (e *Emulator) Received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.received...)
}

// Queries counts the Q1 commands answered so far: a test can wait for a driver to have
// polled after a change.
func (e *Emulator) Queries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queries
}

// Q1Frame is the reply to Q1 for the current fields, with its CR.
func (e *Emulator) Q1Frame() string {
	return FormatQ1(e.Fields())
}

// FormatQ1 formats a Q1 reply: (MMM.M NNN.N PPP.P QQQ RR.R S.SS TT.T b7..b0\r.
func FormatQ1(f Fields) string {
	batt := fmt.Sprintf("%04.1f", f.BatteryVoltage)
	if f.BatteryVoltage < 10 {
		batt = fmt.Sprintf("%4.2f", f.BatteryVoltage)
	}
	temp := fmt.Sprintf("%04.1f", f.Temperature)
	if f.TemperatureNA {
		temp = "--.-"
	}
	return fmt.Sprintf("(%05.1f %05.1f %05.1f %03d %04.1f %s %s %08b\r",
		f.InputVoltage, f.InputFaultVoltage, f.OutputVoltage, f.Load, f.Frequency, batt, temp, uint8(f.Status))
}

// FormatF formats an F reply: #MMM.M QQQ SS.SS RR.R\r.
func FormatF(f Fields) string {
	batt := fmt.Sprintf("%05.2f", f.RatedBatteryVoltage)
	if f.RatedBatteryVoltage >= 100 {
		batt = fmt.Sprintf("%05.1f", f.RatedBatteryVoltage)
	}
	return fmt.Sprintf("#%05.1f %03d %s %04.1f\r", f.RatedVoltage, f.RatedCurrent, batt, f.RatedFrequency)
}

// FormatI formats an I reply: '#', company (15), model (10), version (10), space-separated.
func FormatI(f Fields) string {
	cut := func(s string, n int) string {
		if len(s) > n {
			s = s[:n]
		}
		return fmt.Sprintf("%-*s", n, s)
	}
	return "#" + cut(f.Company, 15) + " " + cut(f.Model, 10) + " " + cut(f.Version, 10) + "\r"
}

var shutdownCmd = regexp.MustCompile(`^S(\.\d|\d\d)(R\d{4})?$`)
var testCmd = regexp.MustCompile(`^T(L|\d\d)?$`)

// answer handles one command and returns the bytes to send back (nil: nothing).
func (e *Emulator) answer(cmd string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.received = append(e.received, cmd)
	if len(e.received) > maxReceived {
		e.received = e.received[len(e.received)-maxReceived:]
	}
	var reply string
	switch {
	case cmd == "Q1":
		e.queries++
		reply = FormatQ1(e.f)
	case cmd == "F":
		reply = FormatF(e.f)
	case cmd == "I":
		reply = FormatI(e.f)
	case cmd == "Q":
		e.f.Status ^= BeeperOn
	case testCmd.MatchString(cmd):
		e.f.Status |= TestInProgress
	case cmd == "CT":
		e.f.Status &^= TestInProgress
	case cmd == "C":
		e.f.Status &^= ShutdownActive
	case shutdownCmd.MatchString(cmd):
		e.f.Status |= ShutdownActive
	default:
		// Unknown command: echoed back, as real units do.
		reply = cmd + "\r"
	}
	fault := e.fault
	if f, ok := e.cmdFault[cmd]; ok {
		fault = f
	}
	switch fault {
	case FaultSilent:
		return nil
	case FaultEcho:
		return []byte(cmd + "\r")
	}
	if reply == "" {
		return nil
	}
	switch fault {
	case FaultGarbage:
		return []byte("(2#9.?\xff\xfe garbage !!\r")
	case FaultTruncated:
		if len(reply) > 20 {
			reply = reply[:20] + "\r"
		}
	case FaultNoCR:
		reply = strings.TrimSuffix(reply, "\r")
	case FaultNAK:
		reply = "NAK\r"
	}
	return []byte(reply)
}

type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// ServeListener serves every connection l accepts, each with Serve, until l is closed; it
// returns once every connection it served has ended. onErr, if set, hears how a connection
// failed (Serve's error).
func (e *Emulator) ServeListener(ctx context.Context, l net.Listener, onErr func(error)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if err := e.Serve(ctx, c); err != nil && onErr != nil {
				onErr(err)
			}
		}()
	}
}

// Serve answers commands read from rw until ctx ends, rw fails or is closed. A command
// ends with CR (or LF). If rw has SetReadDeadline, ending ctx interrupts a pending read;
// otherwise the caller closes rw to stop Serve.
func (e *Emulator) Serve(ctx context.Context, rw io.ReadWriter) error {
	if d, ok := rw.(readDeadliner); ok {
		stop := context.AfterFunc(ctx, func() { d.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	r := bufio.NewReader(rw)
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("upsemu: read: %w", err)
		}
		if c != '\r' && c != '\n' {
			if len(line) < 64 {
				line = append(line, c)
			}
			continue
		}
		cmd := strings.TrimSpace(string(line))
		line = line[:0]
		if cmd == "" {
			continue
		}
		if reply := e.answer(cmd); reply != nil {
			if _, err := rw.Write(reply); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("upsemu: write: %w", err)
			}
		}
	}
}

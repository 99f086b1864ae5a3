package megatec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// DefaultTimeout bounds one command and its reply when the context has no deadline. At
// 2400 baud a 47-byte reply takes 200 ms on the wire; units answer within a second.
const DefaultTimeout = 2 * time.Second

// idleGap is how long the line must stay quiet, after a frame that is whole but for its CR,
// before the frame is taken as ended.
const idleGap = 150 * time.Millisecond

// maxReply bounds a reply: the longest real one (I) is 39 bytes.
const maxReply = 128

// readDeadliner is a reader whose reads can be bounded (os.File on a pty, net.Conn).
type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// flusher drops bytes already received but not read (tarm/serial's Port).
type flusher interface {
	Flush() error
}

// ReadReply reads one reply from r: up to and including the first CR, or, when the line
// goes quiet with no CR, the bytes so far if complete says they make a whole frame (some
// units never send the CR). It gives up at deadline with ErrTimeout.
//
// The deadline can only be kept if reads return now and then: r is either a serial port
// opened with a read timeout (tarm/serial's ReadTimeout: a read that times out returns no
// bytes) or has SetReadDeadline (a pty, a socket), which ReadReply uses itself.
func ReadReply(r io.Reader, deadline time.Time, complete func([]byte) bool) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 64)
	rd, canDeadline := r.(readDeadliner)
	if canDeadline {
		// An os.File that the poller does not take (a tty opened blocking) has the method
		// but no deadlines.
		if err := rd.SetReadDeadline(deadline); errors.Is(err, os.ErrNoDeadline) {
			canDeadline = false
		}
	}
	for {
		now := time.Now()
		if !now.Before(deadline) {
			if len(buf) > 0 {
				if complete != nil && complete(buf) {
					return buf, nil
				}
				return buf, fmt.Errorf("%w: %d bytes without CR: %q", ErrTimeout, len(buf), buf)
			}
			return nil, ErrTimeout
		}
		if canDeadline {
			d := now.Add(idleGap)
			if d.After(deadline) {
				d = deadline
			}
			if err := rd.SetReadDeadline(d); err != nil {
				return buf, fmt.Errorf("set read deadline: %w", err)
			}
		}
		n, err := r.Read(chunk)
		if n > 0 {
			buf = append(buf, chunk[:n]...)
			if i := indexCR(buf); i >= 0 {
				// Bytes after the CR belong to nothing we asked for; drop them.
				return buf[:i+1], nil
			}
			if len(buf) > maxReply {
				return buf, fmt.Errorf("%w: %d bytes without CR", ErrTooLong, len(buf))
			}
			continue
		}
		idle := n == 0 && (err == nil || errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded))
		if !idle {
			return buf, fmt.Errorf("read: %w", err)
		}
		if len(buf) > 0 && complete != nil && complete(buf) {
			return buf, nil
		}
		if !canDeadline {
			// A serial read timeout already waited; a reader that returns at once would
			// spin until the deadline. Pace it.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func indexCR(b []byte) int {
	for i, c := range b {
		if c == '\r' {
			return i
		}
	}
	return -1
}

// Conn sends commands and reads replies over a serial line. It is not safe for concurrent
// use: one command and its reply at a time.
type Conn struct {
	rw io.ReadWriter
	// Timeout bounds one exchange when the context has no deadline.
	Timeout time.Duration
}

// NewConn returns a Conn on rw; see ReadReply for what rw's reads must do.
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{rw: rw, Timeout: DefaultTimeout}
}

func (c *Conn) deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	t := c.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return time.Now().Add(t)
}

// send drops stale input (a late reply to an earlier command would be taken for this one's)
// and writes cmd followed by CR.
func (c *Conn) send(ctx context.Context, cmd string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f, ok := c.rw.(flusher); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("flush before %s: %w", cmd, err)
		}
	}
	if _, err := io.WriteString(c.rw, cmd+"\r"); err != nil {
		return fmt.Errorf("send %s: %w", cmd, err)
	}
	return nil
}

// Query sends cmd and returns its reply, refusing NAK, echoes and NUL bytes. complete
// tells a whole frame that lacks its CR (nil: the CR is required).
func (c *Conn) Query(ctx context.Context, cmd string, complete func([]byte) bool) ([]byte, error) {
	if err := c.send(ctx, cmd); err != nil {
		return nil, err
	}
	b, err := ReadReply(c.rw, c.deadline(ctx), complete)
	if err != nil {
		return b, fmt.Errorf("read %s reply: %w", cmd, err)
	}
	if err := checkReply(b, cmd); err != nil {
		return b, fmt.Errorf("%s: %w", cmd, err)
	}
	return b, nil
}

// q1Complete says whether bytes without a CR are a whole Q1 frame: they parse, with all 8
// status bits.
func q1Complete(b []byte) bool {
	q, err := ParseQ1(b)
	return err == nil && q.StatusOK()
}

func fComplete(b []byte) bool {
	_, err := ParseF(b)
	return err == nil
}

func iComplete(b []byte) bool {
	return len(b) >= 38 && b[0] == '#'
}

// Q1 asks for the status.
func (c *Conn) Q1(ctx context.Context) (Q1, error) {
	b, err := c.Query(ctx, "Q1", q1Complete)
	if err != nil {
		return Q1{}, err
	}
	q, err := ParseQ1(b)
	if err != nil {
		return q, fmt.Errorf("Q1: %w", err)
	}
	return q, nil
}

// Ratings asks for the nominal ratings (F).
func (c *Conn) Ratings(ctx context.Context) (Ratings, error) {
	b, err := c.Query(ctx, "F", fComplete)
	if err != nil {
		return Ratings{}, err
	}
	r, err := ParseF(b)
	if err != nil {
		return r, fmt.Errorf("F: %w", err)
	}
	return r, nil
}

// Info asks for the identity (I).
func (c *Conn) Info(ctx context.Context) (Info, error) {
	b, err := c.Query(ctx, "I", iComplete)
	if err != nil {
		return Info{}, err
	}
	in, err := ParseI(b)
	if err != nil {
		return in, fmt.Errorf("I: %w", err)
	}
	return in, nil
}

// Commands lists the NUT instant commands the megatec protocol has, as nutdrv_qx's megatec
// subdriver offers them.
func Commands() []string {
	return []string{
		"beeper.toggle", "load.off", "load.on", "shutdown.return", "shutdown.stayoff",
		"shutdown.stop", "test.battery.start", "test.battery.start.deep",
		"test.battery.start.quick", "test.battery.stop",
	}
}

// Delays nutdrv_qx uses for shutdown.return and shutdown.stayoff unless configured
// (ups.delay.shutdown 30 s, ups.delay.start 180 s).
const (
	DefaultOffDelay = 30 * time.Second
	DefaultOnDelay  = 180 * time.Second
)

// CommandString returns the bytes (without CR) nutdrv_qx's megatec subdriver sends for a
// NUT instant command. arg is used by test.battery.start (duration in seconds, 60–5940,
// default 600) and by shutdown.return / shutdown.stayoff (the shutdown delay in seconds,
// 12–600, default 30).
func CommandString(cmd, arg string) (string, error) {
	switch cmd {
	case "beeper.toggle":
		return "Q", nil
	case "load.off":
		return "S00R0000", nil
	case "load.on", "shutdown.stop":
		return "C", nil
	case "test.battery.start.deep":
		return "TL", nil
	case "test.battery.start.quick":
		return "T", nil
	case "test.battery.stop":
		return "CT", nil
	case "test.battery.start":
		secs := 600
		if arg != "" {
			n, err := atoiStrict(arg)
			if err != nil || n < 60 || n > 5940 {
				return "", fmt.Errorf("%s: duration %q out of range [60..5940] seconds", cmd, arg)
			}
			secs = n
		}
		return fmt.Sprintf("T%02d", secs/60), nil
	case "shutdown.return", "shutdown.stayoff":
		off := int(DefaultOffDelay / time.Second)
		if arg != "" {
			n, err := atoiStrict(arg)
			if err != nil || n < 12 || n > 600 {
				return "", fmt.Errorf("%s: delay %q out of range [12..600] seconds", cmd, arg)
			}
			off = n
		}
		// Sn: n minutes, or .n for n × 6 s under a minute (blazer_process_command).
		var sn string
		if off < 60 {
			sn = fmt.Sprintf(".%d", off/6)
		} else {
			sn = fmt.Sprintf("%02d", off/60)
		}
		if cmd == "shutdown.stayoff" {
			return "S" + sn + "R0000", nil
		}
		return fmt.Sprintf("S%sR%04d", sn, int(DefaultOnDelay/time.Minute)), nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownCommand, cmd)
}

// ErrUnknownCommand: not an instant command of this protocol.
var ErrUnknownCommand = errors.New("unknown instant command")

func atoiStrict(s string) (int, error) {
	if s == "" || len(s) > 6 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a whole number: %q", s)
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// Command sends a NUT instant command. Megatec units do not answer commands they accept;
// one that echoes the command or answers NAK refuses it (as nutdrv_qx judges). It waits
// for a refusal for at most wait (or until the context's deadline, if sooner).
func (c *Conn) Command(ctx context.Context, cmd, arg string, wait time.Duration) error {
	s, err := CommandString(cmd, arg)
	if err != nil {
		return err
	}
	if err := c.send(ctx, s); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	b, err := ReadReply(c.rw, deadline, nil)
	switch {
	case errors.Is(err, ErrTimeout) && len(b) == 0:
		return nil // silence: accepted
	case err != nil:
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if err := checkReply(b, s); err != nil {
		return fmt.Errorf("%s (%s): %w", cmd, s, err)
	}
	if strings.TrimRight(string(b), "\r") == "ACK" {
		return nil
	}
	return fmt.Errorf("%s (%s): %w: unexpected reply %q", cmd, s, ErrGarbage, b)
}

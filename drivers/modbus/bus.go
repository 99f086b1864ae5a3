// Package modbus is the Modbus transport: Modbus TCP, RTU over a serial port and RTU over TCP
// (serial gateways), following the Modbus Application Protocol 1.1b3 and Modbus over Serial
// Line 1.02. It knows tables, addresses and requests, nothing of what a register means.
//
// One Bus owns each port or gateway connection: a single goroutine sends every request of
// every device on it, one at a time, with the unit id set per request, so that two devices on
// one RS-485 pair never interleave frames (simonvetter/modbus #48). Framing, the CRC and the
// 3.5-character silence between RTU frames (1.75 ms above 19200 baud) come from
// github.com/simonvetter/modbus, which this package drives from that one goroutine; the
// sharing, the batching of reads (Plan), the reconnection and the isolation of a unit that
// stops answering are this package's.
//
// It must not import sensors/, daemon/ or uplink/.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	mb "github.com/simonvetter/modbus"
)

// Conn says how to reach a bus.
type Conn struct {
	// Mode is tcp, rtu (a serial port) or rtuovertcp (a gateway that passes RTU frames over
	// TCP).
	Mode string
	// Addr is host:port for tcp and rtuovertcp, the device path for rtu.
	Addr string
	// Baud, Parity (none, even, odd) and StopBits (1, 2) apply to rtu; Baud also sets the
	// inter-frame silence of rtuovertcp.
	Baud     int
	Parity   string
	StopBits int
}

// key names the port or gateway: one owner each, whatever the other settings (a second
// opener with other settings is refused rather than given a second owner).
func (c Conn) key() string { return c.Mode + "://" + c.Addr }

// DefaultTimeout bounds one request when the opener gives none.
const DefaultTimeout = time.Second

// jobQueue bounds the requests waiting for a bus: callers beyond it wait (bounded by their
// context) rather than queue without limit.
const jobQueue = 64

// ErrTimeout is a request that got no answer within the bus's request timeout.
var ErrTimeout = errors.New("modbus: no answer within the request timeout")

// ErrClosed is a request on a closed bus.
var ErrClosed = errors.New("modbus: bus closed")

// Exception is a Modbus exception response.
type Exception struct{ Code uint8 }

var exceptionNames = map[uint8]string{
	1: "illegal function", 2: "illegal data address", 3: "illegal data value",
	4: "server device failure", 5: "acknowledge", 6: "server device busy",
	8: "memory parity error", 10: "gateway path unavailable", 11: "gateway target failed to respond",
}

func (e *Exception) Error() string {
	if n, ok := exceptionNames[e.Code]; ok {
		return fmt.Sprintf("modbus exception %d (%s)", e.Code, n)
	}
	return fmt.Sprintf("modbus exception %d", e.Code)
}

var libExceptions = map[error]uint8{
	mb.ErrIllegalFunction: 1, mb.ErrIllegalDataAddress: 2, mb.ErrIllegalDataValue: 3,
	mb.ErrServerDeviceFailure: 4, mb.ErrAcknowledge: 5, mb.ErrServerDeviceBusy: 6,
	mb.ErrMemoryParityError: 8, mb.ErrGWPathUnavailable: 10, mb.ErrGWTargetFailedToRespond: 11,
}

// Bus is one shared port or gateway connection.
type Bus struct {
	conn Conn
	key  string

	jobs chan job
	quit chan struct{}
	wg   sync.WaitGroup

	timeout  atomic.Int64 // ns; the smallest any opener asked for
	requests atomic.Uint64
	refs     int // guarded by busesMu

	client *mb.ModbusClient // owner goroutine only
}

type job struct {
	ctx  context.Context
	f    func(*session)
	done chan struct{}
}

var (
	busesMu sync.Mutex
	buses   = map[string]*Bus{}
)

// Open returns the bus for c, shared with every other device that opened the same port or
// gateway, and takes a reference on it; Close gives it back. timeout bounds each request
// (0: DefaultTimeout); a bus shared by devices with different timeouts uses the smallest, so
// that a silent unit costs its neighbours no more than any of them accepts.
func Open(c Conn, timeout time.Duration) (*Bus, error) {
	switch c.Mode {
	case "tcp", "rtuovertcp", "rtu":
	default:
		return nil, fmt.Errorf("modbus: mode %q is not tcp, rtu or rtuovertcp", c.Mode)
	}
	if c.Addr == "" {
		return nil, errors.New("modbus: no address")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	busesMu.Lock()
	defer busesMu.Unlock()
	k := c.key()
	b, ok := buses[k]
	if ok {
		if b.conn != c {
			return nil, fmt.Errorf("modbus: %s is already open with other settings (%+v)", c.Addr, b.conn)
		}
		if time.Duration(b.timeout.Load()) > timeout {
			b.timeout.Store(int64(timeout))
		}
		b.refs++
		return b, nil
	}
	b = &Bus{conn: c, key: k, jobs: make(chan job, jobQueue), quit: make(chan struct{}), refs: 1}
	b.timeout.Store(int64(timeout))
	buses[k] = b
	b.wg.Add(1)
	go b.run()
	return b, nil
}

// Close gives back a reference; the last one stops the owner and closes the connection.
func (b *Bus) Close() error {
	busesMu.Lock()
	b.refs--
	last := b.refs == 0
	if last {
		delete(buses, b.key)
	}
	busesMu.Unlock()
	if last {
		close(b.quit)
		b.wg.Wait()
	}
	return nil
}

// Requests counts the requests sent on this bus, answered or not.
func (b *Bus) Requests() uint64 { return b.requests.Load() }

func (b *Bus) run() {
	defer b.wg.Done()
	s := &session{b: b}
	for {
		select {
		case <-b.quit:
			s.disconnect()
			// Callers waiting on queued jobs are released with ErrClosed by do.
			return
		case j := <-b.jobs:
			s.ctx = j.ctx
			j.f(s)
			close(j.done)
		}
	}
}

// do runs f on the owner goroutine and waits for it. f must check s.ctx between requests.
func (b *Bus) do(ctx context.Context, f func(*session)) error {
	j := job{ctx: ctx, f: f, done: make(chan struct{})}
	select {
	case b.jobs <- j:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.quit:
		return ErrClosed
	}
	select {
	case <-j.done:
		return nil
	case <-b.quit:
		// The owner may have taken the job before quitting: wait for it so f is not still
		// writing into the caller's memory.
		select {
		case <-j.done:
			return nil
		case <-time.After(2 * time.Duration(b.timeout.Load())):
			return ErrClosed
		}
	}
}

// session is the owner goroutine's view of the connection.
type session struct {
	b   *Bus
	ctx context.Context
}

var quiet = log.New(io.Discard, "", 0)

func (s *session) connect() error {
	if s.b.client != nil {
		return nil
	}
	c := s.b.conn
	cfg := &mb.ClientConfiguration{
		URL:     c.Mode + "://" + c.Addr,
		Speed:   uint(c.Baud),
		Timeout: time.Duration(s.b.timeout.Load()),
		Logger:  quiet,
	}
	if c.Mode == "rtu" {
		cfg.DataBits = 8
		switch c.Parity {
		case "even":
			cfg.Parity = mb.PARITY_EVEN
		case "odd":
			cfg.Parity = mb.PARITY_ODD
		default:
			cfg.Parity = mb.PARITY_NONE
		}
		cfg.StopBits = uint(c.StopBits)
		if cfg.StopBits == 0 {
			cfg.StopBits = 1 // what most meters and UPSes ship with (8N1), not the spec's 8N2
		}
	}
	cl, err := mb.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("modbus %s: %w", cfg.URL, err)
	}
	if err := cl.Open(); err != nil {
		return fmt.Errorf("modbus %s: connect: %w", cfg.URL, err)
	}
	s.b.client = cl
	return nil
}

func (s *session) disconnect() {
	if s.b.client != nil {
		s.b.client.Close()
		s.b.client = nil
	}
}

// classify turns the library's error into ours and drops the connection when its stream may
// be out of step: after a timeout on TCP a late answer would be taken for the next one's.
func (s *session) classify(err error) error {
	if err == nil {
		return nil
	}
	var le mb.Error
	if errors.As(err, &le) {
		if code, ok := libExceptions[le]; ok {
			return &Exception{Code: code}
		}
		if le == mb.ErrRequestTimedOut {
			if s.b.conn.Mode == "tcp" {
				s.disconnect()
			}
			return ErrTimeout
		}
	}
	if s.b.conn.Mode != "rtu" || !errors.As(err, &le) {
		s.disconnect() // a broken socket or port: reopen on the next request
	}
	return fmt.Errorf("modbus %s: %w", s.b.key, err)
}

func (s *session) prepare(unit uint8) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if err := s.connect(); err != nil {
		return err
	}
	s.b.client.SetUnitId(unit)
	s.b.requests.Add(1)
	return nil
}

// read sends one read request.
func (s *session) read(unit uint8, sp Span) (regs []uint16, bits []bool, err error) {
	if err := s.prepare(unit); err != nil {
		return nil, nil, err
	}
	c := s.b.client
	switch sp.Table {
	case Holding:
		regs, err = c.ReadRegisters(sp.Addr, sp.Count, mb.HOLDING_REGISTER)
	case Input:
		regs, err = c.ReadRegisters(sp.Addr, sp.Count, mb.INPUT_REGISTER)
	case Coil:
		bits, err = c.ReadCoils(sp.Addr, sp.Count)
	case Discrete:
		bits, err = c.ReadDiscreteInputs(sp.Addr, sp.Count)
	}
	return regs, bits, s.classify(err)
}

// Result is what one span read: Regs for register tables, Bits for coils and discrete
// inputs, or Err.
type Result struct {
	Regs []uint16
	Bits []bool
	Err  error
}

// ReadAll reads every span from unit in as few requests as Plan allows, all in one turn on
// the bus. A batch refused with an exception is read again span by span, so only the spans
// the device refuses fail. After a request times out the unit's remaining requests of this
// turn are not sent: a unit that stops answering holds the bus for one timeout per turn, not
// one per request.
func (b *Bus) ReadAll(ctx context.Context, unit uint8, spans []Span) []Result {
	out := make([]Result, len(spans))
	batches := Plan(spans)
	err := b.do(ctx, func(s *session) {
		var stop error
		for _, bt := range batches {
			if stop != nil {
				for _, i := range bt.Members {
					out[i].Err = stop
				}
				continue
			}
			regs, bits, err := s.read(unit, bt.Span)
			var ex *Exception
			if errors.As(err, &ex) && len(bt.Members) > 1 {
				for _, i := range bt.Members {
					r, bb, err := s.read(unit, spans[i])
					out[i] = Result{Regs: r, Bits: bb, Err: err}
					if err != nil && !errors.As(err, &ex) {
						stop = err
						break
					}
				}
				continue
			}
			if err != nil {
				for _, i := range bt.Members {
					out[i].Err = err
				}
				if !errors.As(err, &ex) {
					stop = err
				}
				continue
			}
			for _, i := range bt.Members {
				sp := spans[i]
				off := int(sp.Addr) - int(bt.Addr)
				if sp.Table.Bits() {
					out[i].Bits = bits[off : off+int(sp.Count)]
				} else {
					out[i].Regs = regs[off : off+int(sp.Count)]
				}
			}
		}
	})
	if err != nil {
		for i := range out {
			if out[i].Err == nil && out[i].Regs == nil && out[i].Bits == nil {
				out[i].Err = err
			}
		}
	}
	return out
}

// WriteCoil sets one coil (FC05).
func (b *Bus) WriteCoil(ctx context.Context, unit uint8, addr uint16, on bool) error {
	var werr error
	if err := b.do(ctx, func(s *session) {
		if werr = s.prepare(unit); werr != nil {
			return
		}
		werr = s.classify(s.b.client.WriteCoil(addr, on))
	}); err != nil {
		return err
	}
	return werr
}

// WriteRegister sets one holding register (FC06).
func (b *Bus) WriteRegister(ctx context.Context, unit uint8, addr, v uint16) error {
	var werr error
	if err := b.do(ctx, func(s *session) {
		if werr = s.prepare(unit); werr != nil {
			return
		}
		werr = s.classify(s.b.client.WriteRegister(addr, v))
	}); err != nil {
		return err
	}
	return werr
}

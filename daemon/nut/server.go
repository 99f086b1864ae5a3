package nut

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackwatch/rackwatch/internal/netlimit"
)

// Server answers NUT clients. Make it with New; it may serve several listeners at once.
type Server struct {
	cfg      Config
	src      Source
	log      *slog.Logger
	accounts map[string]*account
	tls      *tls.Config

	gate     *netlimit.Gate
	throttle *netlimit.Throttle // wrong passwords per address
	// throttled counts password checks refused unchecked; lastThrottleLog limits the log.
	throttled       atomic.Uint64
	lastThrottleLog atomic.Int64

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// Client is one logged-in client (LOGIN), for the status page.
type Client struct {
	UPS     string    `json:"ups"`
	User    string    `json:"user"`
	Addr    string    `json:"addr"`
	Primary bool      `json:"primary"` // it asked for PRIMARY (or MASTER)
	Since   time.Time `json:"since"`   // when it logged in
}

// New checks cfg, reads the users' password files and the TLS key pair, and returns a server
// that reads src. A nil log discards.
func New(cfg Config, src Source, log *slog.Logger) (*Server, error) {
	if src == nil {
		return nil, errors.New("nut: no source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = defaultMaxConns
	}
	if cfg.MaxConnsPerAddr <= 0 {
		cfg.MaxConnsPerAddr = min(defaultPerAddr, max(1, cfg.MaxConnections/2))
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdle
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = defaultWrite
	}
	if cfg.MaxLineLength <= 0 {
		cfg.MaxLineLength = defaultMaxLine
	}
	if cfg.MaxLineLength < minMaxLine {
		cfg.MaxLineLength = minMaxLine
	}
	accounts, err := loadAccounts(cfg.Users)
	if err != nil {
		return nil, err
	}
	tc, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	log = log.With("part", "nut")
	return &Server{cfg: cfg, src: src, log: log, accounts: accounts, tls: tc,
		gate:     netlimit.NewGate("NUT connections", cfg.MaxConnections, cfg.MaxConnsPerAddr, log),
		throttle: netlimit.NewThrottle(loginFreeFailures, nil),
		conns:    map[*conn]struct{}{}}, nil
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("nut: listen on %s: %w", s.cfg.Listen, err)
	}
	s.log.Info("NUT server listening", "addr", l.Addr().String())
	return s.Serve(ctx, l)
}

// Serve accepts clients on l until ctx ends, then closes l and every client it accepted and
// waits for their goroutines. It returns nil after ctx ends, or the listener's error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		l.Close()
	}()
	mine := map[*conn]struct{}{}
	var err error
	var backoff time.Duration
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(aerr, net.ErrClosed) {
				err = fmt.Errorf("nut: accept: %w", aerr)
				break
			}
			// Out of file descriptors and the like: wait instead of spinning, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("NUT accept failed", "err", aerr, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		c := s.admit(nc)
		if c == nil {
			continue
		}
		mine[c] = struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.serve(ctx)
		}()
	}
	cancel()
	s.mu.Lock()
	for c := range mine {
		if _, alive := s.conns[c]; alive {
			c.raw.Close() // also ends a TLS session wrapped around it
		}
	}
	s.mu.Unlock()
	wg.Wait()
	return err
}

// admit registers a new connection, or closes it when the server is full or its address
// holds its share already (the gate logs that, at most once per 10 s).
func (s *Server) admit(nc net.Conn) *conn {
	release, why := s.gate.Admit(nc.RemoteAddr())
	if why != "" {
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetLinger(0) // a flood must not leave a TIME_WAIT per connection
		}
		nc.Close()
		return nil
	}
	c := &conn{s: s, nc: nc, raw: nc, addr: hostOf(nc.RemoteAddr()), key: netlimit.Key(nc.RemoteAddr()), release: release}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.release()
}

// Collector exports the server's connections and throttled logins for /metrics
// (rackwatch_connections_open, rackwatch_connections_refused_total{reason} and
// rackwatch_logins_throttled_total, labelled server="nut").
func (s *Server) Collector() prometheus.Collector {
	return s.gate.Collector("nut", s.throttled.Load)
}

// authenticate checks the connection's USERNAME and PASSWORD, unless its address failed too
// often lately: then it refuses without checking, so that guessing gets nowhere.
func (c *conn) authenticate() (*account, bool) {
	key := c.key
	if d := c.s.throttle.Wait(key); d > 0 {
		c.s.throttled.Add(1)
		now := time.Now().UnixNano()
		if last := c.s.lastThrottleLog.Load(); now-last >= int64(10*time.Second) && c.s.lastThrottleLog.CompareAndSwap(last, now) {
			c.s.log.Warn("NUT password checks refused: too many wrong passwords from this address", "from", key, "for", d.Round(time.Second))
		}
		return nil, false
	}
	a, ok := check(c.s.accounts, c.username, c.password)
	if !ok {
		c.s.throttle.Fail(key)
	}
	return a, ok
}

// Clients lists the logged-in clients, by UPS then address.
func (s *Server) Clients() []Client {
	s.mu.Lock()
	var out []Client
	for c := range s.conns {
		if c.loginUPS != "" {
			out = append(out, Client{UPS: c.loginUPS, User: c.username, Addr: c.addr,
				Primary: c.primary, Since: c.loginAt})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].UPS != out[j].UPS {
			return out[i].UPS < out[j].UPS
		}
		if out[i].Addr != out[j].Addr {
			return out[i].Addr < out[j].Addr
		}
		return out[i].Since.Before(out[j].Since)
	})
	return out
}

// NumLogins is what GET NUMLOGINS answers for the UPS named exactly name.
func (s *Server) NumLogins(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.loginUPS == name {
			n++
		}
	}
	return n
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// conn is one client. Only its own goroutine touches it, except for the fields guarded by
// Server.mu (loginUPS, username, primary, loginAt), which Clients reads.
type conn struct {
	s    *Server
	nc   net.Conn // what requests are read from: raw, or TLS over raw after STARTTLS
	raw  net.Conn // the TCP connection; Serve closes it at shutdown
	addr string
	key  string // addr as limits count it (netlimit.Key)
	// release gives the connection's place back to the gate.
	release func()

	// guarded by s.mu
	username string
	loginUPS string
	primary  bool
	loginAt  time.Time

	userSet, pwSet bool
	password       string
	tls            bool
}

// serve reads requests one line at a time. A slow or silent client only ever blocks its own
// goroutine: reads end after the idle timeout, writes after the write timeout.
func (c *conn) serve(ctx context.Context) {
	defer func() {
		c.nc.Close()
		c.s.forget(c)
		if c.loginUPS != "" {
			c.s.log.Info("NUT client gone", "user", c.username, "from", c.addr, "ups", c.loginUPS)
		}
	}()
	c.s.log.Debug("NUT connect", "from", c.addr)
	r := bufio.NewReaderSize(c.nc, c.s.cfg.MaxLineLength)
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Never buffer more than one line's worth: answer and hang up, since what
			// follows is the rest of a line we cannot parse.
			c.s.log.Warn("NUT request line too long; closing", "from", c.addr, "max", c.s.cfg.MaxLineLength)
			if c.write("ERR " + errInvalidArgument + "\n") {
				c.lingeringClose()
			}
			return
		}
		if err != nil {
			c.s.log.Debug("NUT disconnect", "from", c.addr, "err", err)
			return
		}
		words, perr := parseLine(line[:len(line)-1])
		var out string
		var next action
		if perr != nil {
			out = "ERR " + errInvalidArgument + "\n"
		} else {
			out, next = c.dispatch(ctx, words)
		}
		if !c.write(out) {
			return
		}
		switch next {
		case hangUp:
			if r.Buffered() > 0 {
				c.lingeringClose() // pipelined requests after LOGOUT must not reset away "OK Goodbye"
			}
			return
		case startTLS:
			if r.Buffered() > 0 {
				c.s.log.Warn("NUT client sent data before the TLS handshake; closing", "from", c.addr)
				return
			}
			tc := tls.Server(c.nc, c.s.tls)
			tc.SetDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if err := tc.HandshakeContext(ctx); err != nil {
				c.s.log.Warn("NUT TLS handshake failed", "from", c.addr, "err", err)
				return
			}
			tc.SetDeadline(time.Time{})
			c.nc, c.tls = tc, true
			r = bufio.NewReaderSize(c.nc, c.s.cfg.MaxLineLength)
		}
	}
}

func (c *conn) write(s string) bool {
	if s == "" {
		return true
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.s.log.Debug("NUT write failed", "to", c.addr, "err", err)
		return false
	}
	return true
}

// lingeringClose gets the last answer to a client that is still sending: closing a socket
// with unread input makes the kernel reset the connection and drop what was not yet sent.
// So: send FIN after the answer, then read and discard for a little while (bounded in time
// and bytes, never buffered) before the caller closes.
func (c *conn) lingeringClose() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	io.CopyN(io.Discard, c.nc, lingerBytes)
}

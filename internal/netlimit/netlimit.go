// Package netlimit bounds what one network address can take from a server: connections
// (Gate, Listener) and password guesses (Throttle). The web and NUT servers share it so that
// an address means the same thing to both. It knows nothing of HTTP or NUT.
package netlimit

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reason says why a connection was refused.
type Reason string

const (
	PerAddress Reason = "per_address" // the address already holds its share
	Total      Reason = "total"       // the server already holds all it may
)

// Key is the address a limit counts against: the IPv4 address, or the /64 of an IPv6 address
// (one host may use any address of its /64). An IPv4 address written as IPv6 counts as itself.
func Key(a net.Addr) string {
	var ip net.IP
	switch t := a.(type) {
	case *net.TCPAddr:
		ip = t.IP
	case *net.UDPAddr:
		ip = t.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		if ip = net.ParseIP(host); ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Gate counts open connections, per address and in all, and refuses those over either cap.
// Its memory is bounded by the connections it admitted: an address is forgotten with its last
// connection.
type Gate struct {
	total, perAddr int
	what           string
	log            *slog.Logger

	mu       sync.Mutex
	open     int
	byAddr   map[string]int
	unlogged int // refusals since the last log line
	lastLog  time.Time

	refusedAddr, refusedTotal atomic.Uint64
}

// NewGate makes a gate for what ("connections"); a cap ≤ 0 is no cap. Refusals are logged
// on log at most once per 10 s.
func NewGate(what string, total, perAddr int, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{what: what, total: total, perAddr: perAddr, log: log, byAddr: map[string]int{}}
}

// Admit counts a new connection from a. It returns the function that gives the place back
// (call it once, when the connection is closed), or the reason the connection must be closed.
func (g *Gate) Admit(a net.Addr) (release func(), refused Reason) {
	key := Key(a)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.perAddr > 0 && g.byAddr[key] >= g.perAddr:
		refused = PerAddress
		g.refusedAddr.Add(1)
	case g.total > 0 && g.open >= g.total:
		refused = Total
		g.refusedTotal.Add(1)
	}
	if refused != "" {
		g.unlogged++
		// A flood of connections must not become a flood of log lines.
		if now := time.Now(); now.Sub(g.lastLog) >= 10*time.Second {
			g.log.Warn(g.what+" refused", "from", key, "reason", string(refused), "refused", g.unlogged,
				"open", g.open, "from_this_address", g.byAddr[key], "max", g.total, "max_per_address", g.perAddr)
			g.lastLog, g.unlogged = now, 0
		}
		return nil, refused
	}
	g.open++
	g.byAddr[key]++
	var once sync.Once
	return func() { once.Do(func() { g.release(key) }) }, ""
}

func (g *Gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open--
	if g.byAddr[key]--; g.byAddr[key] <= 0 {
		delete(g.byAddr, key)
	}
}

// Open is the number of connections admitted and not yet released.
func (g *Gate) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// OpenFrom is the number of open connections that count against a's address.
func (g *Gate) OpenFrom(a net.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byAddr[Key(a)]
}

// Refused is how many connections were refused for r since the gate was made.
func (g *Gate) Refused(r Reason) uint64 {
	if r == PerAddress {
		return g.refusedAddr.Load()
	}
	return g.refusedTotal.Load()
}

// Listener wraps l: a connection over a cap is closed as soon as it is accepted (with a reset,
// so it leaves no TIME_WAIT behind), and Accept goes on to the next one.
func (g *Gate) Listener(l net.Listener) net.Listener { return &listener{Listener: l, g: g} }

type listener struct {
	net.Listener
	g *Gate
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, why := l.g.Admit(c.RemoteAddr())
		if why == "" {
			return &conn{Conn: c, release: release}, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite lets servers half-close as they would on the bare TCP connection (net/http and
// the NUT server do, to get a last answer out before closing).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Metric descriptions shared by every server, so that web and NUT differ only in the label
// server="web" or "nut".
const (
	openHelp      = "Connections open now, per server."
	refusedHelp   = "Connections closed at once because their address (per_address) or the server (total) was at its cap."
	throttledHelp = "Password checks refused without checking because the address (NUT) or the address and user (web) failed too often."
)

// Collector exports the gate as rackwatch_connections_open and
// rackwatch_connections_refused_total{reason}, labelled server=server; throttled, when not
// nil, is rackwatch_logins_throttled_total.
func (g *Gate) Collector(server string, throttled func() uint64) prometheus.Collector {
	l := prometheus.Labels{"server": server}
	return &collector{g: g, throttled: throttled,
		open:      prometheus.NewDesc("rackwatch_connections_open", openHelp, nil, l),
		refused:   prometheus.NewDesc("rackwatch_connections_refused_total", refusedHelp, []string{"reason"}, l),
		throttleD: prometheus.NewDesc("rackwatch_logins_throttled_total", throttledHelp, nil, l)}
}

type collector struct {
	g                        *Gate
	throttled                func() uint64
	open, refused, throttleD *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.refused
	if c.throttled != nil {
		ch <- c.throttleD
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(c.g.Open()))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.g.Refused(PerAddress)), string(PerAddress))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.g.Refused(Total)), string(Total))
	if c.throttled != nil {
		ch <- prometheus.MustNewConstMetric(c.throttleD, prometheus.CounterValue, float64(c.throttled()))
	}
}

package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MaxUDPSyslog is the largest datagram sent (RFC 5426 §3.2 asks receivers for 2048 octets):
// the free text is cut to fit, the structured data is kept whole.
const MaxUDPSyslog = 2048

// syslogSender sends RFC 5424 messages over UDP (RFC 5426), TCP with octet counting
// (RFC 6587 §3.4.1) or TLS (RFC 5425), keeping one connection and making a new one after an
// error.
type syslogSender struct {
	cfg      Target
	facility int
	host     string
	tls      *tls.Config
	mu       sync.Mutex
	conn     net.Conn
}

func newSyslog(t Target) (*syslogSender, error) {
	s := &syslogSender{cfg: t, facility: facilities[t.Facility], host: hostname()}
	if t.Transport == "tls" {
		tc, err := tlsConfig(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		host, _, _ := net.SplitHostPort(t.Target)
		tc.ServerName = host
		s.tls = tc
	}
	return s, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "-"
	}
	return h
}

// syslogSeverity is the PRI severity of an event (CONTRACT.md §7): critical 2, warning 4,
// resolved 5.
func syslogSeverity(m Message) int {
	switch {
	case m.Event.Event == Resolved:
		return 5
	case m.critical():
		return 2
	}
	return 4
}

// sdEscape escapes a PARAM-VALUE (RFC 5424 §6.3.3).
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}

func sdValue(v any) string {
	if v == nil {
		return ""
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// clockSynced reports whether the kernel's clock is disciplined (NTP), for timeQuality.
func clockSynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
}

// FormatSyslog is the RFC 5424 message of m, without transport framing.
func FormatSyslog(m Message, facility int, host string, now time.Time, synced bool) string {
	var b strings.Builder
	msgid := m.Event.Event
	if msgid == "" {
		msgid = "-"
	}
	fmt.Fprintf(&b, "<%d>1 %s %s rackwatch %d %s ", facility*8+syslogSeverity(m), now.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		host, os.Getpid(), msgid)
	isSynced := "0"
	if synced {
		isSynced = "1"
	}
	fmt.Fprintf(&b, `[timeQuality tzKnown="1" isSynced="%s"]`, isSynced)
	fmt.Fprintf(&b, "[incident@%d", m.Enterprise)
	for _, p := range [][2]string{{"id", m.ID}, {"event", m.Event.Event}, {"severity", m.Severity}, {"rule", m.Rule},
		{"device", m.Device}, {"metric", m.Metric}, {"value", sdValue(m.Value)}, {"threshold", sdValue(m.Threshold)},
		{"site", m.Site}, {"node", m.Node}, {"key", m.Key()}, {"opened_at", m.OpenedAt}, {"ts", m.TS}, {"by", m.By}} {
		if p[1] == "" && p[0] != "value" && p[0] != "threshold" {
			continue
		}
		// Cut so that the structured data fits a datagram whole.
		fmt.Fprintf(&b, ` %s="%s"`, p[0], sdEscape(cutText(p[1], 255)))
	}
	if m.Repeat > 0 {
		fmt.Fprintf(&b, ` repeat="%d"`, m.Repeat)
	}
	b.WriteString("] ")
	b.WriteString(summary(m))
	if m.Note != "" {
		b.WriteString(": " + m.Note)
	}
	return b.String()
}

func (s *syslogSender) Send(ctx context.Context, m Message) error {
	return s.write(ctx, FormatSyslog(m, s.facility, s.host, time.Now(), clockSynced()))
}

// write frames msg for the transport and sends it on the kept connection.
func (s *syslogSender) write(ctx context.Context, msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Transport == "udp" {
		if len(msg) > MaxUDPSyslog {
			msg = msg[:MaxUDPSyslog]
		}
	} else {
		msg = strconv.Itoa(len(msg)) + " " + msg
	}
	if s.conn != nil && s.cfg.Transport != "udp" && !alive(s.conn) {
		s.conn.Close()
		s.conn = nil
	}
	for attempt := 0; ; attempt++ {
		if s.conn == nil {
			c, err := s.dial(ctx)
			if err != nil {
				return err
			}
			s.conn = c
		}
		dl, ok := ctx.Deadline()
		if !ok {
			dl = time.Now().Add(s.cfg.Timeout)
		}
		s.conn.SetWriteDeadline(dl)
		_, err := s.conn.Write([]byte(msg))
		if err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
		// A kept connection the peer closed fails on the first write: one fresh try.
		if attempt > 0 || s.cfg.Transport == "udp" {
			return err
		}
	}
}

// alive reports whether a kept stream is still open: a syslog receiver never writes, so a
// read that does not time out at once means the peer closed it, and a write into it would
// vanish without an error.
func alive(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

func (s *syslogSender) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: s.cfg.Timeout}
	switch s.cfg.Transport {
	case "udp":
		return d.DialContext(ctx, "udp", s.cfg.Target)
	case "tls":
		td := tls.Dialer{NetDialer: &d, Config: s.tls}
		return td.DialContext(ctx, "tcp", s.cfg.Target)
	}
	return d.DialContext(ctx, "tcp", s.cfg.Target)
}

func (s *syslogSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	return nil
}

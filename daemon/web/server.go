package web

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/internal/netlimit"
)

// Options configure the server.
type Options struct {
	Listen       string
	UsersFile    string
	RequireLogin bool
	TLSCert      string
	TLSKey       string
	Log          *slog.Logger
	// Registry is served at /metrics; nil serves an empty one. The server adds its own
	// connection, stream and login counters to it.
	Registry *prometheus.Registry
	// OnLogin hears of every login by the form and every failed login (form or HTTP Basic),
	// with the client's address (the audit trail); nil: nobody.
	OnLogin func(user, client string, ok bool)
	// Audit returns up to limit audit records, newest first (GET /api/v1/audit); nil: 404.
	Audit func(limit int) (any, error)
	// Backup writes a consistent copy of the database (GET /api/v1/backup, login needed), for
	// an auditor to run -verify-audit on while the daemon runs; nil: 404.
	Backup func(w io.Writer, user, client string) error
	// Update installs the firmware bundle in body (POST /api/v1/update, login needed) and
	// returns the HTTP status and the JSON answer; nil: 404. It bounds what it reads.
	Update func(ctx context.Context, body io.Reader, user, client string) (int, any)

	// Limits; zero is the default (README, "Limits against a hostile network").
	MaxConns          int           // connections open at once, from everyone
	MaxConnsPerAddr   int           // from one address (an IPv4 address or an IPv6 /64)
	MaxEventStreams   int           // /events streams open at once
	ReadHeaderTimeout time.Duration // to read a request's headers
	ReadTimeout       time.Duration // to read a whole request
	WriteTimeout      time.Duration // to write an answer; for /events, each event
	IdleTimeout       time.Duration // a keep-alive connection waiting for its next request
}

// Defaults of the limits. One browser tab takes up to six connections and one event stream;
// an office behind one NAT address is several browsers. Every connection costs a goroutine
// and its buffers (tens of KB), so the total stays far below the memory limit and the fd limit.
const (
	DefaultMaxConns          = 256
	DefaultMaxConnsPerAddr   = 64
	DefaultMaxEventStreams   = 32
	maxEventStreamsPerAddr   = 8
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
)

func (o *Options) applyDefaults() {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&o.MaxConns, DefaultMaxConns)
	set(&o.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	set(&o.MaxEventStreams, DefaultMaxEventStreams)
	setD(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setD(&o.ReadTimeout, DefaultReadTimeout)
	setD(&o.WriteTimeout, DefaultWriteTimeout)
	setD(&o.IdleTimeout, DefaultIdleTimeout)
}

// Server is the HTTP server.
type Server struct {
	opt     Options
	b       Backend
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	users   *Users
	now     func() time.Time
	tls     *tls.Config // nil: plain HTTP

	sess *sessions
	// Failed logins are counted per address and user together, so that guessing from one
	// address never locks the user out at another; and per address, more loosely (several
	// people may share one), so that one address cannot guess through every user name.
	pairLimit *netlimit.Throttle
	ipLimit   *netlimit.Throttle
	throttled atomic.Uint64 // logins answered 429

	gate    *netlimit.Gate
	streams *netlimit.Gate // /events
}

// New makes the server.
func New(opt Options, b Backend) (*Server, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	opt.applyDefaults()
	s := &Server{opt: opt, b: b, log: opt.Log, mux: http.NewServeMux(), now: time.Now}
	s.sess = sessionsFor(opt.Listen + "\x00" + opt.UsersFile)
	s.pairLimit = netlimit.NewThrottle(5, s.now)
	s.ipLimit = netlimit.NewThrottle(20, s.now)
	s.gate = netlimit.NewGate("web connections", opt.MaxConns, opt.MaxConnsPerAddr, opt.Log)
	s.streams = netlimit.NewGate("event streams", opt.MaxEventStreams, min(maxEventStreamsPerAddr, opt.MaxEventStreams), opt.Log)
	if opt.UsersFile != "" {
		u, err := LoadUsers(opt.UsersFile)
		if err != nil {
			return nil, err
		}
		s.users = u
	}
	if opt.TLSCert != "" || opt.TLSKey != "" {
		// Read the certificate now, so that a bad one stops the start with the reason
		// instead of leaving a site without its page.
		cert, err := tls.LoadX509KeyPair(opt.TLSCert, opt.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("web: tls_cert/tls_key: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	reg := opt.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range []prometheus.Collector{s.gate.Collector("web", s.throttled.Load), streamCollector{s}} {
		if err := reg.Register(c); err != nil {
			s.log.Warn("web: metrics", "err", err)
		}
	}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("GET /api/v1/status", s.status)
	s.mux.HandleFunc("GET /api/v1/incidents", s.incidents)
	s.mux.HandleFunc("GET /api/v1/kpis", s.kpis)
	s.mux.HandleFunc("GET /api/v1/history", s.history)
	s.mux.HandleFunc("GET /api/v1/audit", s.audit)
	s.mux.HandleFunc("GET /api/v1/backup", s.needLogin(s.backup))
	s.mux.HandleFunc("POST /api/v1/incidents/{id}/ack", s.needLogin(s.ack))
	s.mux.HandleFunc("POST /api/v1/relays/{id}", s.needLogin(s.relay))
	s.mux.HandleFunc("POST /api/v1/update", s.needLogin(s.update))
	s.mux.HandleFunc("GET /events", s.events)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.logout)
	var h http.Handler = s.mux
	if opt.RequireLogin {
		h = s.requireLogin(h)
	}
	// Refuse cross-site browser POSTs outright (Sec-Fetch-Site / Origin), before any
	// credential is looked at: the CSRF token is the second lock, this is the first.
	h = http.NewCrossOriginProtection().Handler(h)
	s.handler = h
	return s, nil
}

// Handler is the server's handler (tests use it with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on l until ctx ends, or until the server fails. A connection over the caps is
// closed as soon as it is accepted, so that one address holding many cannot starve the others.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var (
		mu    sync.Mutex
		fresh = map[string]bool{} // remote addresses of connections accepted, first request not read yet
	)
	// A connection counts as fresh from its Accept, not from net/http's StateNew hook, which
	// runs a moment later on the serving goroutine: a shutdown in between would drop it.
	l = &freshListener{Listener: s.gate.Listener(l), add: func(c net.Conn) {
		mu.Lock()
		fresh[c.RemoteAddr().String()] = true
		mu.Unlock()
	}}
	srv := &http.Server{Handler: s.handler, BaseContext: func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: s.opt.ReadHeaderTimeout, ReadTimeout: s.opt.ReadTimeout,
		WriteTimeout: s.opt.WriteTimeout, IdleTimeout: s.opt.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		// Hitting a cap is logged by the gate; the per-connection TLS and read errors of a
		// hostile network are not worth a line each.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: func(c net.Conn, st http.ConnState) {
			mu.Lock()
			// Keyed by address: with TLS this c wraps the one accepted.
			if st != http.StateNew {
				delete(fresh, c.RemoteAddr().String())
			}
			mu.Unlock()
		}}
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			srv.TLSConfig = s.tls
			errc <- srv.ServeTLS(l, "", "")
		} else {
			errc <- srv.Serve(l)
		}
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		// Stop accepting first: connections still queued on the socket are the next
		// server's when the socket is shared (a config reload). Then let those already
		// accepted get their request read, for net/http's Shutdown drops a connection whose
		// first request it reads after the shutdown began.
		l.Close()
		for wait := time.Now().Add(2 * time.Second); time.Now().Before(wait); {
			mu.Lock()
			n := len(fresh)
			mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// freshListener tells add of every connection it accepts.
type freshListener struct {
	net.Listener
	add func(net.Conn)
}

func (l *freshListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.add(c)
	}
	return c, err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(v)
}

// compressed gzips a response for a client that accepts it: the page and the history go to
// phones over slow links, and JSON and HTML compress 5-10:1. The func closes the stream.
func compressed(w http.ResponseWriter, r *http.Request) (io.Writer, func()) {
	w.Header().Add("Vary", "Accept-Encoding")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		return w, func() {}
	}
	w.Header().Set("Content-Encoding", "gzip")
	gz, _ := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	return gz, func() { gz.Close() }
}

// writeJSONz is writeJSON, compact and compressed, for the larger GET answers.
func writeJSONz(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	out, done := compressed(w, r)
	defer done()
	json.NewEncoder(out).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"ok": false, "error": msg})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) incidents(w http.ResponseWriter, r *http.Request) {
	which := r.URL.Query().Get("state")
	switch which {
	case "", "open":
		writeJSON(w, http.StatusOK, nonNil(s.b.Incidents(false)))
	case "all":
		writeJSON(w, http.StatusOK, nonNil(s.b.Incidents(true)))
	default:
		httpError(w, http.StatusBadRequest, "state is open or all")
	}
}

func nonNil(in []incident.Incident) []incident.Incident {
	if in == nil {
		return []incident.Incident{}
	}
	return in
}

func (s *Server) kpis(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.KPIs())
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dev, metric := q.Get("device"), q.Get("metric")
	if dev == "" || metric == "" {
		httpError(w, http.StatusBadRequest, "device and metric are required")
		return
	}
	since := time.Hour
	if v := q.Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			httpError(w, http.StatusBadRequest, "since is a duration like 1h or 24h")
			return
		}
		since = d
	}
	type point struct {
		TS    string  `json:"ts"`
		Value float64 `json:"value"`
	}
	pts := s.b.History(dev, metric, time.Now().Add(-since))
	out := make([]point, len(pts))
	for i, p := range pts {
		out[i] = point{p.TS.UTC().Format("2006-01-02T15:04:05.000Z07:00"), p.Value}
	}
	writeJSONz(w, r, out)
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request, user string) {
	err := s.b.Ack(r.PathValue("id"), user)
	switch {
	case errors.Is(err, incident.ErrNotFound):
		httpError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, incident.ErrResolved):
		httpError(w, http.StatusConflict, err.Error())
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
	default:
		s.done(w, r, "#incidents")
	}
}

// done answers a successful control action: JSON for scripts and API clients, back to the
// page for a plain HTML form (the page works without JavaScript).
func (s *Server) done(w http.ResponseWriter, r *http.Request, anchor string) {
	if isForm(r) && !strings.Contains(r.Header.Get("Accept"), "application/json") {
		http.Redirect(w, r, "/"+anchor, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) relay(w http.ResponseWriter, r *http.Request, user string) {
	var body struct {
		State string `json:"state"`
	}
	if isForm(r) {
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		body.State = r.PostFormValue("state")
	} else {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			httpError(w, http.StatusBadRequest, "body must be {\"state\":\"on\"|\"off\"|\"auto\"}: "+err.Error())
			return
		}
	}
	if body.State != "on" && body.State != "off" && body.State != "auto" {
		httpError(w, http.StatusBadRequest, "state is on, off or auto")
		return
	}
	if err := s.b.SetRelay(r.PathValue("id"), body.State, user); err != nil {
		code := http.StatusInternalServerError
		if strings.Contains(err.Error(), "no relay") {
			code = http.StatusNotFound
		}
		httpError(w, code, err.Error())
		return
	}
	s.done(w, r, "#contacts")
}

func (s *Server) onLogin(user, client string, ok bool) {
	if s.opt.OnLogin != nil {
		s.opt.OnLogin(user, client, ok)
	}
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request, user string) {
	if s.opt.Backup == nil {
		httpError(w, http.StatusNotFound, "no database")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="rackwatch.db"`)
	if err := s.opt.Backup(w, user, clientIP(r)); err != nil {
		// Headers are gone: a cut-off body is what the client sees, and the log says why.
		s.log.Warn("web: backup not completed", "user", user, "err", err)
	}
}

// updateReadTimeout replaces ReadTimeout for a firmware upload: tens of MB over a slow
// management network take minutes.
const updateReadTimeout = 15 * time.Minute

func (s *Server) update(w http.ResponseWriter, r *http.Request, user string) {
	if s.opt.Update == nil {
		httpError(w, http.StatusNotFound, "no firmware updates here")
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(updateReadTimeout))
	rc.SetWriteDeadline(time.Now().Add(updateReadTimeout + s.opt.WriteTimeout))
	code, body := s.opt.Update(r.Context(), r.Body, user, clientIP(r))
	writeJSON(w, code, body)
}

// maxAuditLimit bounds one answer of /api/v1/audit.
const maxAuditLimit = 10000

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	if s.opt.Audit == nil {
		httpError(w, http.StatusNotFound, "no audit trail")
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			httpError(w, http.StatusBadRequest, "limit is a positive number")
			return
		}
		limit = min(n, maxAuditLimit)
	}
	recs, err := s.opt.Audit(limit)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSONz(w, r, recs)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.b.Healthy(); err != nil {
		http.Error(w, "unhealthy: "+err.Error()+"\n", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// events streams server-sent events. A stream is exempt from the server's write timeout, which
// would end it (net/http lifts the read deadline itself while a handler runs), but each event
// must be written within WriteTimeout: a client that stops reading is cut off instead of
// holding its goroutine forever. Events a slow client has not taken are dropped by the
// backend's bounded queue, never buffered here.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	release, why := s.streams.Admit(addrOf(r))
	if why != "" {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many event streams; the page works without them\n", http.StatusServiceUnavailable)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	ch, cancel := s.b.Subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(format string, args ...any) bool {
		rc.SetWriteDeadline(time.Now().Add(s.opt.WriteTimeout))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// Tell the browser to reconnect quickly after a daemon restart.
	if !send("retry: 2000\n\n") {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			if !send(": ping\n\n") {
				return
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			b, err := json.Marshal(ev.Data)
			if err != nil {
				continue
			}
			if !send("event: %s\ndata: %s\n\n", ev.Type, b) {
				return
			}
		}
	}
}

// addrOf is the request's client address as the connection gates count it.
func addrOf(r *http.Request) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return a
	}
	return &net.TCPAddr{}
}

// streamCollector exports the /events streams.
type streamCollector struct{ s *Server }

var (
	streamsOpenDesc    = prometheus.NewDesc("rackwatch_event_streams", "Server-sent event streams (/events) open now.", nil, nil)
	streamsRefusedDesc = prometheus.NewDesc("rackwatch_event_streams_refused_total", "Server-sent event streams refused (503) because their address or the server was at its cap.", []string{"reason"}, nil)
)

func (c streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsOpenDesc
	ch <- streamsRefusedDesc
}

func (c streamCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.s.streams
	ch <- prometheus.MustNewConstMetric(streamsOpenDesc, prometheus.GaugeValue, float64(g.Open()))
	for _, r := range []netlimit.Reason{netlimit.PerAddress, netlimit.Total} {
		ch <- prometheus.MustNewConstMetric(streamsRefusedDesc, prometheus.CounterValue, float64(g.Refused(r)), string(r))
	}
}

// htmlHeaders: the page loads nothing from anywhere, and only its own nonce'd script runs.
func (s *Server) htmlHeaders(w http.ResponseWriter, nonce string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	d := build(s.b.Status(), now)
	d.Range = "1h"
	span := time.Hour
	if r.URL.Query().Get("range") == "24h" {
		d.Range, span = "24h", 24*time.Hour
	}
	d.CanLogin = s.users != nil
	if ses, ok := s.session(r); ok {
		d.User, d.CSRF = ses.user, ses.csrf
	}
	d.Nonce = randToken()[:22]
	s.htmlHeaders(w, d.Nonce)
	live := r.URL.Query().Get("part") == "live"
	if !live {
		d.Charts = s.charts(d.St, now, span)
	}
	// The page must stay well under 100 KB on the wire even with 24 h charts.
	out, done := compressed(w, r)
	defer done()
	if err := renderPage(out, d, live); err != nil {
		s.log.Warn("web: render page", "err", err)
	}
}

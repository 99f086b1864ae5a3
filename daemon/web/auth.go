package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rackwatch/rackwatch/internal/netlimit"
)

// Browser logins. A login gives a session cookie (HttpOnly, SameSite=Strict, Secure under
// TLS); every POST of a session must carry the session's CSRF token (form field "csrf" or
// header X-CSRF-Token). API clients such as curl may still use HTTP Basic, but only when the
// request does not come from a browser (no Origin or Sec-Fetch-Site header): a browser caches
// Basic credentials and sends them on its own, which is exactly what CSRF exploits.

const (
	sessionCookie = "rw_session"
	loginCookie   = "rw_login" // the pre-session CSRF token of the login form
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
	sessionTTL    = 12 * time.Hour // an on-call shift
	maxSessions   = 1000
)

type session struct {
	id, user, csrf string
	created        time.Time
	expires        time.Time
}

// sessions live in memory: a daemon restart logs everybody out, which is acceptable for a
// rack appliance and keeps secrets off the flash.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: sessionTTL, now: now}
}

// A config reload (SIGHUP, or "reload" over MQTT) makes a new Server; the operator who is
// logged in in the middle of an incident must stay logged in. Servers with the same listen
// address and users file share their sessions; a user removed from the file loses them
// (Server.session checks).
var (
	sharedMu       sync.Mutex
	sharedSessions = map[string]*sessions{}
)

func sessionsFor(key string) *sessions {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	ss, ok := sharedSessions[key]
	if !ok {
		ss = newSessions(time.Now)
		sharedSessions[key] = ss
	}
	return ss
}

func randToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) create(user string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	ss.pruneLocked(now)
	if len(ss.m) >= maxSessions {
		// Drop the oldest sessions rather than refuse a login at 3 a.m.
		all := make([]*session, 0, len(ss.m))
		for _, s := range ss.m {
			all = append(all, s)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].created.Before(all[j].created) })
		for _, s := range all[:len(all)-maxSessions+1] {
			delete(ss.m, s.id)
		}
	}
	s := &session{id: randToken(), user: user, csrf: randToken(), created: now, expires: now.Add(ss.ttl)}
	ss.m[s.id] = s
	return s
}

func (ss *sessions) get(id string) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[id]
	if !ok {
		return session{}, false
	}
	if !ss.now().Before(s.expires) {
		delete(ss.m, id)
		return session{}, false
	}
	return *s, true
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

func (ss *sessions) pruneLocked(now time.Time) {
	for id, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, id)
		}
	}
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// fromBrowser reports whether a browser made the request: browsers send Sec-Fetch-Site (and
// Origin on POST); curl and API clients send neither.
func fromBrowser(r *http.Request) bool {
	return r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Origin") != ""
}

func tokenEqual(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (s *Server) secure(r *http.Request) bool { return r.TLS != nil || s.tls != nil }

// session returns the request's valid session, if any.
func (s *Server) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return session{}, false
	}
	ses, ok := s.sess.get(c.Value)
	if !ok || !s.users.Has(ses.user) {
		return session{}, false
	}
	return ses, true
}

// basicUser checks HTTP Basic credentials of a non-browser client, rate-limited like the
// login form. It returns the user, or an HTTP status and message when it refuses (a 429 with
// its Retry-After already set on w).
func (s *Server) basicUser(w http.ResponseWriter, r *http.Request) (user string, code int, msg string) {
	name, pass, ok := r.BasicAuth()
	if !ok || fromBrowser(r) {
		return "", http.StatusUnauthorized, "login needed"
	}
	if d := s.blocked(w, r, name); d > 0 {
		return "", http.StatusTooManyRequests, fmt.Sprintf("too many failed logins: try again in %v", d.Round(time.Second))
	}
	if !s.users.Check(name, pass) {
		s.failed(r, name)
		return "", http.StatusUnauthorized, "wrong user name or password"
	}
	s.succeeded(r, name)
	return name, 0, ""
}

// blocked is how long the request's address must wait before it may try user's password
// again; when it must, the answer's Retry-After says so.
func (s *Server) blocked(w http.ResponseWriter, r *http.Request, user string) time.Duration {
	addr := netlimit.Key(addrOf(r))
	d := max(s.ipLimit.Wait(addr), s.pairLimit.Wait(addr+"\x00"+user))
	if d > 0 {
		s.throttled.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
	return d
}

func (s *Server) failed(r *http.Request, user string) {
	addr := netlimit.Key(addrOf(r))
	s.ipLimit.Fail(addr)
	s.pairLimit.Fail(addr + "\x00" + user)
	s.log.Warn("web: failed login", "user", user, "client", clientIP(r))
	s.onLogin(user, clientIP(r), false)
}

// succeeded forgets the failures of this address with this user only: a valid account of
// one's own must not wipe the address's count of guesses at other users.
func (s *Server) succeeded(r *http.Request, user string) {
	s.pairLimit.OK(netlimit.Key(addrOf(r)) + "\x00" + user)
}

// needLogin guards a control action: a session with its CSRF token, or (API clients only)
// HTTP Basic. Without a users file no control action is possible from the web.
func (s *Server) needLogin(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.users == nil {
			httpError(w, http.StatusForbidden, "control actions need web.users_file in the config")
			return
		}
		if ses, ok := s.session(r); ok {
			tok := r.Header.Get(csrfHeader)
			if tok == "" && isForm(r) {
				r.Body = http.MaxBytesReader(w, r.Body, 8192)
				tok = r.PostFormValue(csrfField)
			}
			if !tokenEqual(tok, ses.csrf) {
				httpError(w, http.StatusForbidden, "missing or wrong CSRF token")
				return
			}
			h(w, r, ses.user)
			return
		}
		user, code, msg := s.basicUser(w, r)
		if code != 0 {
			if code == http.StatusUnauthorized && !fromBrowser(r) {
				w.Header().Set("WWW-Authenticate", `Basic realm="rackwatch"`)
			}
			httpError(w, code, msg)
			return
		}
		h(w, r, user)
	}
}

func isForm(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// requireLogin wraps the whole mux when web.require_login is set: only /healthz, /metrics
// (monitoring) and the login page are open.
func (s *Server) requireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/metrics", "/login":
			next.ServeHTTP(w, r)
			return
		}
		if _, ok := s.session(r); ok {
			next.ServeHTTP(w, r)
			return
		}
		if s.users != nil {
			if _, _, ok := r.BasicAuth(); ok {
				if _, code, msg := s.basicUser(w, r); code != 0 {
					httpError(w, code, msg)
					return
				}
				next.ServeHTTP(w, r)
				return
			}
		}
		if r.Method == http.MethodGet && (r.URL.Path == "/" || strings.Contains(r.Header.Get("Accept"), "text/html")) {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !fromBrowser(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="rackwatch"`)
		}
		httpError(w, http.StatusUnauthorized, "login needed")
	})
}

// safeNext keeps a post-login redirect on this site: it is next if next is a local absolute
// path, else "/". Browsers drop tabs and newlines from a Location, read a backslash as a
// slash and "//host" as another site, and proxies may decode it once more; so a path is local
// only if, as written and as every percent-decoding of it reads, it starts with exactly one
// "/" and has no "//", no backslash, no control character and no scheme.
func safeNext(next string) string {
	p := next
	for range 3 {
		if !localPath(p) {
			return "/"
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			return "/"
		}
		if d == p {
			return next
		}
		p = d
	}
	return "/" // still decoding after three rounds: no link of ours looks like that
}

func localPath(p string) bool {
	if len(p) == 0 || p[0] != '/' || strings.Contains(p, "//") || strings.ContainsRune(p, '\\') {
		return false
	}
	if !utf8.ValidString(p) {
		return false
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return false
		}
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil
}

type loginData struct {
	Site, Node string
	Next       string
	CSRF       string
	Error      string
	NoUsers    bool
	Nonce      string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	tok := randToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login", MaxAge: 3600, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	st := s.b.Status()
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	d := loginData{Site: st.Site, Node: st.Node, Next: safeNext(next), CSRF: tok, Error: msg, NoUsers: s.users == nil, Nonce: randToken()[:22]}
	s.htmlHeaders(w, d.Nonce)
	w.WriteHeader(code)
	if err := renderLogin(w, d); err != nil {
		s.log.Warn("web: render login page", "err", err)
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8192)
	if err := r.ParseForm(); err != nil {
		httpError(w, http.StatusBadRequest, "bad form")
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !tokenEqual(r.PostFormValue(csrfField), c.Value) {
		httpError(w, http.StatusForbidden, "missing or wrong CSRF token: reload the login page")
		return
	}
	if s.users == nil {
		s.renderLogin(w, r, http.StatusForbidden, "No users are configured (web.users_file).")
		return
	}
	name, pass := r.PostFormValue("user"), r.PostFormValue("password")
	if d := s.blocked(w, r, name); d > 0 {
		s.renderLogin(w, r, http.StatusTooManyRequests, fmt.Sprintf("Too many failed logins. Try again in %v.", d.Round(time.Second)))
		return
	}
	if !s.users.Check(name, pass) {
		s.failed(r, name)
		s.renderLogin(w, r, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	s.succeeded(r, name)
	ses := s.sess.create(name)
	s.log.Info("web: login", "user", name, "client", clientIP(r))
	s.onLogin(name, clientIP(r), true)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: ses.id, Path: "/", Expires: ses.expires, MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: "/login", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	ses, ok := s.session(r)
	if ok {
		tok := r.Header.Get(csrfHeader)
		if tok == "" {
			r.Body = http.MaxBytesReader(w, r.Body, 8192)
			tok = r.PostFormValue(csrfField)
		}
		if !tokenEqual(tok, ses.csrf) {
			httpError(w, http.StatusForbidden, "missing or wrong CSRF token")
			return
		}
		s.sess.drop(ses.id)
		s.log.Info("web: logout", "user", ses.user)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

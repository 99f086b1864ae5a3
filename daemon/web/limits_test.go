package web_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// openRedirects are next values that have led logins elsewhere, on one browser or another.
var openRedirects = []string{
	"//evil.example", "//evil.example/", "///evil.example", "////evil.example",
	"/\\evil.example", "\\\\evil.example", "/\\/evil.example", "\\/evil.example",
	"/\t/evil.example/", "/%09/evil.example/", "/\n/evil.example", "/%0a/evil.example", "/\r/evil.example",
	"/%0d/evil.example", " //evil.example", "\x01//evil.example", "/\x00/evil.example", "/%00/evil.example",
	"https://evil.example", "HTTPS://evil.example", "http:evil.example", "http:/\\evil.example",
	"https:evil.example", "//evil.example@rack", "/@evil.example", "evil.example", "./evil.example",
	"javascript:alert(1)", "JaVaScRiPt:alert(1)", "javascript://%0aalert(1)", "data:text/html,<script>x</script>",
	"%2F%2Fevil.example", "/%2F/evil.example", "/%2f%2fevil.example", "/%5Cevil.example", "/%5cevil.example",
	"%5C%5Cevil.example", "/%252F/evil.example", "/%25252F%25252Fevil.example", "/.//evil.example",
	"/..//evil.example", "/x/..//evil.example", "/%2e%2e//evil.example", "/\u3000/evil.example",
	"/\u2028/evil.example", "/\u0085/evil.example", "/%C2%85/evil.example", "/%ff/evil.example",
	"/x\r\nLocation: https://evil.example", "/?next=//evil.example", "/login?next=https://evil.example",
}

// browserResolve reads a Location as a browser does (the WHATWG URL parser): leading and
// trailing C0 controls and spaces trimmed, tabs and newlines dropped anywhere, a backslash
// read as a slash; and then as a proxy that percent-decodes it once would pass it on.
func browserResolve(base *url.URL, loc string) []*url.URL {
	var out []*url.URL
	for _, l := range []string{loc, percentDecoded(loc)} {
		l = strings.TrimFunc(l, func(r rune) bool { return r <= ' ' })
		l = strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(l)
		u, err := url.Parse(l)
		if err != nil {
			continue // no browser follows it either
		}
		out = append(out, base.ResolveReference(u))
	}
	return out
}

func percentDecoded(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

// TestOpenRedirect: whatever next a login carries, the redirect after it stays on the site.
func TestOpenRedirect(t *testing.T) {
	s := runSite(t, siteOpts{})
	base, _ := url.Parse(s.URL + "/login")
	c := newClient(t, s.URL, true)
	for _, next := range append(openRedirects, "/?range=24h", "/api/v1/status") {
		_, body := c.get("/login?next=" + url.QueryEscape(next))
		m := csrfRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("next=%q: no csrf field in the login form", next)
		}
		// Through the transport: Go's client refuses some of these Locations before a test
		// could look at them.
		req, _ := http.NewRequest("POST", s.URL+"/login", strings.NewReader(url.Values{"csrf": {m[1]}, "user": {operator}, "password": {password}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Origin", s.URL)
		for _, ck := range c.c.Jar.Cookies(base) {
			req.AddCookie(ck)
		}
		resp, err := c.c.Transport.RoundTrip(req)
		if err != nil {
			t.Errorf("next=%q: %v", next, err) // a NUL in the Location, say
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("next=%q: login %d", next, resp.StatusCode)
		}
		loc := resp.Header.Get("Location")
		for _, u := range browserResolve(base, loc) {
			if u.Scheme != base.Scheme || u.Host != base.Host {
				t.Errorf("next=%q: Location %q leaves the site (to %s)", next, loc, u)
			}
		}
		if strings.ContainsFunc(loc, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Errorf("next=%q: Location %q has a control character", next, loc)
		}
	}
	// A local path is kept as it is.
	_, body := c.get("/login")
	resp, _ := c.postForm("/login", url.Values{"csrf": {csrfRE.FindStringSubmatch(body)[1]}, "user": {operator}, "password": {password}, "next": {"/?range=24h"}}, nil)
	if loc := resp.Header.Get("Location"); loc != "/?range=24h" {
		t.Errorf("next=/?range=24h: Location %q", loc)
	}
}

func retryAfter(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("%s: 429 with Retry-After %q, want seconds", what, resp.Header.Get("Retry-After"))
	}
}

// TestLoginThrottlePerAddressAndUser: five wrong passwords for a user from one address lock
// that user out at that address only (429 with Retry-After, even with the right password),
// through the form and through Basic; the same user logs in from another address, and
// another user from the same address.
func TestLoginThrottlePerAddressAndUser(t *testing.T) {
	s := runSite(t, siteOpts{})
	waitPolled(t, s)
	attacker, user := newClientFrom(t, s.URL, true, "127.0.0.2"), newClientFrom(t, s.URL, true, "127.0.0.1")
	try := func(c *client, name, pass string) *http.Response {
		_, body := c.get("/login")
		resp, _ := c.postForm("/login", url.Values{"csrf": {csrfRE.FindStringSubmatch(body)[1]}, "user": {name}, "password": {pass}}, nil)
		return resp
	}
	for i := range 5 {
		if resp := try(attacker, "night", "guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := try(attacker, "night", password)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("right password after 5 failures from the same address: %d, want 429", resp.StatusCode)
	} else {
		retryAfter(t, resp, "form login")
	}
	if resp := try(user, "night", password); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the same user from another address: %d, want 303", resp.StatusCode)
	}
	if resp := try(attacker, operator, password); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another user from the attacking address: %d, want 303", resp.StatusCode)
	}

	// Basic, from curl: the same.
	apiAttacker, apiUser := newClientFrom(t, s.URL, false, "127.0.0.2"), newClientFrom(t, s.URL, false, "127.0.0.1")
	relay := func(c *client, pass string) *http.Response {
		resp, _ := c.do("POST", "/api/v1/relays/genset", strings.NewReader(`{"state":"auto"}`),
			map[string]string{"Authorization": "Basic " + basic(operator, pass), "Content-Type": "application/json"})
		return resp
	}
	for i := range 5 {
		if resp := relay(apiAttacker, "guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Basic failure %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp = relay(apiAttacker, password)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("Basic, right password after 5 failures from the same address: %d, want 429", resp.StatusCode)
	} else {
		retryAfter(t, resp, "Basic")
	}
	if resp := relay(apiUser, password); resp.StatusCode != http.StatusOK {
		t.Errorf("Basic, the same user from another address: %d, want 200", resp.StatusCode)
	}
	if n := testpeer.Metric(t, s.URL, "rackwatch_logins_throttled_total", map[string]string{"server": "web"}); n < 2 {
		t.Errorf("rackwatch_logins_throttled_total = %v, want at least 2", n)
	}
}

// openStream starts GET /events from src over a raw connection and returns it once the
// stream has begun, or the status of the refusal.
func openStream(t *testing.T, addr, src string, rcvbuf int) (net.Conn, *http.Response) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 20 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
				// Small segments, so that the server's send buffer (sized from the segment
				// size, which on lo is 64 KB) is small too and fills in seconds.
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
			})
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: rack\r\nAccept: text/event-stream\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	return c, resp
}

// TestEventStreams: one address gets at most 8 streams, everyone together max_event_streams
// (then 503 with Retry-After); a client that stops reading loses events, counted, and is cut
// off after write_timeout instead of holding its stream.
func TestEventStreams(t *testing.T) {
	s := runSite(t, siteOpts{webExtra: "max_event_streams: 10\nwrite_timeout: 6s\nread_timeout: 3s"})
	waitPolled(t, s)
	addr := strings.TrimPrefix(s.URL, "http://")
	for i := range 8 {
		if _, resp := openStream(t, addr, "127.0.0.1", 0); resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i+1, resp.StatusCode)
		}
	}
	_, resp := openStream(t, addr, "127.0.0.1", 0)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("9th stream from one address: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	opened := time.Now()
	good, resp := openStream(t, addr, "127.0.0.2", 0)
	if resp.StatusCode != 200 {
		t.Fatalf("a stream from another address: %d", resp.StatusCode)
	}
	// A reader that never reads, with a tiny receive window: the site's readings (40 a
	// second) back up, its queue of 64 overflows while a write stays blocked for
	// write_timeout, and then it is cut off.
	if _, resp := openStream(t, addr, "127.0.0.3", 1024); resp.StatusCode != 200 {
		t.Fatalf("the slow stream: %d", resp.StatusCode)
	}
	if n := testpeer.Metric(t, s.URL, "rackwatch_event_streams", nil); n != 10 {
		t.Errorf("rackwatch_event_streams = %v, want 10", n)
	}
	// A stream that is read lives on past write_timeout and read_timeout; write_timeout bounds each event, not the
	// stream.
	br := bufio.NewReader(resp.Body)
	for time.Since(opened) < 8*time.Second {
		good.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("a stream that is read, %v after it opened: %v", time.Since(opened).Round(time.Second), err)
		}
	}
	testpeer.Eventually(t, 90*time.Second, "the slow stream cut off, having dropped events", func() bool {
		return testpeer.Metric(t, s.URL, "rackwatch_event_streams", nil) <= 9 && testpeer.Metric(t, s.URL, "rackwatch_events_dropped_total", nil) > 0
	})
}

// TestTimeouts: an idle keep-alive connection is closed after idle_timeout, and a client
// that never finishes its headers after read_header_timeout.
func TestTimeouts(t *testing.T) {
	s := runSite(t, siteOpts{webExtra: "idle_timeout: 1s\nread_header_timeout: 1s"})
	addr := strings.TrimPrefix(s.URL, "http://")
	closedWithin := func(c net.Conn, what string) {
		t.Helper()
		// 20 s: far above the 1 s under test, below the 30 s read_timeout that would
		// otherwise close it too.
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still open after 20 s", what)
		}
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: rack\r\n\r\n")
	r := bufio.NewReader(idle)
	idle.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.Close {
		t.Fatalf("keep-alive request: %v, close %v", err, resp != nil && resp.Close)
	}
	io.Copy(io.Discard, resp.Body)
	closedWithin(idle, "an idle keep-alive connection")

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: rack\r\n") // and never the blank line
	closedWithin(slow, "a request whose headers never end")
}

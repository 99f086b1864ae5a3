package web_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzHandlers sends whatever a hostile client might to every route of a running site's web
// server: any method, path, query string, form or JSON body, cookie and header. The server
// answers every request (no panic, which net/http would turn into a dropped connection) and
// never with a 500.
func FuzzHandlers(f *testing.F) {
	s := runSite(f, siteOpts{})
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	routes := []string{"/", "/api/v1/status", "/api/v1/incidents", "/api/v1/kpis", "/api/v1/history",
		"/api/v1/incidents/rack1-1/ack", "/api/v1/relays/genset", "/metrics", "/healthz", "/login", "/logout", "/api/v1/audit"}
	f.Add(uint8(0), uint8(1), "state=all", "", "", "")
	f.Add(uint8(0), uint8(4), "device=inlet-a&metric=temperature&since=1h", "", "", "")
	f.Add(uint8(0), uint8(4), "device=%00&metric=..&since=-99999999h", "", "", "")
	f.Add(uint8(1), uint8(9), "next=//evil.example/", "user=operator&password=x&next=%2F%2Fevil", "", "application/x-www-form-urlencoded")
	f.Add(uint8(1), uint8(6), "", `{"state":"on"}`, "rackwatch_session=AAAA; rackwatch_csrf=BBBB", "application/json")
	f.Add(uint8(1), uint8(6), "", `{"state":`, "", "application/json")
	f.Add(uint8(1), uint8(5), "", "", "rackwatch_session="+strings.Repeat("A", 5000), "")
	f.Add(uint8(2), uint8(2), "state=%ZZ&state=open", "", "", "")
	f.Fuzz(func(t *testing.T, method, route uint8, query, body, cookie, ctype string) {
		methods := []string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"}
		u := s.URL + routes[int(route)%len(routes)]
		if query != "" {
			u += "?" + query
		}
		if _, err := url.Parse(u); err != nil {
			return // not a request a client can send
		}
		req, err := http.NewRequest(methods[int(method)%len(methods)], u, strings.NewReader(body))
		if err != nil {
			return
		}
		if !validHeader(cookie) || !validHeader(ctype) {
			return // net/http refuses to send it
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: no answer: %v", req.Method, u, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s %s (cookie %q, %q body %q): %s", req.Method, u, cookie, ctype, body, resp.Status)
		}
	})
}

// validHeader: net/http sends a header value only without control characters (tab aside).
func validHeader(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

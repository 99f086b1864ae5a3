package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	_ "github.com/rackwatch/rackwatch/sensors/sim"
)

// The tests run a whole site in-process (sim devices, real rules, incidents, uplink, web
// server) and talk to it over HTTP, as an operator's browser or curl would.

const (
	operator = "operator"
	password = "correct horse battery staple"
)

// testSite is a running in-process site.
type testSite struct {
	*site.Site
	URL string
}

type siteOpts struct {
	mqtt         string // broker URL, "" for no uplink
	requireLogin bool
	listen       string // default 127.0.0.1:0
	tlsCert      string
	tlsKey       string
	webExtra     string // more web: keys, one "key: value" a line
}

// siteYAML is the demo site's shape with short polls and no script: the tests drive the sim
// devices themselves.
func siteYAML(t testing.TB, o siteOpts) string {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	var lines []string
	for _, u := range []string{operator, "night"} {
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	if err := os.WriteFile(users, []byte("# test users\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	mqtt := "mqtt:\n  telemetry_interval: 1s\n"
	if o.mqtt != "" {
		mqtt += fmt.Sprintf("  brokers: [%q]\n", o.mqtt)
	}
	return fmt.Sprintf(`site: test
node: rack1
data_dir: %s
web:
  listen: %s
  users_file: %s
  require_login: %v
  tls_cert: %q
  tls_key: %q
%s%s
devices:
  - {id: ups1, driver: sim.ups, description: "UPS A", poll: 200ms}
  - {id: inlet-a, driver: sim.env, poll: 200ms, values: {temperature: 23.4, humidity: 41}}
  - {id: inlet-b, driver: sim.env, poll: 200ms, values: {temperature: 23.9, humidity: 43}}
  - {id: feed-a, driver: sim.power, poll: 200ms, values: {voltage: 229.8, current: 6.2, power: 1425}}
  - {id: door, driver: sim.contact, poll: 200ms}
  - {id: leak, driver: sim.contact, poll: 200ms}
  - {id: genset, driver: sim.relay, safe_state: "off", poll: 200ms}
  - {id: crac2, driver: sim.relay, safe_state: "off", poll: 200ms}
rules:
  - {name: inlet-a-temp, device: inlet-a, metric: temperature, warn_above: 27, crit_above: 32, hysteresis: 0.5}
  - {name: inlet-b-temp, device: inlet-b, metric: temperature, warn_above: 27, crit_above: 32, hysteresis: 0.5}
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB, severity: critical}
  - {name: door-open, device: door, metric: contact, equals: 1, severity: warning}
  - {name: leak, device: leak, metric: contact, equals: 1, severity: critical}
failover:
  power:
    ups: [ups1]
    generator_relay: genset
    generator_timeout: 60s
  cooling:
    sensors: [inlet-a, inlet-b]
    backup_relay: crac2
    on_above: 28
    off_below: 26
`, filepath.Join(dir, "data"), o.listen, users, o.requireLogin, o.tlsCert, o.tlsKey, indent(o.webExtra), mqtt)
}

func indent(lines string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}

var deviceIDs = []string{"ups1", "inlet-a", "inlet-b", "feed-a", "door", "leak", "genset", "crac2"}

// runSite runs a site in-process until the test ends.
func runSite(t testing.TB, o siteOpts) *testSite {
	t.Helper()
	s, _ := startSite(t, siteYAML(t, o))
	return s
}

// startSite runs the site that yaml describes; stop (also called when the test ends) stops
// it and waits until it has.
func startSite(t testing.TB, yaml string) (*testSite, func()) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan *site.Site, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- site.Run(ctx, cfg, site.Options{Version: "test", Ready: func(s *site.Site) { ready <- s }})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("site: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("site did not stop within 30 s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case s := <-ready:
		return &testSite{Site: s, URL: "http://" + s.WebAddr().String()}, stop
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("site did not start in 30 s")
	}
	return nil, nil
}

// client is a browser-like HTTP client: a cookie jar, no automatic redirects (the tests look
// at them), and the headers a browser sends on same-origin requests.
type client struct {
	t       *testing.T
	base    string
	c       *http.Client
	browser bool
}

func newClient(t *testing.T, base string, browser bool) *client {
	return newClientFrom(t, base, browser, "")
}

// newClientFrom is newClient connecting from the loopback address src ("" for any): Linux
// routes all of 127/8 to lo, so 127.0.0.2 is another host to the server.
func newClientFrom(t *testing.T, base string, browser bool, src string) *client {
	jar, _ := cookiejar.New(nil)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if src != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 20 * time.Second}
		tr.DialContext = d.DialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: base, browser: browser, c: &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.browser {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		if method == http.MethodPost {
			req.Header.Set("Origin", c.base)
		}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *client) get(path string) (*http.Response, string) { return c.do("GET", path, nil, nil) }

func (c *client) postForm(path string, v url.Values, hdr map[string]string) (*http.Response, string) {
	c.t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, x := range hdr {
		h[k] = x
	}
	return c.do("POST", path, strings.NewReader(v.Encode()), h)
}

var csrfRE = regexp.MustCompile(`name="csrf" (?:content|value)="([^"]+)"`)

// login logs c in through the form and returns the session's CSRF token.
func (c *client) login(user, pass string) string {
	c.t.Helper()
	resp, body := c.get("/login")
	if resp.StatusCode != 200 {
		c.t.Fatalf("GET /login: %d", resp.StatusCode)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no csrf field in the login form:\n%s", body)
	}
	resp, body = c.postForm("/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {pass}, "next": {"/"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("POST /login: %d %s", resp.StatusCode, body)
	}
	resp, body = c.get("/")
	m = csrfRE.FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		c.t.Fatalf("after login, GET / gave %d and no CSRF token", resp.StatusCode)
	}
	return m[1]
}

// demoYAML is the built-in demo site (daemon/demo.yaml) made fit for a test: the same
// devices, rules and policies, but no story (the test drives the sim devices), short polls,
// private ports and folders, and the uplink pointed at the test's broker.
func demoYAML(t *testing.T, o siteOpts) (yml string, ids []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("demo.yaml: %v", err)
	}
	// The users file and data folder of the test's own config.
	var own map[string]any
	if err := yaml.Unmarshal([]byte(siteYAML(t, o)), &own); err != nil {
		t.Fatal(err)
	}
	doc["data_dir"] = own["data_dir"]
	doc["web"] = own["web"]
	doc["mqtt"] = own["mqtt"]
	doc["nut"].(map[string]any)["listen"] = fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	for _, d := range doc["devices"].([]any) {
		dm := d.(map[string]any)
		delete(dm, "script")
		delete(dm, "loop")
		dm["poll"] = "200ms"
		ids = append(ids, dm["id"].(string))
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), ids
}

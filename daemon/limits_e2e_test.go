package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// raiseNoFile makes sure this process may hold need file descriptors.
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= need {
		return
	}
	if rl.Max < need {
		t.Fatalf("this test holds %d connections; the hard RLIMIT_NOFILE is %d", need, rl.Max)
	}
	rl.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
}

// keepAlive opens a connection from src, has one request answered on it and returns it,
// idle and kept alive; nil when the daemon closed it instead of answering.
func keepAlive(src, addr string) net.Conn {
	c, err := testpeer.DialFrom(src, addr)
	if err != nil {
		return nil
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: rack\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		c.Close()
		return nil
	}
	c.SetDeadline(time.Time{})
	return c
}

// stillOpen reports whether the daemon has not closed c (a read finds nothing to read rather
// than the end of the stream).
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestOneAddressCannotStarveTheOthers: the daemon as a process. One address (127.0.0.2)
// opens 3,000 keep-alive connections and leaves them idle, and opens NUT connection after
// NUT connection; it keeps only its share of each, while another address (127.0.0.1) still
// gets /healthz, the page and upsc answered. The web idle timeout is set long, so that only
// the per-address cap can cut the idle connections.
func TestOneAddressCannotStarveTheOthers(t *testing.T) {
	upsc := testpeer.Require(t, "upsc", "nut-client")
	const conns, webShare, nutShare = 3000, 64, 16 // the defaults of max_conns_per_addr
	raiseNoFile(t, conns+1024)
	bin := buildDaemon(t)
	dir := t.TempDir()
	webPort, nutPort := testpeer.FreePort(t), testpeer.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d", idle_timeout: 10m}
nut: {listen: "127.0.0.1:%d"}
devices:
  - {id: ups1, driver: sim.ups, poll: 200ms}
`, dir, webPort, nutPort))
	startDaemon(t, bin, cfg)
	web := fmt.Sprintf("127.0.0.1:%d", webPort)
	nutAddr := fmt.Sprintf("127.0.0.1:%d", nutPort)
	base := "http://" + web
	testpeer.WaitTCP(t, web, 60*time.Second)
	testpeer.WaitTCP(t, nutAddr, 60*time.Second)
	ups := func() error {
		out, err := exec.Command(upsc, "ups1@"+nutAddr, "ups.status").Output()
		if err == nil && strings.TrimSpace(string(out)) == "" {
			err = errors.New("no ups.status")
		}
		return err
	}
	testpeer.Eventually(t, 60*time.Second, "upsc reads ups1", func() bool { return ups() == nil })

	// The greedy address: 3,000 web connections, a few at a time, each left idle after one
	// answered request.
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if c := keepAlive("127.0.0.2", web); c != nil {
					mu.Lock()
					held = append(held, c)
					mu.Unlock()
				}
			}
		}()
	}
	for range conns {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	// And NUT connections, each asked NETVER, all held.
	nutHeld := testpeer.HoldNUT(t, "127.0.0.2", nutAddr, 100)
	t.Logf("127.0.0.2 got %d of %d web connections answered, %d of 100 NUT", len(held), conns, nutHeld)

	// Meanwhile another address is served, on fresh connections.
	get := func(path string) int {
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(base + path)
		if err != nil {
			t.Errorf("GET %s from 127.0.0.1 while 127.0.0.2 holds its share: %v", path, err)
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if code := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code := get("/"); code != 200 {
		t.Errorf("the page: %d", code)
	}
	if err := ups(); err != nil {
		t.Errorf("upsc from 127.0.0.1 while 127.0.0.2 holds its share: %v", err)
	}
	testpeer.Eventually(t, time.Minute, fmt.Sprintf("127.0.0.2's web connections cut down to %d", webShare), func() bool {
		open := 0
		for _, c := range held {
			if stillOpen(c) {
				open++
			}
		}
		return open <= webShare
	})
	if nutHeld > nutShare {
		t.Errorf("127.0.0.2 holds %d NUT connections, want at most %d", nutHeld, nutShare)
	}

	if n := testpeer.Metric(t, base, "rackwatch_connections_refused_total", map[string]string{"server": "web", "reason": "per_address"}); n < conns-webShare {
		t.Errorf("web connections refused per address: %v, want at least %d", n, conns-webShare)
	}
	if n := testpeer.Metric(t, base, "rackwatch_connections_open", map[string]string{"server": "web"}); n > webShare+8 {
		t.Errorf("web connections open: %v, want about %d", n, webShare)
	}
	if n := testpeer.Metric(t, base, "rackwatch_connections_refused_total", map[string]string{"server": "nut", "reason": "per_address"}); n < 100-nutShare {
		t.Errorf("NUT connections refused per address: %v, want at least %d", n, 100-nutShare)
	}
}

package uplink

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// cutter is a TCP proxy to a broker that can cut every connection through it at once, in
// the middle of whatever is in flight: PUBLISHes the broker got whose PUBACK never comes back.
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			c.wg.Add(2)
			go func() { defer c.wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer c.wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); c.cut(); c.wg.Wait() })
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.conns {
		n.Close()
	}
	c.conns = nil
}

// TestCutConnections cuts the uplink's connection every few hundred milliseconds while it
// publishes: messages whose PUBACK was lost are sent again on the next connection, so the
// subscriber sees every seq.
func TestCutConnections(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "cut-sub")
	proxy := newCutter(t, m.Addr)
	db := tempDB(t)
	u := start(t, db, testOptions("tcp://"+proxy.ln.Addr().String()))
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	p := publish(t, u.Uplink)
	for i := 0; i < 8; i++ {
		// Wait for the connection after the last cut, then for traffic on it: a token
		// acknowledged just before a cut may still be counted after it, so traffic alone
		// does not prove that the cut connection was replaced.
		testpeer.Eventually(t, 20*time.Second, "a new connection", func() bool { return u.Status().Connects > uint64(i) })
		n := u.Status().Published
		testpeer.Eventually(t, 20*time.Second, "traffic before the cut", func() bool { return u.Status().Published > n+5 })
		proxy.cut()
	}
	p.halt()
	testpeer.Eventually(t, 30*time.Second, "queue drained", func() bool { return u.Status().Connected && u.Status().Queued == 0 })
	checkComplete(t, db, sub)
	if c := u.Status().Connects; c < 8 {
		t.Errorf("only %d connections for 8 cuts", c)
	}
}

package testpeer

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// DialFrom connects to addr over TCP from the loopback address src. Linux routes all of
// 127/8 to lo, so 127.0.0.2 is another host as far as a server's per-address limits go.
func DialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 20 * time.Second}
	return d.Dial("tcp", addr)
}

// HoldNUT opens n connections from src to the NUT server at addr, one after the other, asks
// each NETVER, and keeps every one it opened until the test ends. It returns how many were
// answered: a server that caps connections per address answers only its share.
func HoldNUT(t testing.TB, src, addr string, n int) int {
	t.Helper()
	answered := 0
	for range n {
		c, err := DialFrom(src, addr)
		if err != nil {
			continue // reset at once
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "NETVER\n")
		if l, _ := bufio.NewReader(c).ReadString('\n'); l == "1.3\n" {
			answered++
		}
	}
	return answered
}

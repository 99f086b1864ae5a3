package netlimit

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := NewThrottle(3, func() time.Time { return now })
	for i := 0; i < 2; i++ {
		l.Fail("u")
		if d := l.Wait("u"); d != 0 {
			t.Fatalf("locked after %d failures", i+1)
		}
	}
	l.Fail("u")
	if d := l.Wait("u"); d != 30*time.Second {
		t.Fatalf("after 3 failures wait %v, want 30s", d)
	}
	if d := l.Wait("other"); d != 0 {
		t.Fatal("another key is locked")
	}
	now = now.Add(31 * time.Second)
	if d := l.Wait("u"); d != 0 {
		t.Fatal("still locked after the lock")
	}
	l.Fail("u")
	if d := l.Wait("u"); d != time.Minute {
		t.Fatalf("4th failure: wait %v, want 1m (doubling)", d)
	}
	for i := 0; i < 30; i++ {
		l.Fail("u")
	}
	if d := l.Wait("u"); d != l.Max {
		t.Fatalf("many failures: wait %v, want the cap %v", d, l.Max)
	}
	l.OK("u")
	if d := l.Wait("u"); d != 0 {
		t.Fatal("a success does not clear")
	}
	l.Fail("v")
	l.Fail("v")
	now = now.Add(2 * time.Hour)
	l.Fail("v")
	if d := l.Wait("v"); d != 0 {
		t.Fatal("old failures not forgotten")
	}
	// The table stays bounded under a flood of names.
	for i := 0; i < MaxKeys+10; i++ {
		l.Fail(string(rune(i)) + "x")
	}
	if n := l.Len(); n > MaxKeys {
		t.Fatalf("%d keys kept", n)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:80":             "192.0.2.1",
		"[::ffff:192.0.2.1]:80":    "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:1": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:1":      "2001:db8:1:2::/64",
		"[2001:db8:1:3::9]:1":      "2001:db8:1:3::/64",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := Key(a); got != want {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
}

func tcp(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }

func TestGate(t *testing.T) {
	g := NewGate("connections", 5, 2, nil)
	a1, a2 := tcp("192.0.2.1:1000"), tcp("192.0.2.1:1001")
	r1, why := g.Admit(a1)
	if why != "" {
		t.Fatal(why)
	}
	if _, why := g.Admit(a2); why != "" {
		t.Fatal(why)
	}
	if _, why := g.Admit(tcp("192.0.2.1:1002")); why != PerAddress {
		t.Fatalf("3rd from one address: %q, want per_address", why)
	}
	for i := range 3 {
		if _, why := g.Admit(tcp("192.0.2." + string(rune('2'+i)) + ":1")); why != "" {
			t.Fatalf("another address: %q", why)
		}
	}
	if _, why := g.Admit(tcp("192.0.2.9:1")); why != Total {
		t.Fatalf("6th of 5: %q, want total", why)
	}
	r1()
	r1() // twice is once
	if g.Open() != 4 || g.OpenFrom(a1) != 1 {
		t.Fatalf("after a release: open %d, from a1 %d", g.Open(), g.OpenFrom(a1))
	}
	if _, why := g.Admit(a1); why != "" {
		t.Fatalf("after a release: %q", why)
	}
	if g.Refused(PerAddress) != 1 || g.Refused(Total) != 1 {
		t.Fatalf("refused: %d per address, %d total", g.Refused(PerAddress), g.Refused(Total))
	}
}

// closed reports whether the server side closed c (EOF or reset) rather than kept it open.
func closed(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	t.Fatalf("read: %v", err)
	return false
}

// TestListener: over its cap a connection is closed at once, the others stay served, and a
// closed connection gives its place back.
func TestListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate("connections", 0, 2, nil)
	l := g.Listener(inner)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { // an echo of one line, then hang up
				defer c.Close()
				b := make([]byte, 64)
				n, _ := c.Read(b)
				c.Write(b[:n])
				c.(interface{ CloseWrite() error }).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	dialFrom := func(src string) net.Conn {
		t.Helper()
		c, err := testpeer.DialFrom(src, inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	echo := func(c net.Conn) string {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "hi")
		b, _ := io.ReadAll(c)
		return string(b)
	}
	a, b := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	// Refused so fast that the dial itself may see the reset.
	c, err := testpeer.DialFrom("127.0.0.1", inner.Addr().String())
	if err == nil {
		if !closed(t, c) {
			t.Fatal("a 3rd connection from one address was kept")
		}
		c.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if got := echo(dialFrom("127.0.0.2")); got != "hi" {
		t.Fatalf("another address: %q", got)
	}
	if got := echo(a); got != "hi" {
		t.Fatalf("an admitted connection: %q", got)
	}
	a.Close()
	deadline := time.Now().Add(30 * time.Second)
	for g.OpenFrom(tcp("127.0.0.1:1")) > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := echo(dialFrom("127.0.0.1")); !strings.HasPrefix(got, "hi") {
		t.Fatalf("after one closed, a new one: %q", got)
	}
	_ = b
}

package broker

import (
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestStart publishes a retained message with Debian's mosquitto_pub and reads it back with
// mosquitto_sub through the embedded broker, then checks that stop frees the port.
func TestStart(t *testing.T) {
	pub := testpeer.Require(t, "mosquitto_pub", "mosquitto-clients")
	sub := testpeer.Require(t, "mosquitto_sub", "mosquitto-clients")
	port := testpeer.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	stop, err := Start(addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(addr, nil); err == nil {
		t.Error("a second broker on the same address started")
	}
	p := fmt.Sprint(port)
	if out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", p, "-t", "t/x", "-r", "-q", "1", "-m", `{"a":1}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	out, err := exec.Command(sub, "-h", "127.0.0.1", "-p", p, "-t", "t/#", "-C", "1", "-W", "20", "-v").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != `t/x {"a":1}` {
		t.Fatalf("mosquitto_sub: %v %q", err, out)
	}
	stop()
	testpeer.Eventually(t, 20*time.Second, "port free after stop", func() bool {
		s, err := Start(addr, slog.New(slog.DiscardHandler))
		if err != nil {
			return false
		}
		s()
		return true
	})
}

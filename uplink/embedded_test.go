package uplink

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/uplink/broker"
)

// TestEmbeddedBroker is the demo default: the uplink publishing to the in-process mochi
// broker, read by Debian's mosquitto_sub.
func TestEmbeddedBroker(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	stop, err := broker.Start(addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	db := tempDB(t)
	u := start(t, db, testOptions("tcp://"+addr))
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	for i := 0; i < 3; i++ {
		if err := u.Telemetry(reading(i)); err != nil {
			t.Fatal(err)
		}
	}
	testpeer.Eventually(t, 20*time.Second, "acknowledged", func() bool { return u.Status().Queued == 0 })
	// A late subscriber still gets the retained state.
	sub := testpeer.Require(t, "mosquitto_sub", "mosquitto-clients")
	p := testpeer.Start(t, sub, "-h", "127.0.0.1", "-p", addr[len("127.0.0.1:"):], "-t", root+"/state", "-C", "1", "-W", "20")
	testpeer.Eventually(t, 25*time.Second, "retained state online", func() bool {
		return strings.Contains(p.Output(), `"state":"online"`)
	})
}

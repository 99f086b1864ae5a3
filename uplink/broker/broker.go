// Package broker runs an MQTT broker inside the rackwatch process (mochi-mqtt), so that the
// demo site and the tests have somewhere to publish without an external mosquitto. It allows
// anonymous access and keeps nothing on disk: it is a convenience, not a production broker.
// It must not import daemon/ or sensors/.
package broker

import (
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll lets every client connect and use every topic. mochi ships the same hook in
// hooks/auth, but that package also pulls in a YAML module this build does not carry.
type allowAll struct{ mqtt.HookBase }

func (*allowAll) ID() string { return "allow-all" }
func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

// Start runs a broker listening on addr ("127.0.0.1:1883"; port 0 is not useful since the
// caller cannot learn it, so pass a real port). stop closes the listener and every client
// connection and waits for the broker to finish. log may be nil.
func Start(addr string, log *slog.Logger) (stop func(), err error) {
	if log == nil {
		log = slog.Default()
	}
	s := mqtt.New(&mqtt.Options{
		Logger: log.With("component", "mqtt-broker"),
		// The demo's uplink uses persistent sessions; mochi's defaults keep them in memory.
		InlineClient: false,
	})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: allow anonymous: %w", err)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", addr, err)
	}
	if err := s.Serve(); err != nil {
		s.Close()
		return nil, fmt.Errorf("embedded broker: serve on %s: %w", addr, err)
	}
	return func() { s.Close() }, nil
}

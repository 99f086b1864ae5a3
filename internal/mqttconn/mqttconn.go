// Package mqttconn holds what every MQTT connection of the daemon does alike (the JSON uplink
// and the Sparkplug edge node): reading a broker URL and spacing reconnection attempts.
package mqttconn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ParseBroker checks a broker URL (tcp://, mqtt://, ssl://, tls://, mqtts://, host and port
// required) and tells whether it uses TLS.
func ParseBroker(s string) (*url.URL, bool, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, false, fmt.Errorf("broker %q: %w", s, err)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, false, fmt.Errorf("broker %q: want scheme://host:port", s)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return nil, false, fmt.Errorf("broker %q: port %s is not 1-65535", s, u.Port())
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		return u, false, nil
	case "ssl", "tls", "mqtts":
		return u, true, nil
	}
	return nil, false, fmt.Errorf("broker %q: scheme %q not supported (tcp, ssl)", s, u.Scheme)
}

// Backoff is the delay before the next round of connection attempts: full jitter over an
// exponentially growing window, capped (AWS architecture blog, "Exponential Backoff And
// Jitter"), so that a fleet of appliances does not reconnect in lockstep after a broker
// restart.
func Backoff(base, max time.Duration, attempt int) time.Duration {
	window := max
	if attempt < 30 {
		if w := base << attempt; w > 0 && w < max {
			window = w
		}
	}
	return rand.N(window) + time.Millisecond
}

// Wait waits d (a backoff's delay) or until ctx ends; false if ctx ended first.
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Connect connects c and waits for the broker's CONNACK, or for ctx to end: then a
// connection made meanwhile is closed and ctx.Err() returned as it is. The dial follows ctx
// (the client's dialer); CONNACK is bounded by the client's ConnectTimeout.
func Connect(ctx context.Context, c mqtt.Client) error {
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		<-tok.Done()
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return ctx.Err()
	}
	return tok.Error()
}

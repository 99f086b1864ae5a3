package uplink

import (
	"context"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Session is one broker connection as OnConnect hands it to what publishes beside the
// contract's topics (Home Assistant discovery, under its own prefix). It is good until the
// ctx OnConnect got ends.
type Session struct {
	client mqtt.Client
	lost   <-chan struct{}
	wait   time.Duration
}

// OnConnect sets what runs on every connection, on a goroutine of its own, once online is
// published and R/cmd subscribed. Its ctx ends with the connection, and the connection waits
// for it to return before the next one is made. Set it before Run.
func (u *Uplink) OnConnect(fn func(ctx context.Context, s *Session)) {
	u.mu.Lock()
	u.onConnect = fn
	u.mu.Unlock()
}

// Publish sends payload on topic (any topic, not only under R) with QoS 1 and returns once
// the broker acknowledged it. An empty retained payload clears the topic's retained message.
func (s *Session) Publish(ctx context.Context, topic string, retain bool, payload []byte) error {
	return s.await(ctx, s.client.Publish(topic, 1, retain, payload), "publish "+topic)
}

// Subscribe subscribes to topic with QoS 1 and returns once the broker confirmed it. fn runs
// on the connection's router goroutine, in order, and must not block.
func (s *Session) Subscribe(ctx context.Context, topic string, fn func(topic string, payload []byte, retained bool)) error {
	h := func(_ mqtt.Client, m mqtt.Message) { fn(m.Topic(), m.Payload(), m.Retained()) }
	return s.await(ctx, s.client.Subscribe(topic, 1, h), "subscribe "+topic)
}

// Unsubscribe ends a subscription made with Subscribe.
func (s *Session) Unsubscribe(ctx context.Context, topic string) error {
	return s.await(ctx, s.client.Unsubscribe(topic), "unsubscribe "+topic)
}

func (s *Session) await(ctx context.Context, t mqtt.Token, what string) error {
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fmt.Errorf("uplink: %s: %w", what, err)
		}
		return nil
	case <-s.lost:
		return fmt.Errorf("uplink: %s: connection lost", what)
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("uplink: %s: no answer within %v", what, s.wait)
	}
}

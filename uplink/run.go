package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/rackwatch/rackwatch/internal/mqttconn"
)

// CheckBroker reports why a broker URL cannot be used, or nil. The config check calls it,
// so that -check refuses exactly what New would.
func CheckBroker(s string) error {
	_, _, err := mqttconn.ParseBroker(s)
	return err
}

// Run keeps the uplink connected until ctx ends: brokers are tried in order; when none
// answers it waits with backoff and tries again from the first. It returns after ctx ended,
// having published offline (best effort) and committed the queue.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.running.CompareAndSwap(false, true) {
		return errors.New("uplink: Run called twice")
	}
	defer u.running.Store(false)
	defer u.runSparkplug(ctx)()
	// Commands stop when the connection ends because ctx did (serve), before offline is
	// published, so that a command applied just then still gets its reply.
	var cwg sync.WaitGroup
	cctx, cancelCommands := context.WithCancel(context.WithoutCancel(ctx))
	u.stopCommands = func() {
		cancelCommands()
		cwg.Wait()
	}
	cwg.Add(2)
	go func() {
		defer cwg.Done()
		u.runCommands(cctx)
	}()
	go func() {
		defer cwg.Done()
		u.replyRefusals(cctx)
	}()
	defer u.stopCommands()
	defer func() {
		if err := u.flushAcked(true); err != nil {
			u.log.Error("stop", "err", err)
		}
	}()
	if u.opts.TelemetryFlush > 0 {
		fctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.flusher(fctx)
		}()
		defer func() {
			stop()
			wg.Wait()
			drop, err := u.commitHeld(true)
			u.reportDrop(drop)
			if err != nil {
				u.log.Error("stop: commit held telemetry", "err", err)
			}
		}()
	}
	attempt := 0
	var pause time.Duration
	for ctx.Err() == nil {
		served := false
		for i, b := range u.opts.Brokers {
			if ctx.Err() != nil {
				return nil
			}
			c, err := u.connect(ctx, b)
			u.mu.Lock()
			u.broker = b
			u.mu.Unlock()
			if err != nil {
				u.setErr(err)
				u.log.Warn("connect failed", "broker", b, "err", err)
				continue
			}
			served = true
			began := time.Now()
			why := u.serve(ctx, c, i)
			if ctx.Err() != nil {
				return nil
			}
			u.log.Info("connection ended", "broker", b, "why", why)
			switch {
			case errors.Is(why, errSwitch):
				attempt, pause = 0, 0 // straight back to the first broker
			case time.Since(began) < stableAfter:
				// Accepted and dropped at once (a client id taken over, a broker that
				// refuses us after CONNACK): back off as if it had not answered.
				pause = mqttconn.Backoff(u.opts.BackoffBase, u.opts.BackoffMax, attempt)
				attempt++
			default:
				attempt = 0
				pause = mqttconn.Backoff(u.opts.BackoffBase, u.opts.BackoffMax, 0)
			}
			break
		}
		if served {
			if !mqttconn.Wait(ctx, pause) {
				return nil
			}
			continue
		}
		d := mqttconn.Backoff(u.opts.BackoffBase, u.opts.BackoffMax, attempt)
		attempt++
		u.log.Info("no broker reachable, waiting", "delay", d.Round(time.Millisecond))
		if !mqttconn.Wait(ctx, d) {
			return nil
		}
	}
	return nil
}

// stableAfter is how long a connection must last to reset the backoff.
const stableAfter = 10 * time.Second

// flusher commits held telemetry once it is due, until ctx ends. It sleeps until the oldest
// held message is due, and while nothing is held until something is.
func (u *Uplink) flusher(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// retry is the wait when the oldest held message is overdue but being committed by
	// someone else (or its commit failed): not a busy loop, not a long wait either.
	retry := min(max(u.opts.TelemetryFlush/4, 10*time.Millisecond), 5*time.Second)
	for {
		var due <-chan time.Time
		if next, ok := u.nextHoldDue(); ok {
			t.Reset(max(time.Until(next), retry))
			due = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-u.heldWake:
		case <-due:
		}
		if err := u.holdDue(); err != nil {
			u.log.Error("commit held telemetry", "err", err)
		}
	}
}

// conn is one MQTT connection: a fresh paho client with an empty store, never reconnected.
type conn struct {
	client mqtt.Client
	broker string
	lost   chan struct{}
	once   sync.Once
	why    error
}

func (c *conn) setLost(err error) {
	c.once.Do(func() {
		c.why = err
		close(c.lost)
	})
}

func (u *Uplink) statePayload(state string) []byte {
	var fw any
	if u.opts.Firmware != nil {
		fw = u.opts.Firmware()
	}
	b, _ := json.Marshal(struct {
		State    string `json:"state"`
		TS       string `json:"ts"`
		Version  string `json:"version"`
		BootID   string `json:"boot_id"`
		Firmware any    `json:"firmware,omitempty"`
	}{state, formatTime(time.Now()), u.opts.Version, u.opts.BootID, fw})
	return b
}

// connect dials broker and completes the MQTT handshake with a persistent session.
func (u *Uplink) connect(ctx context.Context, broker string) (*conn, error) {
	bu, useTLS, err := mqttconn.ParseBroker(broker)
	if err != nil {
		return nil, err
	}
	c := &conn{broker: broker, lost: make(chan struct{})}
	o := mqtt.NewClientOptions()
	o.AddBroker(broker)
	o.SetClientID(u.opts.ClientID)
	// A persistent session keeps our R/cmd subscription and the commands sent while we were
	// away. Our own outgoing QoS 1 state lives in the disk queue, not in paho.
	o.SetCleanSession(false)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	o.SetStore(mqtt.NewMemoryStore())
	// Commands must be applied in the order they came: the router goroutine calls receive,
	// which only queues them (command.go).
	o.SetOrderMatters(true)
	o.SetKeepAlive(u.opts.KeepAlive)
	o.SetPingTimeout(u.opts.ConnectTimeout)
	o.SetConnectTimeout(u.opts.ConnectTimeout)
	o.SetWriteTimeout(u.opts.AckTimeout)
	o.SetBinaryWill(u.root+"/state", u.statePayload("offline"), 1, true)
	if u.opts.Username != "" {
		o.SetUsername(u.opts.Username)
	}
	if u.opts.PasswordFile != "" {
		pw, err := readPassword(u.opts.PasswordFile)
		if err != nil {
			return nil, err
		}
		o.SetPassword(pw)
	}
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.setLost(err) })
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		// Commands queued in our persistent session may arrive before SUBSCRIBE is redone.
		if m.Topic() == u.root+"/cmd" {
			u.receive(m)
		}
	})
	// We dial ourselves so that the dial and the TLS handshake follow ctx and so that a TLS
	// failure is reported as what it is.
	o.SetCustomOpenConnectionFn(func(_ *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, u.opts.ConnectTimeout)
		defer cancel()
		var d net.Dialer
		nc, err := d.DialContext(dctx, "tcp", bu.Host)
		if err != nil {
			return nil, err
		}
		if !useTLS {
			return nc, nil
		}
		cfg, err := tlsConfig(u.opts, bu.Hostname())
		if err != nil {
			nc.Close()
			return nil, err
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, explainTLS(err, u.opts.CAFile)
		}
		// Under TLS 1.3 the broker judges our certificate after our side of the handshake
		// finished; its refusal is an alert we only see on the next read. An MQTT broker
		// sends nothing before CONNECT, so a short read either times out (accepted) or
		// returns that alert, which we can then name instead of a later "connection reset".
		tc.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		var one [1]byte
		_, err = tc.Read(one[:])
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			nc.Close()
			if err == nil {
				err = errors.New("broker sent data before CONNECT")
			}
			return nil, explainTLS(err, u.opts.CAFile)
		}
		tc.SetReadDeadline(time.Time{})
		return tc, nil
	})
	c.client = mqtt.NewClient(o)
	if err := mqttconn.Connect(ctx, c.client); err != nil {
		if ctx.Err() != nil && err == ctx.Err() {
			return nil, err
		}
		if useTLS && strings.Contains(err.Error(), "remote error: tls:") {
			// Under TLS 1.3 the broker's verdict on our certificate arrives after our side
			// of the handshake is done, so it surfaces here, while reading CONNACK.
			err = fmt.Errorf("TLS: broker refused our client certificate (tls.cert_file/key_file, signed by a CA the broker trusts?): %w", err)
		}
		return nil, fmt.Errorf("connect %s: %w", broker, err)
	}
	return c, nil
}

// chunk is a read-ahead result.
type chunk struct {
	qs   []queued
	more bool // the read stopped before the end of the queue
	err  error
}

// readNext reads up to max messages (and about maxBytes of payload) queued after the seqs in
// after: incidents first, then telemetry, each oldest first. more tells whether it stopped
// before the end of the queue.
func (u *Uplink) readNext(after [2]uint64, max, maxBytes int) (qs []queued, more bool, err error) {
	qs, err = u.readFrom(kindIncident, after[kindIncident], max)
	if err != nil || len(qs) >= max {
		return qs, true, err
	}
	ts, err := u.readFrom(kindTelemetry, after[kindTelemetry], max-len(qs))
	more = len(ts) == max-len(qs)
	qs = append(qs, ts...)
	n := 0
	for i, q := range qs {
		if n += len(q.payload); n > maxBytes && i > 0 {
			return qs[:i], true, err
		}
	}
	return qs, more, err
}

// overtake puts incidents read just now (newer than any already read) ahead of the telemetry
// waiting in ahead but behind the incidents that wait there too: a read-ahead chunk may have
// brought older incidents in the same turn, and an incident's events must go out in seq order
// (an "opened" overtaken by its "resolved" would leave the incident open at the other end).
func overtake(ahead, inc []queued) []queued {
	at := 0
	for i, q := range ahead {
		if q.kind == kindIncident {
			at = i + 1
		}
	}
	out := make([]queued, 0, len(ahead)+len(inc))
	out = append(out, ahead[:at]...)
	out = append(out, inc...)
	return append(out, ahead[at:]...)
}

// maxInflightBytes bounds the payload bytes held in the window and in the read-ahead buffer,
// so that a backlog of large messages (1,000 readings is about 130 KB) stays small in RAM.
const maxInflightBytes = 4 << 20

func aheadBytes(qs []queued) int {
	n := 0
	for _, q := range qs {
		n += len(q.payload)
	}
	return n
}

// inflight is a message sent on this connection and not yet acknowledged.
type inflight struct {
	q   queued
	tok mqtt.Token
	at  time.Time
}

// serve runs one connection until it is lost, ctx ends, or (idx > 0) an earlier broker is
// reachable again. It returns why it ended.
func (u *Uplink) serve(ctx context.Context, c *conn, idx int) error {
	u.connects.Add(1)
	u.log.Info("connected", "broker", c.broker, "client_id", u.opts.ClientID)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	u.mu.Lock()
	u.client = c.client // replies to commands go out on the current connection
	u.mu.Unlock()
	defer func() {
		cancel()
		wg.Wait()
		u.mu.Lock()
		u.connected = false
		u.client = nil
		u.mu.Unlock()
	}()

	// Messages acknowledged on an earlier connection and not yet deleted must not go again.
	if err := u.flushAcked(true); err != nil {
		u.log.Error("flush", "err", err)
	}
	root := u.root
	// end closes the connection; when Run is stopping it first replaces the retained online
	// with offline (the will only fires on an unclean loss).
	end := func(why error) error {
		if ctx.Err() != nil {
			u.stopCommands()
		}
		if ctx.Err() != nil || errors.Is(why, errSwitch) {
			t := c.client.Publish(root+"/state", 1, true, u.statePayload("offline"))
			t.WaitTimeout(2 * time.Second)
		}
		if ctx.Err() != nil {
			c.client.Disconnect(500)
			return ctx.Err()
		}
		if errors.Is(why, errSwitch) {
			// Disconnect(0) closes the socket before the DISCONNECT is written, so the broker
			// left would publish the will (offline, retained); through a cluster that can land
			// after the online sent through the next node.
			c.client.Disconnect(500)
			return why
		}
		c.client.Disconnect(0)
		return why
	}
	t := c.client.Publish(root+"/state", 1, true, u.statePayload("online"))
	if err := u.wait(sctx, c, t); err != nil {
		return end(fmt.Errorf("publish online: %w", err))
	}
	wg.Add(1)
	go func() {
		// Deletes of acknowledged messages are committed off the send path.
		defer wg.Done()
		u.flushAckedLoop(sctx)
	}()
	st := c.client.Subscribe(root+"/cmd", 1, func(_ mqtt.Client, m mqtt.Message) { u.receive(m) })
	if err := u.wait(sctx, c, st); err != nil {
		return end(fmt.Errorf("subscribe %s/cmd: %w", root, err))
	}
	u.mu.Lock()
	u.connected, u.broker, u.lastErr = true, c.broker, ""
	onConnect := u.onConnect
	u.mu.Unlock()
	if onConnect != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			onConnect(sctx, &Session{client: c.client, lost: c.lost, wait: u.opts.AckTimeout})
		}()
	}

	var (
		read          [2]uint64  // highest seq read (into ahead or sent) per kind on this connection
		ahead         []queued   // read, not yet sent
		pre           chan chunk // the next chunk, being read in the background; nil if none
		more          = true     // the last read did not reach the end of the queue
		woken         = true     // something was enqueued: look for incidents
		got           *chunk     // a finished background read, to be taken in
		window        []inflight
		inflightBytes int
		retained      = map[string]uint64{}
		ackTimer      = time.NewTimer(time.Hour) // the oldest in-flight message's PUBACK deadline
		probe         <-chan time.Time
	)
	defer ackTimer.Stop()
	if idx > 0 {
		pt := time.NewTicker(u.opts.ProbeInterval)
		defer pt.Stop()
		probe = pt.C
	}
	for {
		// Retained topics whose latest value this connection has not sent yet.
		u.mu.Lock()
		var rets []string
		for k, g := range u.retainGen {
			if retained[k] != g {
				retained[k] = g
				rets = append(rets, k)
			}
		}
		payloads := make([][]byte, len(rets))
		for i, k := range rets {
			payloads[i] = u.retained[k]
		}
		u.mu.Unlock()
		for i, k := range rets {
			if k == stateKey {
				c.client.Publish(root+"/state", 1, true, u.statePayload("online"))
				continue
			}
			// Best effort: a retained value lost with the connection is sent again on the
			// next one (it is re-marked unsent there, as retained is per connection).
			c.client.Publish(root+"/"+k, 1, true, payloads[i])
		}

		// Retire acknowledged messages in order.
	retire:
		for len(window) > 0 {
			h := window[0]
			select {
			case <-h.tok.Done():
			default:
				break retire
			}
			if err := h.tok.Error(); err != nil {
				return end(fmt.Errorf("publish %s seq %d: %w", kindName[h.q.kind], h.q.seq, err))
			}
			u.ack(h.q.kind, h.q.seq, h.q.size)
			inflightBytes -= len(h.q.payload)
			window = window[1:]
		}

		// Fill the window from the read-ahead buffer, which a background read keeps filled
		// a chunk at a time, so that the send path does no disk reads of its own. Incidents
		// are looked up whenever something was enqueued and go ahead of the telemetry (overtake), so
		// that a live incident overtakes an old telemetry backlog; each topic goes oldest first.
		if pre != nil && got == nil {
			select {
			case r := <-pre:
				got = &r
			default:
			}
		}
		if got != nil {
			pre = nil
			if got.err != nil {
				return end(got.err)
			}
			for _, q := range got.qs {
				if q.seq > read[q.kind] {
					ahead = append(ahead, q)
					read[q.kind] = q.seq
				}
			}
			more = more || got.more
			got = nil
		}
		select {
		case <-u.wake: // an incident enqueued just now must not wait for the select below
			woken = true
		default:
		}
		if woken {
			woken, more = false, true
			inc, err := u.readFrom(kindIncident, read[kindIncident], u.opts.InFlight)
			if err != nil {
				return end(err)
			}
			if len(inc) > 0 {
				read[kindIncident] = inc[len(inc)-1].seq
				ahead = overtake(ahead, inc)
			}
		}
		for len(ahead) > 0 && len(window) < u.opts.InFlight && inflightBytes < maxInflightBytes {
			q := ahead[0]
			ahead = ahead[1:]
			qos := byte(1)
			topic := root + "/incidents"
			if q.kind == kindTelemetry {
				qos, topic = u.opts.TelemetryQoS, root+"/telemetry"
			}
			tok := c.client.Publish(topic, qos, false, q.payload)
			window = append(window, inflight{q: q, tok: tok, at: time.Now()})
			inflightBytes += len(q.payload)
		}
		if pre == nil && more && len(ahead) < u.opts.InFlight/2 && aheadBytes(ahead) < maxInflightBytes {
			from, ch, n := read, make(chan chunk, 1), u.opts.InFlight
			pre, more = ch, false
			wg.Add(1)
			go func() {
				defer wg.Done()
				qs, more, err := u.readNext(from, n, maxInflightBytes)
				ch <- chunk{qs: qs, more: more, err: err}
			}()
		}

		var (
			head     <-chan struct{}
			deadline <-chan time.Time // nothing in flight: nothing to time out, no wake
		)
		if len(window) > 0 {
			head = window[0].tok.Done()
			left := u.opts.AckTimeout - time.Since(window[0].at)
			if left < 0 {
				return end(fmt.Errorf("no PUBACK for %s seq %d within %v", kindName[window[0].q.kind], window[0].q.seq, u.opts.AckTimeout))
			}
			ackTimer.Reset(left + time.Millisecond)
			deadline = ackTimer.C
		}
		select {
		case <-ctx.Done():
			return end(nil)
		case <-c.lost:
			return end(fmt.Errorf("connection lost: %w", c.why))
		case <-head:
		case <-u.wake:
			woken = true
		case r := <-pre:
			got = &r
		case <-deadline:
		case <-probe:
			for _, b := range u.opts.Brokers[:idx] {
				if reachable(ctx, b, u.opts.ConnectTimeout) {
					u.log.Info("earlier broker reachable again, switching", "broker", b)
					return end(errSwitch)
				}
			}
		}
	}
}

var errSwitch = errors.New("switching back to an earlier broker")

// reachable tells whether a TCP connection to broker's address succeeds.
func reachable(ctx context.Context, broker string, timeout time.Duration) bool {
	bu, _, err := mqttconn.ParseBroker(broker)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", bu.Host)
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

// wait waits for a token of connection c.
func (u *Uplink) wait(ctx context.Context, c *conn, t mqtt.Token) error {
	timer := time.NewTimer(u.opts.AckTimeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-c.lost:
		return fmt.Errorf("connection lost: %w", c.why)
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("no answer within %v", u.opts.AckTimeout)
	}
}

// explainTLS turns a handshake error into one that says what to check.
func explainTLS(err error, caFile string) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &unknown):
		if caFile == "" {
			return fmt.Errorf("TLS: broker certificate not trusted by the system roots (set tls.ca_file): %w", err)
		}
		return fmt.Errorf("TLS: broker certificate not signed by the CA in %s: %w", caFile, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("TLS: broker certificate does not match its host name: %w", err)
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("TLS: broker refused our client certificate (tls.cert_file/key_file): %w", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("TLS: broker certificate invalid (expired or not for a server?): %w", err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

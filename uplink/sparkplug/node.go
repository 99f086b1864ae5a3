// Package sparkplug publishes rackwatch's readings as a Sparkplug B 3.0 edge node: NBIRTH and a
// DBIRTH per device with every metric's name, alias and datatype, then NDATA/DDATA carrying only
// the metrics that changed (report by exception), NDEATH as the MQTT will with a bdSeq that
// survives restarts, seq 0–255 on every message, a rebirth on the NCMD "Node Control/Rebirth",
// and, when a primary host is named, births only while its STATE says online.
//
// The node has an MQTT connection of its own: Sparkplug wants a clean session and the NDEATH as
// the will, while the JSON uplink needs a persistent session and its R/state will. Payloads are
// Eclipse Tahu's sparkplug_b.proto (package spbpb). It knows nothing of the daemon; the uplink
// feeds it readings.
package sparkplug

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rackwatch/rackwatch/internal/mqttconn"
	"github.com/rackwatch/rackwatch/uplink/sparkplug/spbpb"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// Namespace is the Sparkplug B topic namespace.
const Namespace = "spBv1.0"

// Config is what a site configures (mqtt.sparkplug).
type Config struct {
	Group       string // the Sparkplug group id
	EdgeNode    string // the edge node id
	PrimaryHost string // the primary host's id; "" = do not wait for a host's STATE
}

// CheckID reports why v cannot be a Sparkplug group, edge node, device or host id.
func CheckID(v string) error {
	if v == "" || strings.ContainsAny(v, "+/#\x00") {
		return fmt.Errorf("%q is not a Sparkplug id (empty, or holds +, /, # or NUL)", v)
	}
	return nil
}

// Check reports why c cannot be used.
func (c Config) Check() error {
	if err := CheckID(c.Group); err != nil {
		return fmt.Errorf("sparkplug group: %w", err)
	}
	if err := CheckID(c.EdgeNode); err != nil {
		return fmt.Errorf("sparkplug edge node: %w", err)
	}
	if c.PrimaryHost != "" {
		if err := CheckID(c.PrimaryHost); err != nil {
			return fmt.Errorf("sparkplug primary_host: %w", err)
		}
	}
	return nil
}

// Options configures a Node. Zero durations take the defaults named.
type Options struct {
	Config
	Brokers  []string // "tcp://h:p" or "ssl://h:p" (also tls://, mqtts://), tried in order
	ClientID string
	Username string
	Password func() (string, error)                 // read at every connect; nil = none
	TLS      func(host string) (*tls.Config, error) // for ssl:// brokers; nil = system roots
	DB       *bbolt.DB                              // where bdSeq is kept
	Logger   *slog.Logger
	// ConnectTimeout bounds the dial, TLS and CONNACK (default 10 s); KeepAlive is the MQTT
	// keep-alive (default 30 s); the delay between rounds of connection attempts is full
	// jitter in [0, min(BackoffMax, BackoffBase·2^attempt)) (defaults 1 s, 60 s).
	ConnectTimeout, KeepAlive, BackoffBase, BackoffMax time.Duration
}

// Counters say what the node did since New.
type Counters struct {
	Attempts    uint64 `json:"attempts"`     // connection attempts
	Connects    uint64 `json:"connects"`     // connections made, with NCMD (and STATE) subscribed
	Sessions    uint64 `json:"sessions"`     // Sparkplug sessions begun (NBIRTH published on a connection)
	Births      uint64 `json:"births"`       // NBIRTHs published, rebirths included
	Rebirths    uint64 `json:"rebirths"`     // rebirth requests honoured
	BadCommands uint64 `json:"bad_commands"` // NCMD payloads that could not be read (dropped)
	BadStates   uint64 `json:"bad_states"`   // primary host STATE payloads that could not be read (ignored)
}

// Node is a Sparkplug B edge node. Make it with New, feed it with Update, run it with Run.
type Node struct {
	opts Options
	log  *slog.Logger
	db   *bbolt.DB

	wake chan struct{}

	mu        sync.Mutex
	devices   map[string]*device
	nextAlias uint64
	// per connection, reset by session:
	born      bool // NBIRTH published on this connection
	rebirth   bool // a rebirth was asked for
	hostOn    bool // the primary host's latest STATE says online
	hostTS    int64
	hostKnown bool
	seq       uint8

	bdSeq    uint64 // the bdSeq of the next (or current) connection
	bdStored bool   // bdSeq is on disk
	running  atomic.Bool

	attempts, connects, sessions, births, rebirths, badCommands, badStates atomic.Uint64
	badCommandLogAt, badStateLogAt                                         atomic.Int64
}

var bucket = []byte("uplink.sparkplug")

// New checks opts and loads the bdSeq of the last run.
func New(opts Options) (*Node, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if len(opts.Brokers) == 0 {
		return nil, errors.New("sparkplug: no broker configured")
	}
	for _, b := range opts.Brokers {
		if _, _, err := mqttconn.ParseBroker(b); err != nil {
			return nil, fmt.Errorf("sparkplug: %w", err)
		}
	}
	if opts.DB == nil {
		return nil, errors.New("sparkplug: no database for bdSeq")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.ConnectTimeout, 10*time.Second)
	def(&opts.KeepAlive, 30*time.Second)
	def(&opts.BackoffBase, time.Second)
	def(&opts.BackoffMax, 60*time.Second)
	if opts.ClientID == "" {
		opts.ClientID = "rackwatch-spb-" + opts.Group + "-" + opts.EdgeNode
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	n := &Node{opts: opts, log: opts.Logger.With("component", "sparkplug"), db: opts.DB,
		wake: make(chan struct{}, 1), devices: map[string]*device{}, nextAlias: firstAlias}
	// The first connection of this run uses the bdSeq after the last one stored: whether or
	// not the last run's last connection was accepted, a host must not see its bdSeq again.
	err := n.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucket); b != nil {
			if v := b.Get([]byte("bdseq")); len(v) == 8 {
				n.bdSeq = (binary.BigEndian.Uint64(v) + 1) % 256
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sparkplug: read bdSeq: %w", err)
	}
	return n, nil
}

// Topic is the topic of message type typ (NBIRTH, DDATA, …) of this node, of device dev when
// dev is not empty.
func (n *Node) Topic(typ, dev string) string {
	t := Namespace + "/" + n.opts.Group + "/" + typ + "/" + n.opts.EdgeNode
	if dev != "" {
		t += "/" + dev
	}
	return t
}

// Counters returns what the node did since New.
func (n *Node) Counters() Counters {
	return Counters{Attempts: n.attempts.Load(), Connects: n.connects.Load(), Sessions: n.sessions.Load(), Births: n.births.Load(), Rebirths: n.rebirths.Load(),
		BadCommands: n.badCommands.Load(), BadStates: n.badStates.Load()}
}

// Update takes the latest readings. A metric whose value or quality changed goes out in the
// next DDATA; a device or metric not seen before, or a datatype that changed, makes its device
// born again (DBIRTH), since a host must know every metric by name, alias and datatype before
// data refers to it. Metrics with a device id that cannot be a Sparkplug id are skipped.
func (n *Node) Update(metrics []Metric) {
	changed := false
	n.mu.Lock()
	for _, m := range metrics {
		if CheckID(m.Device) != nil || m.Name == "" {
			continue
		}
		d := n.devices[m.Device]
		if d == nil {
			d = &device{metrics: map[string]*entry{}, birth: true}
			n.devices[m.Device] = d
		}
		q := qualityCode(m.Quality)
		dt, ok := datatypeOf(m.Value)
		e := d.metrics[m.Name]
		if e == nil {
			if !ok {
				dt = spbpb.DataType_Double // a reading with no value yet: most are numbers
			}
			e = &entry{alias: n.nextAlias, datatype: dt}
			n.nextAlias++
			d.metrics[m.Name] = e
			d.birth = true
		} else if ok && dt != e.datatype {
			e.datatype = dt
			d.birth = true
		}
		if e.unit != m.Unit {
			e.unit = m.Unit
			d.birth = true
		}
		if !same(e.value, m.Value) || e.quality != q || e.ts == 0 {
			e.value, e.quality, e.ts = m.Value, q, ms(m.TS)
			e.dirty, d.dirty = true, true
			changed = true
		}
		if d.birth {
			changed = true
		}
	}
	n.mu.Unlock()
	if changed {
		signal(n.wake)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run keeps the node connected until ctx ends, then publishes NDEATH and disconnects.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("sparkplug: Run called twice")
	}
	defer n.running.Store(false)
	idx, attempt := 0, 0
	for ctx.Err() == nil {
		broker := n.opts.Brokers[idx]
		bd, err := n.claimBdSeq()
		if err != nil {
			n.log.Error("bdSeq not stored; not connecting", "err", err)
		} else {
			c, err := n.connect(ctx, broker, bd)
			n.attempts.Add(1)
			if err == nil {
				began := time.Now()
				why := n.session(ctx, c, bd)
				n.mu.Lock()
				n.bdSeq, n.bdStored = (bd+1)%256, false
				n.mu.Unlock()
				if ctx.Err() != nil {
					return nil
				}
				n.log.Info("session ended", "broker", broker, "why", why)
				if errors.Is(why, errHostOffline) {
					idx = (idx + 1) % len(n.opts.Brokers)
				}
				if time.Since(began) > 10*time.Second {
					attempt = 0
				}
				if !mqttconn.Wait(ctx, mqttconn.Backoff(n.opts.BackoffBase, n.opts.BackoffMax, attempt)) {
					return nil
				}
				attempt++
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			n.log.Warn("connect failed", "broker", broker, "err", err)
		}
		idx = (idx + 1) % len(n.opts.Brokers)
		if idx == 0 {
			if !mqttconn.Wait(ctx, mqttconn.Backoff(n.opts.BackoffBase, n.opts.BackoffMax, attempt)) {
				return nil
			}
			attempt++
		}
	}
	return nil
}

// claimBdSeq returns the bdSeq for the next CONNECT, stored before it is used so that a
// restart never repeats it. A connection that was never accepted leaves it unused, so
// the disk is written once per accepted connection, not once per attempt.
func (n *Node) claimBdSeq() (uint64, error) {
	n.mu.Lock()
	bd, stored := n.bdSeq, n.bdStored
	n.mu.Unlock()
	if stored {
		return bd, nil
	}
	err := n.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], bd)
		return b.Put([]byte("bdseq"), v[:])
	})
	if err != nil {
		return 0, err
	}
	n.mu.Lock()
	n.bdStored = true
	n.mu.Unlock()
	return bd, nil
}

func (n *Node) deathPayload(bd uint64) []byte {
	now := uint64(time.Now().UnixMilli())
	b, _ := proto.Marshal(&spbpb.Payload{Timestamp: proto.Uint64(now), Metrics: []*spbpb.Payload_Metric{bdSeqMetric(bd, now)}})
	return b
}

type conn struct {
	client mqtt.Client
	lost   chan struct{}
	once   sync.Once
	why    error
}

func (c *conn) setLost(err error) {
	c.once.Do(func() { c.why = err; close(c.lost) })
}

// connect opens a clean session with NDEATH(bd) as the will.
func (n *Node) connect(ctx context.Context, broker string, bd uint64) (*conn, error) {
	bu, useTLS, err := mqttconn.ParseBroker(broker)
	if err != nil {
		return nil, err
	}
	c := &conn{lost: make(chan struct{})}
	o := mqtt.NewClientOptions()
	o.AddBroker(broker)
	o.SetClientID(n.opts.ClientID)
	o.SetCleanSession(true) // Sparkplug: an edge node's session is clean
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	o.SetOrderMatters(true)
	o.SetKeepAlive(n.opts.KeepAlive)
	o.SetPingTimeout(n.opts.ConnectTimeout)
	o.SetConnectTimeout(n.opts.ConnectTimeout)
	o.SetWriteTimeout(n.opts.ConnectTimeout)
	o.SetBinaryWill(n.Topic("NDEATH", ""), n.deathPayload(bd), 1, false)
	if n.opts.Username != "" {
		o.SetUsername(n.opts.Username)
	}
	if n.opts.Password != nil {
		pw, err := n.opts.Password()
		if err != nil {
			return nil, err
		}
		o.SetPassword(pw)
	}
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.setLost(err) })
	o.SetCustomOpenConnectionFn(func(_ *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, n.opts.ConnectTimeout)
		defer cancel()
		var d net.Dialer
		nc, err := d.DialContext(dctx, "tcp", bu.Host)
		if err != nil || !useTLS {
			return nc, err
		}
		cfg := &tls.Config{ServerName: bu.Hostname(), MinVersion: tls.VersionTLS12}
		if n.opts.TLS != nil {
			if cfg, err = n.opts.TLS(bu.Hostname()); err != nil {
				nc.Close()
				return nil, err
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	})
	c.client = mqtt.NewClient(o)
	if err := mqttconn.Connect(ctx, c.client); err != nil {
		if ctx.Err() != nil && err == ctx.Err() {
			return nil, err
		}
		return nil, fmt.Errorf("connect %s: %w", broker, err)
	}
	return c, nil
}

var errHostOffline = errors.New("primary host offline")

// outMsg is one message to publish, built under mu and sent outside it, in order.
type outMsg struct {
	topic   string
	payload []byte
}

// session runs one connection: subscriptions, then births (once the primary host is online),
// then data as it changes, until the connection is lost, ctx ends or the host goes offline.
func (n *Node) session(ctx context.Context, c *conn, bd uint64) error {
	n.mu.Lock()
	n.born, n.rebirth, n.hostOn = false, false, false
	n.mu.Unlock()
	end := func(why error, death bool) error {
		if death {
			// Said before going, as the will is not sent on a clean DISCONNECT.
			t := c.client.Publish(n.Topic("NDEATH", ""), 1, false, n.deathPayload(bd))
			t.WaitTimeout(2 * time.Second)
		}
		c.client.Disconnect(250)
		return why
	}
	subs := map[string]mqtt.MessageHandler{n.Topic("NCMD", ""): func(_ mqtt.Client, m mqtt.Message) { n.command(m.Payload()) }}
	if h := n.opts.PrimaryHost; h != "" {
		subs[Namespace+"/STATE/"+h] = func(_ mqtt.Client, m mqtt.Message) { n.hostState(m.Payload()) }
	}
	for topic, h := range subs {
		t := c.client.Subscribe(topic, 1, h)
		select {
		case <-t.Done():
			if err := t.Error(); err != nil {
				return end(fmt.Errorf("subscribe %s: %w", topic, err), false)
			}
		case <-c.lost:
			return end(fmt.Errorf("connection lost: %w", c.why), false)
		case <-ctx.Done():
			return end(nil, false)
		case <-time.After(n.opts.ConnectTimeout):
			return end(fmt.Errorf("subscribe %s: no answer", topic), false)
		}
	}
	n.connects.Add(1)
	n.log.Info("connected", "client_id", n.opts.ClientID, "bdSeq", bd)
	for {
		out, offline := n.pending(bd)
		if offline {
			n.log.Info("primary host offline: NDEATH and on to the next broker", "host", n.opts.PrimaryHost)
			return end(errHostOffline, true)
		}
		for _, m := range out {
			// QoS 0 as Sparkplug asks; paho writes them in the order given.
			c.client.Publish(m.topic, 0, false, m.payload)
		}
		select {
		case <-ctx.Done():
			n.mu.Lock()
			born := n.born
			n.mu.Unlock()
			return end(nil, born)
		case <-c.lost:
			return end(fmt.Errorf("connection lost: %w", c.why), false)
		case <-n.wake:
		}
	}
}

// pending builds what is due now: the births if the node is not born (or a rebirth was asked
// for) and the host allows it, else the DBIRTHs of devices that need one and DDATA of changed
// metrics. offline is true when a born node must end its session because the host went offline.
func (n *Node) pending(bd uint64) (out []outMsg, offline bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opts.PrimaryHost != "" && !n.hostOn {
		return nil, n.born
	}
	now := uint64(time.Now().UnixMilli())
	add := func(typ, dev string, metrics []*spbpb.Payload_Metric) {
		p := &spbpb.Payload{Timestamp: proto.Uint64(now), Seq: proto.Uint64(uint64(n.seq)), Metrics: metrics}
		n.seq++ // wraps 255 → 0
		b, err := proto.Marshal(p)
		if err != nil {
			n.log.Error("marshal", "type", typ, "err", err)
			return
		}
		out = append(out, outMsg{n.Topic(typ, dev), b})
	}
	if !n.born || n.rebirth {
		if n.born {
			n.rebirths.Add(1)
		} else {
			n.sessions.Add(1)
		}
		n.born, n.rebirth, n.seq = true, false, 0
		n.births.Add(1)
		add("NBIRTH", "", []*spbpb.Payload_Metric{
			bdSeqMetric(bd, now),
			{Name: proto.String(rebirthName), Alias: proto.Uint64(rebirthAlias), Timestamp: proto.Uint64(now),
				Datatype: proto.Uint32(uint32(spbpb.DataType_Boolean)), Value: &spbpb.Payload_Metric_BooleanValue{BooleanValue: false}},
		})
		for _, d := range n.devices {
			d.birth = true
		}
	}
	for _, id := range sortedKeys(n.devices) {
		d := n.devices[id]
		if !d.birth && !d.dirty {
			continue
		}
		var ms []*spbpb.Payload_Metric
		for _, name := range sortedKeys(d.metrics) {
			e := d.metrics[name]
			if d.birth || e.dirty {
				ms = append(ms, metricPB(name, e, d.birth))
			}
			e.dirty = false
		}
		if d.birth {
			add("DBIRTH", id, ms)
		} else {
			add("DDATA", id, ms)
		}
		d.birth, d.dirty = false, false
	}
	return out, false
}

// command reads an NCMD: a true "Node Control/Rebirth" (by name or alias) asks for a rebirth.
// Anything else is ignored; a payload that is not a Sparkplug payload is counted and dropped.
func (n *Node) command(b []byte) {
	var p spbpb.Payload
	if err := proto.Unmarshal(b, &p); err != nil {
		n.badCommands.Add(1)
		n.rareWarn(&n.badCommandLogAt, "NCMD payload not readable, dropped", "err", err, "dropped_total", n.badCommands.Load())
		return
	}
	for _, m := range p.GetMetrics() {
		if (m.GetName() == rebirthName || (m.Name == nil && m.GetAlias() == rebirthAlias)) && m.GetBooleanValue() {
			n.mu.Lock()
			n.rebirth = n.born
			n.mu.Unlock()
			n.log.Info("rebirth requested")
			signal(n.wake)
			return
		}
	}
}

// hostState reads the primary host's STATE (Sparkplug 3.0: {"online":bool,"timestamp":ms}). A
// STATE older than the last one seen is ignored, as the spec asks, so that a stale retained
// message cannot undo a newer one.
func (n *Node) hostState(b []byte) {
	var s struct {
		Online    *bool  `json:"online"`
		Timestamp *int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Online == nil || s.Timestamp == nil {
		n.badStates.Add(1)
		n.rareWarn(&n.badStateLogAt, "primary host STATE not readable, ignored", "payload", truncate(b, 100), "ignored_total", n.badStates.Load())
		return
	}
	n.mu.Lock()
	if n.hostKnown && *s.Timestamp < n.hostTS {
		n.mu.Unlock()
		return
	}
	n.hostKnown, n.hostTS, n.hostOn = true, *s.Timestamp, *s.Online
	n.mu.Unlock()
	n.log.Info("primary host STATE", "host", n.opts.PrimaryHost, "online", *s.Online)
	signal(n.wake)
}

// rareWarn logs at most one line a minute per last: anyone who may publish to the topic could
// otherwise flood the log; the counters say how many there were.
func (n *Node) rareWarn(last *atomic.Int64, msg string, args ...any) {
	now := time.Now().UnixNano()
	if l := last.Load(); now-l > int64(time.Minute) && last.CompareAndSwap(l, now) {
		n.log.Warn(msg, args...)
	}
}

func truncate(b []byte, max int) string {
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

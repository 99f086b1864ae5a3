// Package uplink is rackwatch's MQTT link to central ITOps (CONTRACT.md §4): the retained
// online/offline state, telemetry and incidents with a per-topic seq, commands in and replies
// out, over one or more brokers tried in order.
//
// Every incident message, and every telemetry message unless TelemetryFlush holds telemetry
// (hold.go), is written to a bbolt queue before it is published and leaves the queue only
// after the broker's PUBACK arrived on the connection that carried it.
// paho's own store and its auto-reconnect are not used: a paho publish token can complete
// without a delivery after an automatic reconnect (paho.mqtt.golang #563, #613), so each
// connection is a fresh paho client with an empty in-memory store, and after any reconnect
// everything still queued is sent again, oldest first. Consumers dedupe by seq.
//
// uplink knows readings and incidents only as the small types below; it must not import
// daemon/ or sensors/.
package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rackwatch/rackwatch/internal/mqttconn"
	"github.com/rackwatch/rackwatch/uplink/sparkplug"
	"go.etcd.io/bbolt"
)

// Options configures an Uplink. Zero values take the defaults named on each field.
type Options struct {
	Brokers            []string // "tcp://h:p", "ssl://h:p" (also "tls://", "mqtts://"), tried in order
	Prefix, Site, Node string   // root topic R = Prefix/Site/Node
	ClientID           string   // default rackwatch-<site>-<node>
	Username           string
	PasswordFile       string // first line is the password; read at every connect
	CAFile             string // PEM roots for ssl:// brokers; default: the system roots
	CertFile, KeyFile  string // client certificate for mTLS
	TelemetryQoS       byte   // 0 or 1; default 1 (set TelemetryQoS0 for 0)
	TelemetryQoS0      bool   // publish telemetry with QoS 0: it leaves the queue once written to the socket
	QueueMaxBytes      int64  // cap of the disk queue; default 256 MiB
	Version, BootID    string
	Logger             *slog.Logger
	// Format of telemetry: FormatJSON (default) on R/telemetry, or FormatSparkplug, a
	// Sparkplug B edge node configured by Sparkplug (sparkplug.go) instead.
	Format    string
	Sparkplug sparkplug.Config

	// BackoffBase and BackoffMax shape the reconnect delay when no broker answers: full
	// jitter, uniformly random in [0, min(BackoffMax, BackoffBase·2^attempt)). Defaults 1 s, 60 s.
	BackoffBase, BackoffMax time.Duration
	// ProbeInterval is how often, while connected to a later broker in the list, the earlier
	// ones are probed so that traffic returns to the first broker once it is back. Default 30 s.
	ProbeInterval time.Duration
	// ConnectTimeout bounds dialling, the TLS handshake and CONNACK. Default 10 s.
	ConnectTimeout time.Duration
	// AckTimeout is how long a PUBACK may take before the connection is deemed dead and
	// dropped (its messages go again on the next one). Default 30 s.
	AckTimeout time.Duration
	// KeepAlive is the MQTT keep-alive. Default 30 s.
	KeepAlive time.Duration
	// InFlight is how many messages may await their PUBACK at once. Default 256.
	InFlight int
	// TelemetryFlush, when set, holds telemetry instead of committing each message: a
	// message gets its seq and is published at once, from memory, and is appended (without
	// fsync) to HoldFile; only a message the broker has not acknowledged within
	// TelemetryFlush is committed to the queue, all such together. Each bbolt commit writes
	// at least two 4 KiB pages however little it carries, so while a broker is connected this
	// cuts the flash written per reading from hundreds of bytes to about one (hold.go).
	// A crash or SIGKILL loses nothing (the hold file outlives the process); a power cut
	// while the broker is unreachable loses up to TelemetryFlush of telemetry, and the
	// telemetry seq then jumps (never reused). Default 0: every message is committed before
	// it is published.
	TelemetryFlush time.Duration
	// HoldFile is the hold file of TelemetryFlush: best in a tmpfs that outlives the process
	// but not the boot (/run). Default: the database's path + ".hold".
	HoldFile string
	// CommandQueue is how many valid commands from R/cmd may wait while one is applied
	// (commands are applied one at a time, in order); past it a command is refused "busy".
	// Default DefaultCommandQueue.
	CommandQueue int
	// OnDrop is called (outside any lock, after the drop is on disk) when the queue cap made
	// the uplink drop telemetry; the daemon turns it into an incident.
	OnDrop func(Drop)
	// Firmware returns the "firmware" object R/state carries (CONTRACT.md §8); nil: none.
	// RefreshState publishes R/state again when it changed.
	Firmware func() any
	// OnRefused is called, on a goroutine of its own, for each command refused before it was
	// run (not a valid command, or busy), with its id (maybe empty) and why; the daemon keeps
	// it in the audit trail.
	OnRefused func(id, why string)
}

// Drop reports telemetry messages the queue cap pushed out. Their seqs will never arrive.
type Drop struct {
	Messages int    // how many messages
	Bytes    int64  // how many payload bytes
	FirstSeq uint64 // lowest telemetry seq dropped
	LastSeq  uint64 // highest
	Total    uint64 // messages dropped since New
}

// Reading is one reading as published in R/telemetry (CONTRACT.md §3, §4).
type Reading struct {
	Device  string `json:"device"`
	Metric  string `json:"metric"`
	Value   any    `json:"value"`
	Unit    string `json:"unit"`
	Quality string `json:"quality"`
	TS      string `json:"ts"`
}

// Incident is one incident event as published in R/incidents (CONTRACT.md §4). Seq is set by
// the uplink.
type Incident struct {
	ID        string `json:"id"`
	Event     string `json:"event"`    // opened | escalated | acknowledged | resolved
	Severity  string `json:"severity"` // warning | critical
	Rule      string `json:"rule"`
	Device    string `json:"device"`
	Metric    string `json:"metric"`
	Value     any    `json:"value"`
	Threshold any    `json:"threshold"`
	OpenedAt  string `json:"opened_at"`
	TS        string `json:"ts"`
	// Optional fields some events carry.
	By    string `json:"by,omitempty"`    // who acknowledged
	Note  string `json:"note,omitempty"`  // free text (e.g. a drop report)
	Flaps int    `json:"flaps,omitempty"` // flapping count
}

// Command is one validated command from R/cmd.
type Command struct {
	ID       string `json:"id"`
	Action   string `json:"action"` // ack | relay | reload | update
	Incident string `json:"incident,omitempty"`
	Device   string `json:"device,omitempty"`
	State    string `json:"state,omitempty"`  // on | off | auto (relay)
	URL      string `json:"url,omitempty"`    // https:// of the bundle (update)
	SHA256   string `json:"sha256,omitempty"` // of the bundle, hex (update)
}

// Status is the uplink's state for /api/v1/status, the page and /metrics.
type Status struct {
	Connected   bool          `json:"connected"`
	Broker      string        `json:"broker"` // the broker connected to, or last tried
	Queued      int           `json:"queued"` // messages not yet acknowledged by a broker
	Held        int           `json:"held"`   // of Queued, telemetry held by TelemetryFlush (not in the disk queue)
	QueuedBytes int64         `json:"queued_bytes"`
	Incidents   int           `json:"queued_incidents"`
	Dropped     uint64        `json:"dropped"`   // telemetry messages dropped by the cap since start
	Published   uint64        `json:"published"` // messages acknowledged since start
	Connects    uint64        `json:"connects"`  // connections made since start
	LastError   string        `json:"last_error,omitempty"`
	Commands    CommandCounts `json:"commands"`
	// Sparkplug is what the Sparkplug B edge node did (mqtt.format sparkplug_b), else nil.
	Sparkplug *sparkplug.Counters `json:"sparkplug,omitempty"`
}

// Uplink is the MQTT uplink. Make it with New, run it with Run.
type Uplink struct {
	db   *bbolt.DB
	opts Options
	log  *slog.Logger
	root string
	spb  *sparkplug.Node // FormatSparkplug: the edge node telemetry goes to

	wake chan struct{} // something was enqueued or retained
	// ackWake: acknowledged messages began to wait for their delete, or one of them must
	// not wait (flushAcked); heldWake: telemetry began to be held (flusher). The goroutines
	// that commit them sleep on these instead of polling.
	ackWake  chan struct{}
	heldWake chan struct{}

	mu        sync.Mutex
	count     [2]int   // messages on disk per kind
	bytes     [2]int64 // payload bytes on disk per kind
	acked     [2][]uint64
	ackedB    int64 // bytes of acked-not-yet-deleted messages
	ackedAt   time.Time
	deletingN int   // acknowledged messages whose delete is being committed
	deletingB int64 // and their bytes
	retained  map[string][]byte
	retainGen map[string]uint64
	gen       uint64
	connected bool
	broker    string
	lastErr   string
	handler   func(ctx context.Context, c Command) error
	client    mqtt.Client    // the current connection's, for replies; nil while disconnected
	recent    recentCommands // used by runCommands only
	cmdq      chan Command   // valid commands waiting for runCommands
	refusals  chan reply     // replies receive could not publish itself
	cmdStats  commandCounters
	cmdFull   atomic.Bool // the queue was full: said once until it has room again
	// refusedLogAt is when a refused command was last logged (UnixNano).
	refusedLogAt atomic.Int64
	// stopCommands stops runCommands and replyRefusals and waits for them; only Run's
	// goroutine calls it.
	stopCommands func()
	// onConnect runs on every connection (session.go).
	onConnect func(ctx context.Context, s *Session)

	fmu sync.Mutex // serialises commits of held telemetry, and the direct path after stop
	pmu sync.Mutex // guards the held telemetry below (hold.go); never taken inside a bbolt transaction
	// held: telemetry with a seq, published or about to be, not acknowledged and not in the
	// queue; oldest first.
	held         []*heldMsg
	heldReadings int
	heldBytes    int64
	nextSeq      uint64 // the next telemetry seq to hand out
	ceiling      uint64 // the telemetry bucket's sequence: seqs up to it are reserved
	hold         *holdFile
	holdPath     string
	holdErr      bool   // the hold file failed; said once
	holdOnDisk   bool   // the hold file's folder is not in memory: held telemetry is packed (hold.go)
	boot         string // the kernel's boot_id
	stopped      bool   // Run ended: Telemetry goes to the queue directly

	// beforeEnqueue, if set, runs as enqueue begins (tests: an acknowledgement arriving then).
	beforeEnqueue func()

	dropped   atomic.Uint64
	published atomic.Uint64
	connects  atomic.Uint64
	running   atomic.Bool
}

const (
	kindIncident  = 0
	kindTelemetry = 1
)

var kindName = [2]string{"incidents", "telemetry"}

// CheckTopicLevel reports why v cannot be a part of the root topic (prefix, site, node).
func CheckTopicLevel(v string) error {
	if v == "" || strings.ContainsAny(v, "+#\x00") {
		return fmt.Errorf("%q is not usable in a topic (empty, or holds +, # or NUL)", v)
	}
	return nil
}

// CheckTelemetryQoS reports why q cannot be the telemetry QoS; the uplink publishes telemetry
// with QoS 0 or 1 only.
func CheckTelemetryQoS(q int) error {
	if q != 0 && q != 1 {
		return fmt.Errorf("telemetry QoS %d not supported (0 or 1)", q)
	}
	return nil
}

// New opens the uplink's buckets in db (shared with the rest of the daemon; the uplink's
// buckets are named "uplink.*") and counts what is queued from earlier runs.
func New(db *bbolt.DB, opts Options) (*Uplink, error) {
	if db == nil {
		return nil, errors.New("uplink: no database")
	}
	opts, err := normalize(opts)
	if err != nil {
		return nil, err
	}
	u := &Uplink{
		db:        db,
		opts:      opts,
		log:       opts.Logger.With("component", "uplink"),
		root:      opts.Prefix + "/" + opts.Site + "/" + opts.Node,
		wake:      make(chan struct{}, 1),
		ackWake:   make(chan struct{}, 1),
		heldWake:  make(chan struct{}, 1),
		retained:  map[string][]byte{},
		retainGen: map[string]uint64{},
		cmdq:      make(chan Command, opts.CommandQueue),
		refusals:  make(chan reply, maxPendingRefusals),
	}
	if err := u.openQueue(); err != nil {
		return nil, err
	}
	if err := u.openHold(); err != nil {
		return nil, err
	}
	if err := u.newSparkplug(); err != nil {
		return nil, err
	}
	return u, nil
}

// Check tells whether New would accept opts, without a database: a config reload checks the
// next uplink's settings before it stops the running one.
func Check(opts Options) error {
	_, err := normalize(opts)
	return err
}

// normalize checks opts and fills in the defaults.
func normalize(opts Options) (Options, error) {
	if len(opts.Brokers) == 0 {
		return opts, errors.New("uplink: no broker configured")
	}
	for _, b := range opts.Brokers {
		if _, _, err := mqttconn.ParseBroker(b); err != nil {
			return opts, fmt.Errorf("uplink: %w", err)
		}
	}
	for name, v := range map[string]string{"prefix": opts.Prefix, "site": opts.Site, "node": opts.Node} {
		if err := CheckTopicLevel(v); err != nil {
			return opts, fmt.Errorf("uplink: %s: %w", name, err)
		}
	}
	if err := CheckTelemetryQoS(int(opts.TelemetryQoS)); err != nil {
		return opts, fmt.Errorf("uplink: %w", err)
	}
	if err := checkFormat(opts); err != nil {
		return opts, fmt.Errorf("uplink: %w", err)
	}
	if opts.TelemetryQoS == 0 && !opts.TelemetryQoS0 {
		opts.TelemetryQoS = 1
	}
	if opts.TelemetryQoS0 {
		opts.TelemetryQoS = 0
	}
	if opts.ClientID == "" {
		opts.ClientID = "rackwatch-" + opts.Site + "-" + opts.Node
	}
	if opts.QueueMaxBytes <= 0 {
		opts.QueueMaxBytes = 256 << 20
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.BackoffBase, time.Second)
	def(&opts.BackoffMax, 60*time.Second)
	def(&opts.ProbeInterval, 30*time.Second)
	def(&opts.ConnectTimeout, 10*time.Second)
	def(&opts.AckTimeout, 30*time.Second)
	def(&opts.KeepAlive, 30*time.Second)
	if opts.InFlight <= 0 {
		opts.InFlight = 256
	}
	if opts.CommandQueue <= 0 {
		opts.CommandQueue = DefaultCommandQueue
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PasswordFile != "" {
		if _, err := readPassword(opts.PasswordFile); err != nil {
			return opts, fmt.Errorf("uplink: %w", err)
		}
	}
	if _, err := tlsConfig(opts, "localhost"); err != nil {
		return opts, fmt.Errorf("uplink: %w", err)
	}
	return opts, nil
}

// Root is the root topic R.
func (u *Uplink) Root() string { return u.root }

// OnCommand sets the handler for validated commands from R/cmd. The reply is ok:true when it
// returns nil, ok:false with the error's text otherwise. Without a handler every command is
// refused. Commands are serialised: the handler runs on one goroutine, one command at a time,
// in the order they arrived; while it runs, the next ones wait in a queue of
// Options.CommandQueue (past it they are refused "busy"), so a handler may block until its
// outcome is known. It should return soon after ctx ends: Run waits for it.
func (u *Uplink) OnCommand(h func(ctx context.Context, c Command) error) {
	u.mu.Lock()
	u.handler = h
	u.mu.Unlock()
}

// Status returns the current state.
func (u *Uplink) Status() Status {
	u.pmu.Lock()
	held, heldB := len(u.held), u.heldBytes
	u.pmu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	// Acknowledged messages wait for their delete commit; one the cap dropped meanwhile is
	// no longer counted on disk, hence the clamps.
	acked := len(u.acked[0]) + len(u.acked[1]) + u.deletingN
	var spb *sparkplug.Counters
	if u.spb != nil {
		c := u.spb.Counters()
		spb = &c
	}
	return Status{
		Sparkplug:   spb,
		Held:        held,
		Connected:   u.connected,
		Broker:      u.broker,
		Queued:      held + max(0, u.count[0]+u.count[1]-acked),
		QueuedBytes: heldB + max(0, u.bytes[0]+u.bytes[1]-u.ackedB-u.deletingB),
		Incidents:   max(0, u.count[kindIncident]-len(u.acked[kindIncident])),
		Dropped:     u.dropped.Load(),
		Published:   u.published.Load(),
		Connects:    u.connects.Load(),
		LastError:   u.lastErr,
		Commands:    u.cmdStats.load(),
	}
}

// Telemetry enqueues one telemetry message with these readings under the next telemetry seq.
// Without TelemetryFlush it returns once the message is on disk. With TelemetryFlush the
// message is held (hold.go): it goes out at once and is committed only if no broker
// acknowledged it within TelemetryFlush, or when Run ends. With FormatSparkplug the readings
// go to the Sparkplug edge node instead, which publishes what changed.
func (u *Uplink) Telemetry(rs []Reading) error {
	if u.spb != nil {
		u.sparkplugTelemetry(rs)
		return nil
	}
	if rs == nil {
		rs = []Reading{}
	}
	it := telemetryItem(formatTime(time.Now()), rs)
	u.pmu.Lock()
	if u.opts.TelemetryFlush <= 0 || u.stopped {
		u.pmu.Unlock()
		u.fmu.Lock() // after a stop: once its commit set the seq back
		drop, err := u.enqueue([]item{it}, nil)
		u.fmu.Unlock()
		u.reportDrop(drop)
		return err
	}
	full, err := u.hold1(it, len(rs))
	u.pmu.Unlock()
	if err != nil {
		return err
	}
	u.poke()
	if full {
		return u.Flush()
	}
	return nil
}

// maxPendingReadings bounds the memory held telemetry may take: past it, it is committed.
const maxPendingReadings = 20000

func telemetryItem(ts string, rs []Reading) item {
	return item{kind: kindTelemetry, build: func(seq uint64) ([]byte, error) {
		return json.Marshal(struct {
			Seq      uint64    `json:"seq"`
			TS       string    `json:"ts"`
			Readings []Reading `json:"readings"`
		}{seq, ts, rs})
	}}
}

// Flush commits the held telemetry not yet acknowledged (TelemetryFlush).
func (u *Uplink) Flush() error {
	drop, err := u.commitHeld(false)
	u.reportDrop(drop) // outside fmu: OnDrop may call Incident
	return err
}

// Incident enqueues one incident event under the next incidents seq. It returns once the
// message is on disk. Incidents are never dropped by the queue cap.
func (u *Uplink) Incident(in Incident) error {
	drop, err := u.enqueue([]item{incidentItem(in)}, nil)
	u.reportDrop(drop)
	return err
}

// incidentItem is an incident event to enqueue; TS defaults to now.
func incidentItem(in Incident) item {
	if in.TS == "" {
		in.TS = formatTime(time.Now())
	}
	return item{kind: kindIncident, build: func(seq uint64) ([]byte, error) {
		return json.Marshal(struct {
			Seq uint64 `json:"seq"`
			Incident
		}{seq, in})
	}}
}

// IncidentTx stages one incident event under the next incidents seq inside tx, a write
// transaction on the uplink's own database, so that the caller's record of the incident and
// the queued message are one commit (one fsync on the alarm path instead of two). Call
// committed once tx has committed; if tx rolls back, drop it.
func (u *Uplink) IncidentTx(tx *bbolt.Tx, in Incident) (committed func(), err error) {
	if tx.DB() != u.db || !tx.Writable() {
		return nil, errors.New("uplink: IncidentTx needs a write transaction on the uplink's database")
	}
	b := tx.Bucket(bucketNames[kindIncident])
	seq, payload, err := incidentItem(in).prepare(b)
	if err != nil {
		return nil, fmt.Errorf("uplink: stage incident: %w", err)
	}
	if err := b.Put(seqKey(seq), payload); err != nil {
		return nil, fmt.Errorf("uplink: stage incident: %w", err)
	}
	n := int64(len(payload))
	// No u.mu inside tx: enqueue holds u.mu while it waits for the write lock.
	return func() {
		u.mu.Lock()
		u.count[kindIncident]++
		u.bytes[kindIncident] += n
		u.mu.Unlock()
		u.poke()
	}, nil
}

// reserved subtopics belong to the contract and cannot be used by Retain.
var reserved = map[string]bool{"state": true, "telemetry": true, "incidents": true, "cmd": true, "audit": true}

// Retain publishes payload (JSON-encoded) retained with QoS 1 on R/subtopic, now if connected
// and again after every reconnect. Only the latest payload per subtopic is kept, in memory.
func (u *Uplink) Retain(subtopic string, payload any) error {
	first, _, _ := strings.Cut(subtopic, "/")
	if subtopic == "" || reserved[first] || strings.ContainsAny(subtopic, "+#\x00") ||
		strings.HasPrefix(subtopic, "/") || strings.HasSuffix(subtopic, "/") {
		return fmt.Errorf("uplink: retain: subtopic %q not allowed", subtopic)
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("uplink: retain %s: %w", subtopic, err)
	}
	u.mu.Lock()
	u.gen++
	u.retained[subtopic] = b
	u.retainGen[subtopic] = u.gen
	u.mu.Unlock()
	u.poke()
	return nil
}

// stateKey marks R/state in retained: RefreshState asks for it to be published again.
const stateKey = "\x00state"

// RefreshState publishes R/state ("online", with the current Firmware) again, now if
// connected; a later connection publishes it anyway.
func (u *Uplink) RefreshState() {
	u.mu.Lock()
	u.gen++
	u.retainGen[stateKey] = u.gen
	u.mu.Unlock()
	u.poke()
}

// ErrNotConnected is what Publish returns while no broker is connected.
var ErrNotConnected = errors.New("uplink: not connected")

// Publish sends payload on R/subtopic with QoS 1, not retained, and returns once the broker
// acknowledged it. Nothing is queued here: the caller keeps the message until Publish returns
// nil (the audit trail is its own durable queue) and tries again later.
func (u *Uplink) Publish(ctx context.Context, subtopic string, payload []byte) error {
	u.mu.Lock()
	c := u.client
	u.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	t := c.Publish(u.root+"/"+subtopic, 1, false, payload)
	timer := time.NewTimer(u.opts.AckTimeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fmt.Errorf("uplink: publish %s: %w", subtopic, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("uplink: publish %s: no answer within %v", subtopic, u.opts.AckTimeout)
	}
}

func (u *Uplink) poke() { signal(u.wake) }

// signal wakes whoever waits on c, if nobody has yet.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (u *Uplink) setErr(err error) {
	u.mu.Lock()
	u.lastErr = err.Error()
	u.mu.Unlock()
}

// formatTime writes RFC 3339 UTC with milliseconds, as sensors.FormatTime does.
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(line, "\r"), nil
}

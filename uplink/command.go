package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.etcd.io/bbolt"
)

// MaxCommandBytes is the largest command payload accepted on R/cmd.
const MaxCommandBytes = 4096

// parseCommand validates one R/cmd payload strictly: one JSON object, no unknown field, a
// known action with exactly the fields it needs. A refused command has no side effect; the
// error says why and goes back in the reply.
func parseCommand(b []byte) (Command, error) {
	var c Command
	if len(b) > MaxCommandBytes {
		return c, fmt.Errorf("command of %d bytes exceeds the limit of %d", len(b), MaxCommandBytes)
	}
	if err := checkKeys(b); err != nil {
		return c, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{ID: c.ID}, fmt.Errorf("malformed command: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Command{ID: c.ID}, errors.New("malformed command: data after the JSON object")
	}
	if c.ID == "" {
		return c, errors.New(`missing "id"`)
	}
	if len(c.ID) > 128 {
		return Command{}, errors.New(`"id" longer than 128 bytes`)
	}
	extra := func(allowed ...string) error {
		fields := map[string]string{"incident": c.Incident, "device": c.Device, "state": c.State, "url": c.URL, "sha256": c.SHA256}
		for _, a := range allowed {
			delete(fields, a)
		}
		for _, f := range []string{"incident", "device", "state", "url", "sha256"} {
			if v, ok := fields[f]; ok && v != "" {
				return fmt.Errorf("field %q not allowed for action %q", f, c.Action)
			}
		}
		return nil
	}
	switch c.Action {
	case "ack":
		if c.Incident == "" {
			return c, errors.New(`action "ack" needs "incident"`)
		}
		return c, extra("incident")
	case "relay":
		if c.Device == "" {
			return c, errors.New(`action "relay" needs "device"`)
		}
		switch c.State {
		case "on", "off", "auto":
		default:
			return c, fmt.Errorf(`action "relay" needs "state" on, off or auto, not %q`, c.State)
		}
		return c, extra("device", "state")
	case "reload":
		return c, extra()
	case "update":
		if c.URL == "" || c.SHA256 == "" {
			return c, errors.New(`action "update" needs "url" and "sha256"`)
		}
		return c, extra("url", "sha256")
	case "":
		return c, errors.New(`missing "action"`)
	}
	return c, fmt.Errorf("unknown action %q", c.Action)
}

// checkKeys makes sure the payload is one JSON object whose keys are exactly (in case) the
// Command's and none comes twice: encoding/json alone would accept "ID" for "id" and keep the
// last of two "action"s.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("malformed command: not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("malformed command: %w", err)
		}
		k, _ := t.(string)
		switch k {
		case "id", "action", "incident", "device", "state", "url", "sha256":
		default:
			return fmt.Errorf("malformed command: unknown field %q", k)
		}
		if seen[k] {
			return fmt.Errorf("malformed command: field %q given twice", k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("malformed command: %w", err)
		}
	}
	return nil
}

type reply struct {
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// recentCommands remembers the first reply to each of the last commands by id, in memory and
// in repliesBucket: QoS 1 may deliver a command twice (a PUBACK lost with the connection or
// with the process), and central may send an id again when its reply was lost; the second
// delivery gets the first answer without acting again. Only runCommands uses it.
type recentCommands struct {
	loaded  bool
	replies map[string]reply
	order   []recentEntry // oldest first
}

type recentEntry struct {
	id  string
	key []byte // its record in repliesBucket; nil when not stored
}

const rememberCommands = 256

var repliesBucket = []byte("uplink.replies")

func (r *recentCommands) get(id string) (reply, bool) {
	rep, ok := r.replies[id]
	return rep, ok
}

// add remembers rep unless its id is known, and returns the records of the entries it
// pushed out (and key itself when the id was known).
func (r *recentCommands) add(rep reply, key []byte) (stale [][]byte) {
	if r.replies == nil {
		r.replies = map[string]reply{}
	}
	if _, ok := r.replies[rep.ID]; ok {
		if key != nil {
			stale = append(stale, key)
		}
		return stale
	}
	r.replies[rep.ID] = rep
	r.order = append(r.order, recentEntry{id: rep.ID, key: key})
	for len(r.order) > rememberCommands {
		delete(r.replies, r.order[0].id)
		if r.order[0].key != nil {
			stale = append(stale, r.order[0].key)
		}
		r.order = r.order[1:]
	}
	return stale
}

// loadRecent reads the replies remembered by earlier runs, once.
func (u *Uplink) loadRecent() {
	r := &u.recent
	if r.loaded {
		return
	}
	r.loaded = true
	var stale [][]byte
	err := u.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(repliesBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var rep reply
			if err := json.Unmarshal(v, &rep); err != nil || rep.ID == "" {
				stale = append(stale, bytes.Clone(k))
				return nil
			}
			stale = append(stale, r.add(rep, bytes.Clone(k))...)
			return nil
		})
	})
	if err == nil && len(stale) > 0 {
		err = u.db.Update(func(tx *bbolt.Tx) error { return deleteKeys(tx.Bucket(repliesBucket), stale) })
	}
	if err != nil {
		u.log.Warn("replies to earlier commands not read: a repeated id may run again", "err", err)
	}
}

// remember keeps rep as the reply to its id, in memory and on disk.
func (u *Uplink) remember(rep reply) {
	r := &u.recent
	stale := r.add(rep, nil)
	v, _ := json.Marshal(rep)
	var key []byte
	err := u.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(repliesBucket)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		key = seqKey(seq)
		if err := b.Put(key, v); err != nil {
			return err
		}
		return deleteKeys(b, stale)
	})
	if err != nil {
		u.log.Warn("reply not stored: kept in memory only", "id", rep.ID, "err", err)
		return
	}
	if e := &r.order[len(r.order)-1]; e.id == rep.ID {
		e.key = key
	}
}

func deleteKeys(b *bbolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Commands are applied one at a time, in the order the broker delivered them, so that
// central's last order is the one that sticks. paho calls receive on its router goroutine
// (order matters), which must not block: the PUBACKs of our own publishes come in on the
// same path. So receive only checks a command and queues it, and one worker, runCommands,
// applies them; a handler may take as long as it needs, the queue just waits. A full queue
// refuses at once with "busy"; that reply is not remembered, so the same id may come again.

// DefaultCommandQueue is how many valid commands may wait for the one being applied.
const DefaultCommandQueue = 64

// maxPendingRefusals bounds the replies to refused and busy commands waiting to be published.
const maxPendingRefusals = 16

// CommandCounts counts the messages received on R/cmd since New, by outcome.
type CommandCounts struct {
	OK             uint64 `json:"ok"`              // applied, handler returned nil
	Failed         uint64 `json:"failed"`          // applied, handler returned an error
	Refused        uint64 `json:"refused"`         // not a valid command: not applied
	Repeated       uint64 `json:"repeated"`        // an id already answered: its first reply again, not applied
	Busy           uint64 `json:"busy"`            // the queue was full: not applied
	Abandoned      uint64 `json:"abandoned"`       // still queued when Run ended: not applied
	RepliesDropped uint64 `json:"replies_dropped"` // refusals left unanswered, too many at once
}

type commandCounters struct {
	ok, failed, refused, repeated, busy, abandoned, repliesDropped atomic.Uint64
}

func (c *commandCounters) load() CommandCounts {
	return CommandCounts{
		OK: c.ok.Load(), Failed: c.failed.Load(), Refused: c.refused.Load(), Repeated: c.repeated.Load(),
		Busy: c.busy.Load(), Abandoned: c.abandoned.Load(), RepliesDropped: c.repliesDropped.Load(),
	}
}

// receive takes one message from R/cmd on paho's router goroutine; it never blocks.
func (u *Uplink) receive(m mqtt.Message) {
	cmd, err := parseCommand(m.Payload())
	if err != nil {
		n := u.cmdStats.refused.Add(1)
		// At most one line a second: garbage sent in a flood must not flood the log too.
		now, last := time.Now().UnixNano(), u.refusedLogAt.Load()
		if now-last >= int64(time.Second) && u.refusedLogAt.CompareAndSwap(last, now) {
			u.log.Warn("command refused", "id", cmd.ID, "err", err, "refused_total", n)
		}
		u.replyLater(reply{ID: cmd.ID, Error: err.Error()})
		return
	}
	select {
	case u.cmdq <- cmd:
	default:
		u.cmdStats.busy.Add(1)
		// Once per episode: a flood of commands must not become a flood of log lines.
		if u.cmdFull.CompareAndSwap(false, true) {
			u.log.Warn("command queue full: refusing commands as busy until it drains", "id", cmd.ID, "action", cmd.Action, "waiting", cap(u.cmdq))
		}
		u.replyLater(reply{ID: cmd.ID, Error: fmt.Sprintf("busy: %d commands already waiting; not run, send it again later", cap(u.cmdq))})
	}
}

// replyLater hands a refusal to replyRefusals: paho's router goroutine must not publish.
func (u *Uplink) replyLater(r reply) {
	select {
	case u.refusals <- r:
	default:
		u.cmdStats.repliesDropped.Add(1)
	}
}

// runCommands applies queued commands one at a time until ctx ends. What is still queued
// then is not applied; its PUBACK is gone, so it is answered (not remembered) for central to
// send it again.
func (u *Uplink) runCommands(ctx context.Context) {
	u.loadRecent()
	defer func() {
		for {
			select {
			case cmd := <-u.cmdq:
				u.abandon(cmd)
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case cmd := <-u.cmdq:
			if len(u.cmdq) == 0 && u.cmdFull.CompareAndSwap(true, false) {
				u.log.Info("command queue drained", "busy_total", u.cmdStats.busy.Load())
			}
			if ctx.Err() != nil {
				u.abandon(cmd)
				return
			}
			u.publishReply(u.command(ctx, cmd))
		}
	}
}

func (u *Uplink) abandon(cmd Command) {
	u.cmdStats.abandoned.Add(1)
	u.publishReply(reply{ID: cmd.ID, Error: "not run: the uplink is stopping; send it again"})
}

// replyRefusals publishes the replies receive could not publish itself, until ctx ends.
func (u *Uplink) replyRefusals(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-u.refusals:
			u.publishReply(r)
			if u.opts.OnRefused != nil {
				u.opts.OnRefused(r.ID, r.Error)
			}
		}
	}
}

// publishReply publishes r on the current connection, best effort: a reply lost with the
// connection is not queued (the command, if its PUBACK was lost too, comes again through the
// persistent session and gets the same reply from recent).
func (u *Uplink) publishReply(r reply) {
	b, _ := json.Marshal(r)
	u.mu.Lock()
	cl := u.client
	u.mu.Unlock()
	if cl == nil {
		u.log.Warn("command reply lost: not connected", "id", r.ID)
		return
	}
	cl.Publish(u.root+"/cmd/reply", 1, false, b)
}

// command applies cmd unless its id was answered already; only runCommands calls it.
func (u *Uplink) command(ctx context.Context, cmd Command) reply {
	if rep, ok := u.recent.get(cmd.ID); ok {
		u.cmdStats.repeated.Add(1)
		u.log.Info("command repeated, not run again", "id", cmd.ID, "action", cmd.Action)
		return rep
	}
	u.mu.Lock()
	h := u.handler
	u.mu.Unlock()
	if h == nil {
		// Not remembered: nothing was done, and a handler may be set by the next delivery.
		u.cmdStats.failed.Add(1)
		return reply{ID: cmd.ID, Error: "commands are not handled by this node"}
	}
	rep := u.run(ctx, h, cmd)
	u.remember(rep)
	return rep
}

func (u *Uplink) run(ctx context.Context, h func(context.Context, Command) error, cmd Command) reply {
	if err := h(ctx, cmd); err != nil {
		u.cmdStats.failed.Add(1)
		u.log.Warn("command failed", "id", cmd.ID, "action", cmd.Action, "err", err)
		return reply{ID: cmd.ID, Error: err.Error()}
	}
	u.cmdStats.ok.Add(1)
	u.log.Info("command done", "id", cmd.ID, "action", cmd.Action)
	return reply{ID: cmd.ID, OK: true}
}

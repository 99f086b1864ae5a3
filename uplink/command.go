package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	mqtt "github.com/eclipse/paho.mqtt.golang"
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
		fields := map[string]string{"incident": c.Incident, "device": c.Device, "state": c.State}
		for _, a := range allowed {
			delete(fields, a)
		}
		for _, f := range []string{"incident", "device", "state"} {
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
		case "id", "action", "incident", "device", "state":
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

// commands runs the commands of connection c one at a time until ctx ends.
func (u *Uplink) commands(ctx context.Context, c *conn) {
	for {
		var m mqtt.Message
		select {
		case <-ctx.Done():
			return
		case m = <-c.cmds:
		}
		r := u.command(ctx, m.Payload())
		b, _ := json.Marshal(r)
		// Best effort: a reply lost with the connection is not queued (the command, if its
		// PUBACK was lost too, comes again through the persistent session).
		c.client.Publish(u.root+"/cmd/reply", 1, false, b)
	}
}

// recentCommands remembers the replies to the last commands by id: QoS 1 may deliver a
// command twice (a PUBACK lost with the connection), and the second delivery must get the
// same answer without acting again.
type recentCommands struct {
	replies map[string]reply
	order   []string
}

const rememberCommands = 256

func (r *recentCommands) get(id string) (reply, bool) {
	rep, ok := r.replies[id]
	return rep, ok
}

func (r *recentCommands) put(id string, rep reply) {
	if r.replies == nil {
		r.replies = map[string]reply{}
	}
	if _, ok := r.replies[id]; !ok {
		r.order = append(r.order, id)
	}
	r.replies[id] = rep
	if len(r.order) > rememberCommands {
		delete(r.replies, r.order[0])
		r.order = r.order[1:]
	}
}

func (u *Uplink) command(ctx context.Context, payload []byte) reply {
	cmd, err := parseCommand(payload)
	if err != nil {
		u.log.Warn("command refused", "id", cmd.ID, "err", err)
		return reply{ID: cmd.ID, Error: err.Error()}
	}
	// Only the commands goroutine of the current connection runs this, one at a time.
	if rep, ok := u.recent.get(cmd.ID); ok {
		u.log.Info("command repeated, not run again", "id", cmd.ID, "action", cmd.Action)
		return rep
	}
	rep := u.run(ctx, cmd)
	u.recent.put(cmd.ID, rep)
	return rep
}

func (u *Uplink) run(ctx context.Context, cmd Command) reply {
	u.mu.Lock()
	h := u.handler
	u.mu.Unlock()
	if h == nil {
		return reply{ID: cmd.ID, Error: "commands are not handled by this node"}
	}
	if err := h(ctx, cmd); err != nil {
		u.log.Warn("command failed", "id", cmd.ID, "action", cmd.Action, "err", err)
		return reply{ID: cmd.ID, Error: err.Error()}
	}
	u.log.Info("command done", "id", cmd.ID, "action", cmd.Action)
	return reply{ID: cmd.ID, OK: true}
}

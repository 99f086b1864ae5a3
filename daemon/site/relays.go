package site

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/sensors"
)

// relays owns every relay's output. An operator override (on, off) wins over the policies
// until it is set back to auto; the override is persisted, so it survives a restart. Every
// change is an event with who and why.
type relays struct {
	s   *Site
	m   map[string]*relay
	ids []string
}

type relay struct {
	id      string
	spec    sensors.Spec
	act     sensors.Actuator
	mode    string // auto, on, off
	want    bool   // what the policies ask for (in auto)
	wantWhy string
	on      bool
	known   bool // on is what the hardware was last set to
	by, why string
	changed time.Time
}

type savedMode struct {
	Mode string    `json:"mode"`
	By   string    `json:"by"`
	At   time.Time `json:"at"`
}

var bRelays = []byte("relays")

func newRelays(s *Site) *relays {
	rs := &relays{s: s, m: map[string]*relay{}}
	for _, spec := range s.cfg.Devices {
		if sensors.SpecClass(spec) != sensors.ClassRelay {
			continue
		}
		act, ok := s.devs[spec.ID].(sensors.Actuator)
		if !ok {
			continue
		}
		safe := sensors.SafeOn(spec)
		r := &relay{id: spec.ID, spec: spec, act: act, mode: "auto", want: safe, wantWhy: "safe state", on: safe}
		s.db.View(func(tx *bolt.Tx) error {
			var sm savedMode
			b := tx.Bucket(bRelays) // nil until an override is saved
			if b == nil {
				return nil
			}
			if v := b.Get([]byte(spec.ID)); v != nil && json.Unmarshal(v, &sm) == nil {
				r.mode, r.by, r.changed = sm.Mode, sm.By, sm.At
			}
			return nil
		})
		rs.m[spec.ID] = r
		rs.ids = append(rs.ids, spec.ID)
		if r.mode != "auto" {
			rs.apply(r, r.by, "operator override (restored)")
		}
	}
	return rs
}

// setMode is an operator's override. Called with s.mu held.
func (rs *relays) setMode(id, mode, by string) error {
	r, ok := rs.m[id]
	if !ok {
		return fmt.Errorf("no relay %q", id)
	}
	switch mode {
	case "on", "off", "auto":
	default:
		return fmt.Errorf("relay state is on, off or auto, not %q", mode)
	}
	b, _ := json.Marshal(savedMode{Mode: mode, By: by, At: rs.s.now()})
	err := rs.s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bRelays)
		if err != nil {
			return err
		}
		if err := bk.Put([]byte(id), b); err != nil {
			return err
		}
		return rs.s.recordTx(tx, audit.Record{Actor: by, Source: sourceOf(by), Action: audit.ActionRelay, Target: id, Detail: "mode " + mode})
	})
	if err != nil {
		return fmt.Errorf("relay %s: save override: %w", id, err)
	}
	r.mode = mode
	rs.s.log.Info("relay mode set", "relay", id, "mode", mode, "by", by)
	why := "operator override"
	if mode == "auto" {
		why = "back to automatic: " + r.wantWhy
	}
	return rs.apply(r, by, why)
}

// policy is what a policy asks of a relay. Called with s.mu held.
func (rs *relays) policy(id string, on bool, who, why string) {
	r, ok := rs.m[id]
	if !ok {
		return
	}
	r.want, r.wantWhy = on, why
	if r.mode == "auto" {
		if err := rs.apply(r, who, why); err != nil {
			rs.s.log.Error("relay not switched", "relay", id, "err", err)
		}
	}
}

func (rs *relays) apply(r *relay, by, why string) error {
	on := r.want
	if r.mode != "auto" {
		on = r.mode == "on"
	}
	if r.known && on == r.on {
		r.by, r.why = by, why
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.act.Set(ctx, on); err != nil {
		return fmt.Errorf("relay %s: %w", r.id, err)
	}
	now := rs.s.now()
	r.on, r.known, r.by, r.why, r.changed = on, true, by, why, now
	rs.s.log.Info("relay switched", "relay", r.id, "on", on, "by", by, "why", why)
	rs.s.hub.publish(web.Event{Type: "relay", Data: rs.view(r)})
	rd := sensors.Num(r.id, "relay", b2f(on), "", now)
	rs.s.store.Push(r.id, []sensors.Reading{rd})
	return nil
}

// safe puts every relay in its safe state (clean stop), and shows it in the readings, so the
// last telemetry before offline says what the rack was left in. Called with s.mu held.
func (rs *relays) safe() {
	for _, id := range rs.ids {
		r := rs.m[id]
		on := sensors.SafeOn(r.spec)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.act.Set(ctx, on)
		cancel()
		if err != nil {
			rs.s.log.Error("relay not put in its safe state", "relay", id, "err", err)
			continue
		}
		now := rs.s.now()
		r.on, r.known, r.by, r.why, r.changed = on, true, "system", "safe state at stop", now
		rs.s.log.Info("relay in its safe state", "relay", id, "on", on)
		rs.s.store.Push(r.id, []sensors.Reading{sensors.Num(r.id, "relay", b2f(on), "", now)})
	}
}

func (rs *relays) view(r *relay) web.Relay {
	return web.Relay{ID: r.id, On: r.on, Mode: r.mode, ChangedBy: r.by, Why: r.why, Changed: fmtTime(r.changed), Engine: rs.engine(r.id)}
}

// engine is the generator controller's word on the engine, beside the relay that starts it.
func (rs *relays) engine(relay string) string {
	p := rs.s.cfg.Failover.Power
	if p == nil || p.GeneratorDevice == "" || p.GeneratorRelay != relay {
		return ""
	}
	st, ok := rs.s.store.Reading(p.GeneratorDevice, "engine.state.text")
	if !ok || st.Quality != sensors.Good {
		return "unknown"
	}
	out := st.Text
	if v, ok := rs.s.store.Reading(p.GeneratorDevice, "generator.voltage.l1"); ok && v.Quality == sensors.Good {
		out += fmt.Sprintf(", %.0f V", v.Value)
	}
	return out
}

func (rs *relays) list() []web.Relay {
	out := make([]web.Relay, 0, len(rs.ids))
	for _, id := range rs.ids {
		out = append(out, rs.view(rs.m[id]))
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func fmtTime(t time.Time) string { return sensors.FormatTime(t) }

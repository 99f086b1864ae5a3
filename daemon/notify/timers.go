package notify

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A timer is kept in the database (bucket notify-timers) so that an escalation or a reminder
// that falls due while the daemon is down goes out when it is back.
type timer struct {
	Due     time.Time     `json:"due"`
	Kind    string        `json:"kind"` // escalate, repeat
	Targets []string      `json:"targets"`
	Every   time.Duration `json:"every,omitempty"`
	Repeat  int           `json:"repeat,omitempty"`
	Event   Event         `json:"event"`
}

// Keys: "t/<incident id>/<route>/<kind>" for timers, "e/<incident id>" for the targets an
// escalation reached.
func timerPrefix(id string) []byte  { return []byte("t/" + id + "/") }
func escalatedKey(id string) []byte { return []byte("e/" + id) }

// keepTimers starts the timers an event of a critical incident asks for and ends those of an
// incident acknowledged or resolved.
func (n *Notifier) keepTimers(tb *bolt.Bucket, e Event) error {
	switch e.Event {
	case Acknowledged, Resolved:
		c := tb.Cursor()
		p := timerPrefix(e.ID)
		for k, _ := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, _ = c.Seek(p) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if e.Event == Resolved {
			return tb.Delete(escalatedKey(e.ID))
		}
		return nil
	}
	if !e.critical() {
		return nil
	}
	opened, err := time.Parse(time.RFC3339Nano, e.OpenedAt)
	if err != nil {
		opened = n.opt.Now()
	}
	for i, r := range n.cfg.Routes {
		if !r.match(e) {
			continue
		}
		put := func(kind string, t timer) error {
			k := []byte(string(timerPrefix(e.ID)) + itoa(i) + "/" + kind)
			if tb.Get(k) != nil {
				return nil
			}
			b, err := json.Marshal(t)
			if err != nil {
				return err
			}
			return tb.Put(k, b)
		}
		if r.EscalateAfter > 0 && len(r.EscalateTo) > 0 {
			if err := put("escalate", timer{Due: opened.Add(r.EscalateAfter), Kind: "escalate", Targets: r.EscalateTo, Event: e}); err != nil {
				return err
			}
		}
		if r.RepeatEvery > 0 {
			if err := put("repeat", timer{Due: n.opt.Now().Add(r.RepeatEvery), Kind: "repeat", Targets: r.Targets, Every: r.RepeatEvery, Event: e}); err != nil {
				return err
			}
		}
	}
	return nil
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// timers fires the escalations and reminders that are due, and sleeps until the next one.
func (n *Notifier) timers(ctx context.Context) {
	for {
		next := n.fire()
		var c <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(max(next.Sub(n.opt.Now()), 0))
			c = t.C
		}
		select {
		case <-ctx.Done():
		case <-n.wakeT:
		case <-c:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// fire queues what is due and returns when the next timer falls due (zero: none).
func (n *Notifier) fire() time.Time {
	var next time.Time
	var woken []string
	now := n.opt.Now()
	// Most wakes find nothing due: look before taking a write transaction.
	anyDue := false
	n.db.View(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bTimers)
		if tb == nil {
			return nil
		}
		return tb.ForEach(func(k, v []byte) error {
			var t timer
			if strings.HasPrefix(string(k), "t/") && json.Unmarshal(v, &t) == nil {
				if !t.Due.After(now) {
					anyDue = true
				} else if next.IsZero() || t.Due.Before(next) {
					next = t.Due
				}
			}
			return nil
		})
	})
	if !anyDue {
		return next
	}
	err := n.db.Update(func(tx *bolt.Tx) error {
		next, woken = time.Time{}, nil
		tb := tx.Bucket(bTimers)
		if tb == nil {
			return nil
		}
		type due struct {
			k []byte
			t timer
		}
		var dues []due
		err := tb.ForEach(func(k, v []byte) error {
			if !strings.HasPrefix(string(k), "t/") {
				return nil
			}
			var t timer
			if err := json.Unmarshal(v, &t); err != nil {
				return nil
			}
			if !t.Due.After(now) {
				dues = append(dues, due{append([]byte(nil), k...), t})
			} else if next.IsZero() || t.Due.Before(next) {
				next = t.Due
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, d := range dues {
			e := d.t.Event
			e.TS = now.UTC().Format("2006-01-02T15:04:05.000Z07:00")
			switch d.t.Kind {
			case "escalate":
				e.Event = Escalated
				if err := tb.Delete(d.k); err != nil {
					return err
				}
				var reached []string
				if v := tb.Get(escalatedKey(e.ID)); v != nil {
					json.Unmarshal(v, &reached)
				}
				for _, name := range d.t.Targets {
					if err := n.enqueue(tx, n.targets[name], entry{Event: e}); err != nil {
						return err
					}
					woken = append(woken, name)
					reached = append(reached, name)
				}
				b, _ := json.Marshal(reached)
				if err := tb.Put(escalatedKey(e.ID), b); err != nil {
					return err
				}
			case "repeat":
				d.t.Repeat++
				for _, name := range d.t.Targets {
					if err := n.enqueue(tx, n.targets[name], entry{Event: e, Repeat: d.t.Repeat}); err != nil {
						return err
					}
					woken = append(woken, name)
				}
				d.t.Due = now.Add(d.t.Every)
				b, _ := json.Marshal(d.t)
				if err := tb.Put(d.k, b); err != nil {
					return err
				}
				if next.IsZero() || d.t.Due.Before(next) {
					next = d.t.Due
				}
			default:
				tb.Delete(d.k)
			}
		}
		return nil
	})
	if err != nil {
		n.opt.Log.Error("notify timers", "err", err)
		return now.Add(time.Minute)
	}
	for _, name := range woken {
		if t := n.targets[name]; t != nil {
			poke(t.wake)
		}
	}
	return next
}

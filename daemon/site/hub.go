package site

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
)

// hub fans events out to the page's server-sent-event streams. A slow reader loses events
// (its queue is full) rather than slowing the site or growing its memory; dropped counts
// them. The page only needs an event as a nudge to fetch the live part again, so a short
// queue loses nothing it shows.
type hub struct {
	mu      sync.Mutex
	subs    map[chan web.Event]struct{}
	dropped atomic.Uint64
}

// subQueue is each stream's queue of events, in events.
const subQueue = 64

func newHub() *hub { return &hub{subs: map[chan web.Event]struct{}{}} }

func (h *hub) subscribe() (<-chan web.Event, func()) {
	ch := make(chan web.Event, subQueue)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

func (h *hub) publish(e web.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
			h.dropped.Add(1)
		}
	}
}

func (h *hub) publishTrap(t snmptrap.Trap, from string) {
	h.publish(web.Event{Type: "trap", Data: map[string]any{"from": from, "trap": t.Name, "oid": t.TrapOID, "alarm": t.Alarm, "ts": t.Time.UTC().Format(time.RFC3339)}})
}

package state

import (
	"math"
	"time"
	"unsafe"
)

// Point is one stored value.
type Point struct {
	TS    time.Time `json:"ts"`
	Value float64   `json:"value"`
}

// Ring holds a window of one metric's history in bounded memory.
//
// Raw points go into slots of one per Step (a minute's bucket keeps its last value and how
// many it averaged), so memory depends on the window, not on the poll rate: 24 h is 1,440
// slots of 8 bytes (a float32 value and a uint32 second offset), 11.5 KB per metric, whether
// the device is polled every second or every minute. The newest minute is kept at full
// resolution too (Recent), so the live chart and a 1 h view stay sharp.
type Ring struct {
	step    time.Duration
	base    int64 // unix seconds of slot 0's start
	slots   []slot
	head    int    // index of the newest slot
	headCnt uint32 // points averaged into the newest slot
	n       int    // slots in use
	recent  []Point
}

type slot struct {
	off uint32  // 1 + seconds since base of the last point in the slot; 0: empty
	sum float32 // mean of the slot's points
}

func (s slot) empty() bool { return s.off == 0 }
func (s slot) sec() int64  { return int64(s.off) - 1 }

func mkslot(sec int64, v float64) slot { return slot{off: uint32(sec + 1), sum: float32(v)} }

const recentMax = 64

// NewRing keeps window of history at one slot a minute (or finer for short windows).
func NewRing(window time.Duration) *Ring {
	step := time.Minute
	if window < 24*time.Hour {
		step = max(window/1440, time.Second)
	}
	n := int(window / step)
	if n < 1 {
		n = 1
	}
	return &Ring{step: step, slots: make([]slot, n)}
}

// Add records a value.
func (r *Ring) Add(ts time.Time, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	sec := ts.Unix()
	stepS := int64(r.step / time.Second)
	if r.n == 0 {
		r.base = sec - sec%stepS
		r.head = 0
		r.n = 1
		r.slots[0] = mkslot(sec-r.base, v)
		r.headCnt = 1
	} else {
		headStart := r.base + r.slots[r.head].sec() - r.slots[r.head].sec()%stepS
		switch {
		case sec < headStart:
			// Clock went back or a late point: fold it into the newest slot.
			r.merge(v)
		case sec < headStart+stepS:
			r.merge(v)
			r.slots[r.head].off = uint32(sec - r.base + 1)
		default:
			gap := (sec - headStart) / stepS
			if gap > int64(len(r.slots)) {
				gap = int64(len(r.slots))
			}
			for i := int64(0); i < gap; i++ {
				r.head = (r.head + 1) % len(r.slots)
				r.slots[r.head] = slot{}
				if r.n < len(r.slots) {
					r.n++
				}
			}
			if sec-r.base > math.MaxUint32/2 {
				r.rebase(sec)
			}
			r.slots[r.head] = mkslot(sec-r.base, v)
			r.headCnt = 1
		}
	}
	if len(r.recent) == recentMax {
		copy(r.recent, r.recent[1:])
		r.recent = r.recent[:recentMax-1]
	}
	r.recent = append(r.recent, Point{TS: ts, Value: v})
}

func (r *Ring) merge(v float64) {
	s := &r.slots[r.head]
	// Only the newest slot takes more points, so one count in the ring serves: 8 bytes a slot.
	if r.headCnt == math.MaxUint32 {
		return
	}
	r.headCnt++
	s.sum += (float32(v) - s.sum) / float32(r.headCnt)
}

// rebase moves base forward so offsets stay small; empty slots stay empty.
func (r *Ring) rebase(sec int64) {
	stepS := int64(r.step / time.Second)
	nb := sec - sec%stepS - int64(len(r.slots))*stepS
	for i := range r.slots {
		if !r.slots[i].empty() {
			abs := r.base + r.slots[i].sec()
			if abs < nb {
				r.slots[i] = slot{}
				continue
			}
			r.slots[i].off = uint32(abs - nb + 1)
		}
	}
	r.base = nb
}

// Since returns the points at or after t, oldest first: one per slot (its mean), then the
// recent raw points that are newer than the last slot's start.
func (r *Ring) Since(t time.Time) []Point {
	var out []Point
	for i := r.n - 1; i >= 0; i-- {
		s := r.slots[(r.head-i+len(r.slots))%len(r.slots)]
		if s.empty() {
			continue
		}
		ts := time.Unix(r.base+s.sec(), 0).UTC()
		if ts.Before(t) {
			continue
		}
		if i == 0 {
			break // the newest slot is shown as its raw points
		}
		out = append(out, Point{TS: ts, Value: float64(s.sum)})
	}
	var headStart time.Time
	if r.n > 0 {
		stepS := int64(r.step / time.Second)
		off := r.slots[r.head].sec()
		headStart = time.Unix(r.base+off-off%stepS, 0)
	}
	for _, p := range r.recent {
		if !p.TS.Before(t) && !p.TS.Before(headStart) {
			out = append(out, Point{TS: p.TS.UTC(), Value: p.Value})
		}
	}
	return out
}

// Bytes is the ring's memory for its points (for the benchmarks).
func (r *Ring) Bytes() int {
	return len(r.slots)*int(unsafe.Sizeof(slot{})) + cap(r.recent)*int(unsafe.Sizeof(Point{}))
}

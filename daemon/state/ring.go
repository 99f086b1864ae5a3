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
// Raw points go into slots of one per step (a minute's bucket keeps the mean of its points and
// the second of its last one), so memory depends on the window, not on the poll rate: 24 h is
// 1,440 slots of 5 bytes (a float32 mean and a byte for the second within the step; the
// slot's minute follows from its place in the ring), 7 KB per metric, whether the device is
// polled every second or every minute. The slots grow with the history they hold (doubling, up
// to the window) rather than being allocated whole at the first point: a daemon that has run
// for ten minutes does not pay for 24 h of every metric, and a metric that got a few points
// costs a few bytes. The newest slot's raw points are kept too (recent), so the live chart
// and a 1 h view stay sharp. Nothing in a Ring holds a pointer, so the collector never scans
// the history.
type Ring struct {
	step      int64 // seconds per slot
	size      int   // slots in the window
	head      int   // index of the newest slot in vals/offs (when len(vals) > 0)
	headStart int64 // unix seconds of the newest slot's start
	headCnt   uint32
	// While the ring is not full, vals and offs are in time order (the newest last); once
	// len(vals) == size they wrap around head.
	vals   []float32 // slot means
	offs   []uint8   // second within the step of the slot's last point; noPoint: none
	recent []rawPoint
}

// rawPoint is a point of the newest slot at full resolution.
type rawPoint struct {
	ns int64 // unix nanoseconds
	v  float64
}

// noPoint marks an empty slot (a step with no point, as after a gap). Offsets are below the
// step, which is at most a minute.
const noPoint = math.MaxUint8

const recentMax = 64

// minSlots is the first allocation of slots: about what ten minutes of history need.
const minSlots = 16

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
	return &Ring{step: max(int64(step/time.Second), 1), size: n}
}

// Add records a value.
func (r *Ring) Add(ts time.Time, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	sec := ts.Unix()
	start := sec - sec%r.step
	switch {
	case len(r.vals) == 0:
		r.push(start, sec, v)
	case sec < r.headStart:
		// Clock went back or a late point: fold it into the newest slot. Its raw point would
		// be older than the newest slot and is never shown, so it is not kept.
		r.merge(v)
		return
	case sec < r.headStart+r.step:
		r.merge(v)
		r.offs[r.head] = uint8(sec - r.headStart)
	default:
		gap := (start - r.headStart) / r.step
		if gap >= int64(r.size) {
			// Everything held is older than the window now.
			r.vals, r.offs = r.vals[:0], r.offs[:0]
		} else {
			for i := int64(1); i < gap; i++ {
				r.next(0, noPoint)
			}
		}
		r.push(start, sec, v)
	}
	if len(r.recent) == recentMax {
		copy(r.recent, r.recent[1:])
		r.recent = r.recent[:recentMax-1]
	}
	r.recent = append(r.recent, rawPoint{ns: ts.UnixNano(), v: v})
}

// push starts a new newest slot at start with its first point.
func (r *Ring) push(start, sec int64, v float64) {
	r.next(float32(v), uint8(sec-start))
	r.headStart = start
	r.headCnt = 1
	r.recent = r.recent[:0] // the raw points shown are the newest slot's only
}

// next appends a slot after the newest, growing the slots while they are fewer than the
// window and overwriting the oldest once they are not.
func (r *Ring) next(v float32, off uint8) {
	if len(r.vals) < r.size {
		if len(r.vals) == cap(r.vals) {
			n := min(max(2*cap(r.vals), minSlots), r.size)
			vals, offs := make([]float32, len(r.vals), n), make([]uint8, len(r.offs), n)
			copy(vals, r.vals)
			copy(offs, r.offs)
			r.vals, r.offs = vals, offs
		}
		r.vals, r.offs = append(r.vals, v), append(r.offs, off)
		r.head = len(r.vals) - 1
		return
	}
	r.head = (r.head + 1) % r.size
	r.vals[r.head], r.offs[r.head] = v, off
}

func (r *Ring) merge(v float64) {
	// Only the newest slot takes more points, so one count in the ring serves.
	if r.headCnt == math.MaxUint32 {
		return
	}
	r.headCnt++
	s := &r.vals[r.head]
	*s += (float32(v) - *s) / float32(r.headCnt)
}

// Since returns the points at or after t, oldest first: one per slot (its mean), then the
// recent raw points of the newest slot.
func (r *Ring) Since(t time.Time) []Point {
	var out []Point
	n := len(r.vals)
	for i := n - 1; i >= 1; i-- { // the newest slot (i == 0) is shown as its raw points
		j := (r.head - i + n) % n
		if r.offs[j] == noPoint {
			continue
		}
		ts := time.Unix(r.headStart-int64(i)*r.step+int64(r.offs[j]), 0).UTC()
		if ts.Before(t) {
			continue
		}
		out = append(out, Point{TS: ts, Value: float64(r.vals[j])})
	}
	for _, p := range r.recent {
		ts := time.Unix(0, p.ns).UTC()
		if !ts.Before(t) {
			out = append(out, Point{TS: ts, Value: p.v})
		}
	}
	return out
}

// Bytes is the ring's memory for its points (for the benchmarks).
func (r *Ring) Bytes() int {
	return cap(r.vals)*int(unsafe.Sizeof(float32(0))) + cap(r.offs) + cap(r.recent)*int(unsafe.Sizeof(rawPoint{}))
}

// fill adds one synthetic point a slot for d from start (benchPrefillEnv), a slow wave so the
// slots do not all hold one value.
func (r *Ring) fill(start time.Time, d time.Duration) {
	step := time.Duration(r.step) * time.Second
	for i, t := 0, start; t.Before(start.Add(d)); i, t = i+1, t.Add(step) {
		r.Add(t, 20+5*math.Sin(float64(i)/60))
	}
}

package site

import (
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// batch gathers the database writes of one moment (one poll result taken in, one tick) into
// one commit: a UPS going on battery raises the rule's incident, saves the power policy's
// state, logs the mains KPI and raises the policy's incident, and each commit costs the flash
// a meta page and the pages it touched, so four of them cost four times what one does. A
// write's done runs once the commit holds it, in the order of the writes, so an incident is
// still published only once stored; flush commits whatever waits, before anything that must
// follow it on disk (a relay switched, FSD raised, the shutdown command run). Writes made
// while no batch is open commit at once.
//
// Devices polled at the same interval finish together: three inlets crossing their threshold
// in the same second were three commits. So a poll result's moment waits a little for the
// results that follow (wait), and up to queued when others already queue for their turn
// (more); the earliest deadline of what waits holds, then later (the site's, under its
// ingest lock) commits. A moment that may not wait (an edge a device pushed, a tick) commits
// at once, with whatever waits: an alarm's path holds no wait. A write from outside any
// moment while some wait (an operator's acknowledgement) joins them and has the commit
// brought forward to now.
type batch struct {
	db  *bolt.DB
	log *slog.Logger
	// wait is how long a moment that may wait (a poll result's) leaves its writes for the
	// moments that follow, queued how long when others already queue (0: commit at end).
	wait, queued time.Duration
	more         func() bool
	later        func()
	// rider, when set, gives writes that may wait for someone else's commit (the deletes of
	// acknowledged uplink messages): a commit that happens anyway carries them.
	rider func() (fn func(*bolt.Tx) error, settle func(error))

	mu    sync.Mutex
	open  bool
	fns   []func(*bolt.Tx) error
	dones []func(error)
	timer *time.Timer // the lingering commit, when one waits
	due   time.Time   // when it runs
}

func newBatch(db *bolt.DB, log *slog.Logger) *batch { return &batch{db: db, log: log} }

// begin opens the batch: later writes wait for flush.
func (b *batch) begin() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = true
	b.mu.Unlock()
}

// join takes fn into the open batch (an incident.Joiner), or into the writes that linger,
// whose commit it then brings forward to now; false when neither.
func (b *batch) join(fn func(*bolt.Tx) error, done func(error)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open && b.timer == nil {
		return false
	}
	b.fns = append(b.fns, fn)
	b.dones = append(b.dones, done)
	if !b.open {
		// The caller may hold locks the dones take (the incident manager's): the timer's
		// goroutine commits, not this one.
		b.timer.Reset(0)
		b.due = time.Now()
	}
	return true
}

// write commits fn with the open batch, or at once when none is open; done (if set) runs
// once it is committed. The error is fn's when it committed at once.
func (b *batch) write(fn func(*bolt.Tx) error, done func()) error {
	if b.join(fn, func(err error) {
		if err == nil && done != nil {
			done()
		}
	}) {
		return nil
	}
	if err := b.db.Update(fn); err != nil {
		return err
	}
	if done != nil {
		done()
	}
	return nil
}

// end closes the batch and commits what waits, unless the moment may wait for the moments
// that follow (a poll result's).
func (b *batch) end(mayWait bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = false
	var d time.Duration
	if mayWait {
		d = b.wait
		if d > 0 && b.more() {
			d = max(d, b.queued)
		}
	}
	later := d > 0 && len(b.fns) > 0
	if due := time.Now().Add(d); later && b.timer == nil {
		b.timer, b.due = time.AfterFunc(d, b.later), due
	} else if later && due.Before(b.due) {
		b.timer.Reset(d)
		b.due = due
	}
	b.mu.Unlock()
	if !later {
		b.flush()
	}
}

// flush commits what waits, in one transaction, and runs the dones. A write that fails does
// not take the others down with it: they are then committed one by one, as they would have
// been without a batch.
func (b *batch) flush() {
	if b == nil {
		return
	}
	b.mu.Lock()
	fns, dones := b.fns, b.dones
	b.fns, b.dones = nil, nil
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.mu.Unlock()
	if len(fns) == 0 {
		return
	}
	var settle func(error)
	if b.rider != nil {
		var fn func(*bolt.Tx) error
		if fn, settle = b.rider(); fn != nil {
			fns = append(fns[:len(fns):len(fns)], fn)
		}
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, fn := range fns {
			if err := fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if settle != nil {
		settle(err)
		fns = fns[:len(fns)-1]
	}
	if err == nil {
		for _, d := range dones {
			d(nil)
		}
		return
	}
	for i, fn := range fns {
		err := b.db.Update(fn)
		if err != nil {
			b.log.Error("database write failed", "err", err)
		}
		dones[i](err)
	}
}

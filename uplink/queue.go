package uplink

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// The disk queue: one bucket per topic, key = 8-byte big-endian seq, value = the complete
// payload as published (seq included), packed (compress.go), so a message goes out byte for
// byte the same every time it is sent. The seq comes from the bucket's own sequence counter
// (bbolt keeps it in the bucket header), bumped in the same transaction that stores the
// message: a seq is never reused, and a seq exists only for a message that was stored (or
// dropped and reported). Held telemetry (hold.go) is the exception: its seq is handed out
// below a ceiling the bucket's sequence reserves, and it is stored only if no broker
// acknowledged it in time.
//
// Flash wear: each enqueue is one bbolt commit (at least two 4 KiB pages with NoFreelistSync,
// three without, whatever it carries). Deletes of acknowledged messages are not committed one
// by one: they wait in memory and ride along with the next enqueue's commit, or are committed
// in bulk when many piled up (a backlog drain), or when they have waited deleteDelay (30 s;
// 10 min when only incidents' deletes wait). A crash before that commit only means those messages are sent once
// more: at-least-once, consumers dedupe by seq.
var bucketNames = [2][]byte{[]byte("uplink.incidents"), []byte("uplink.telemetry")}

const (
	deleteBatch = 16384
	deleteDelay = 30 * time.Second
	// incidentDeleteDelay is how long the deletes of acknowledged incidents may wait for a
	// commit to ride in (the site's next one, usually the next incident's) when no telemetry
	// delete waits: an incident every few minutes would otherwise cost two commits, its own
	// and its delete's. A crash in that window sends those incidents once more.
	incidentDeleteDelay = 10 * time.Minute
)

// deleteWait is how long the acknowledged messages waiting now may wait for their delete.
// Callers hold mu.
func (u *Uplink) deleteWait() time.Duration {
	if len(u.acked[kindTelemetry]) > 0 {
		return deleteDelay
	}
	return incidentDeleteDelay
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func (u *Uplink) openQueue() error {
	// Read first: the buckets exist after the first start, and a start that commits nothing
	// costs the flash nothing.
	missing := false
	u.db.View(func(tx *bbolt.Tx) error {
		for _, name := range bucketNames {
			missing = missing || tx.Bucket(name) == nil
		}
		return nil
	})
	if missing {
		err := u.db.Update(func(tx *bbolt.Tx) error {
			for _, name := range bucketNames {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("uplink: open queue: %w", err)
		}
	}
	err := u.db.View(func(tx *bbolt.Tx) error {
		for k, name := range bucketNames {
			n, size := 0, int64(0)
			if err := tx.Bucket(name).ForEach(func(_, v []byte) error {
				n++
				size += int64(len(v))
				return nil
			}); err != nil {
				return err
			}
			u.count[k], u.bytes[k] = n, size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("uplink: open queue: %w", err)
	}
	return nil
}

// deleteAckedTx deletes the acknowledged messages in acked inside tx and returns how many
// messages and bytes per kind went (a message the cap dropped meanwhile is simply absent).
func deleteAckedTx(tx *bbolt.Tx, acked [2][]uint64) (n [2]int, size [2]int64, err error) {
	for k := range acked {
		b := tx.Bucket(bucketNames[k])
		for _, seq := range acked[k] {
			key := seqKey(seq)
			if v := b.Get(key); v != nil {
				size[k] += int64(len(v))
				n[k]++
				if err := b.Delete(key); err != nil {
					return n, size, err
				}
			}
		}
	}
	return n, size, nil
}

// item is one message to enqueue: build makes its payload once its seq is known. A held
// message comes with its seq and its payload in a stored form instead.
type item struct {
	kind   int
	build  func(seq uint64) ([]byte, error)
	seq    uint64 // 0: the bucket's next
	packed []byte // nil: build it; raw: pack it
}

// prepare returns the item's seq (taking the bucket's next if it has none) and its packed
// payload.
func (it item) prepare(b *bbolt.Bucket) (seq uint64, payload []byte, err error) {
	seq, payload = it.seq, it.packed
	if seq == 0 {
		if seq, err = b.NextSequence(); err != nil {
			return 0, nil, err
		}
	}
	switch {
	case payload == nil:
		p, err := it.build(seq)
		if err != nil {
			return 0, nil, err
		}
		payload = pack(p)
	case payload[0] == storedRaw: // held telemetry, or a hold file's record
		payload = pack(payload[1:])
	}
	return seq, payload, nil
}

// enqueue stores items, each under its seq or its bucket's next, in one transaction that
// also deletes the acknowledged messages waiting for a commit and, for telemetry over the
// cap, the oldest telemetry. then, if set, runs last in the same transaction.
func (u *Uplink) enqueue(items []item, then func(tx *bbolt.Tx) error) (Drop, error) {
	if u.beforeEnqueue != nil {
		u.beforeEnqueue()
	}
	u.mu.Lock()
	acked, ackedB := u.acked, u.ackedB
	u.acked, u.ackedB = [2][]uint64{}, 0
	var (
		drop  Drop
		count [2]int // changes to u.count and u.bytes, applied once committed
		size  [2]int64
	)
	err := u.db.Update(func(tx *bbolt.Tx) error {
		drop, count, size = Drop{}, [2]int{}, [2]int64{}
		delN, delSize, err := deleteAckedTx(tx, acked)
		if err != nil {
			return err
		}
		for k := range delN {
			count[k] -= delN[k]
			size[k] -= delSize[k]
		}
		dropped := func(seq uint64, n int64) {
			if drop.Messages == 0 {
				drop.FirstSeq = seq
			}
			drop.LastSeq = seq
			drop.Messages++
			drop.Bytes += n
		}
		for _, it := range items {
			b := tx.Bucket(bucketNames[it.kind])
			seq, payload, err := it.prepare(b)
			if err != nil {
				return err
			}
			n := int64(len(payload))
			if it.kind == kindTelemetry {
				// Make room by dropping the oldest telemetry; incidents are never dropped, so
				// a queue full of incidents may exceed the cap (they are rare and small).
				total := u.bytes[0] + u.bytes[1] + size[0] + size[1]
				c := b.Cursor()
				for total+n > u.opts.QueueMaxBytes {
					k, v := c.First()
					if k == nil {
						break
					}
					dropped(binary.BigEndian.Uint64(k), int64(len(v)))
					total -= int64(len(v))
					count[kindTelemetry]--
					size[kindTelemetry] -= int64(len(v))
					if err := c.Delete(); err != nil {
						return err
					}
				}
				if total+n > u.opts.QueueMaxBytes {
					// Even an empty telemetry queue cannot hold it: this message is the drop.
					dropped(seq, n)
					continue
				}
			}
			if err := b.Put(seqKey(seq), payload); err != nil {
				return err
			}
			count[it.kind]++
			size[it.kind] += n
		}
		if then != nil {
			return then(tx)
		}
		return nil
	})
	if err != nil {
		// Nothing of the transaction happened: the acknowledged messages still wait.
		u.acked[0] = append(acked[0], u.acked[0]...)
		u.acked[1] = append(acked[1], u.acked[1]...)
		u.ackedB += ackedB
		u.mu.Unlock()
		return Drop{}, fmt.Errorf("uplink: enqueue: %w", err)
	}
	for k := range count {
		u.count[k] += count[k]
		u.bytes[k] += size[k]
	}
	u.mu.Unlock()
	u.poke()
	return drop, nil
}

// reportDrop counts, logs and reports a drop. Callers hold no lock: OnDrop may well call
// Incident.
func (u *Uplink) reportDrop(drop Drop) {
	if drop.Messages == 0 {
		return
	}
	drop.Total = u.dropped.Add(uint64(drop.Messages))
	u.log.Warn("queue full: dropped oldest telemetry", "messages", drop.Messages,
		"bytes", drop.Bytes, "first_seq", drop.FirstSeq, "last_seq", drop.LastSeq,
		"queue_max_bytes", u.opts.QueueMaxBytes)
	if u.opts.OnDrop != nil {
		u.opts.OnDrop(drop)
	}
}

// ack records that the broker acknowledged seq of kind; the delete is committed later.
func (u *Uplink) ack(kind int, seq uint64, size int) {
	if kind == kindTelemetry && u.unhold(seq) {
		u.published.Add(1)
		return
	}
	u.published.Add(1)
	u.toDelete(kind, []uint64{seq}, int64(size))
}

// ackStored queues the deletes of held telemetry acknowledged while it was being committed
// (unhold), now that it is stored.
func (u *Uplink) ackStored(seqs []uint64, size int64) {
	if len(seqs) > 0 {
		u.toDelete(kindTelemetry, seqs, size)
	}
}

// toDelete adds acknowledged messages to those whose deletes flushAcked commits.
func (u *Uplink) toDelete(kind int, seqs []uint64, size int64) {
	u.mu.Lock()
	first := len(u.acked[0])+len(u.acked[1]) == 0
	if first {
		u.ackedAt = time.Now()
	}
	u.acked[kind] = append(u.acked[kind], seqs...)
	u.ackedB += size
	n := len(u.acked[0]) + len(u.acked[1])
	u.mu.Unlock()
	if first || n >= deleteBatch {
		signal(u.ackWake)
	}
}

// flushAckedLoop commits the deletes of acknowledged messages (flushAcked) until ctx ends. It
// sleeps until a delete is due: deleteWait after the first waits, or at once when
// flushAcked would not let one wait; while nothing waits it does not wake at all.
func (u *Uplink) flushAckedLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		u.mu.Lock()
		n, at, wait := len(u.acked[0])+len(u.acked[1]), u.ackedAt, u.deleteWait()
		u.mu.Unlock()
		var due <-chan time.Time
		if n > 0 {
			// At least a second: a delete that keeps failing is retried, not spun on.
			t.Reset(max(wait-time.Since(at), time.Second))
			due = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-u.ackWake:
		case <-due:
		}
		if err := u.flushAcked(false); err != nil {
			u.log.Error("flush", "err", err)
		}
	}
}

// flushAcked commits the deletes of acknowledged messages when force is set, when many are
// waiting, or when the oldest has waited deleteWait. Incidents wait too, longer: the events
// of one outage come within seconds of each other, the next outage's commits carry the
// deletes of the last one's, and a delete costs no commit of its own. A crash in that window sends those incidents again with their own seq (QoS 1 is at
// least once; a consumer drops a seq it has seen), never loses one.
func (u *Uplink) flushAcked(force bool) error {
	u.mu.Lock()
	n := len(u.acked[0]) + len(u.acked[1])
	if n == 0 || !force && n < deleteBatch && time.Since(u.ackedAt) < u.deleteWait() {
		u.mu.Unlock()
		return nil
	}
	u.mu.Unlock()
	// Commit without holding mu: a commit with an fsync must not stall the PUBACK
	// bookkeeping of a backlog drain.
	del, settle := u.AckedTx(u.db)
	if del == nil {
		return nil
	}
	err := u.db.Update(del)
	settle(err)
	if err != nil {
		return fmt.Errorf("uplink: delete acknowledged messages: %w", err)
	}
	return nil
}

// AckedTx takes the deletes of acknowledged messages that wait for a commit, so that a
// caller's write transaction on db (the uplink's database) carries them instead of a commit
// of their own: del deletes them inside it, settle (with its outcome, once it has committed
// or failed) counts them gone or puts them back to wait. Both nil when none waits.
func (u *Uplink) AckedTx(db *bbolt.DB) (del func(*bbolt.Tx) error, settle func(error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := len(u.acked[0]) + len(u.acked[1])
	if n == 0 || db != u.db {
		return nil, nil
	}
	acked, ackedB := u.acked, u.ackedB
	u.acked, u.ackedB = [2][]uint64{}, 0
	u.deletingN, u.deletingB = u.deletingN+n, u.deletingB+ackedB
	var (
		delN    [2]int
		delSize [2]int64
	)
	del = func(tx *bbolt.Tx) error {
		var err error
		delN, delSize, err = deleteAckedTx(tx, acked)
		return err
	}
	settle = func(err error) {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.deletingN, u.deletingB = u.deletingN-n, u.deletingB-ackedB
		if err != nil {
			u.acked[0] = append(acked[0], u.acked[0]...)
			u.acked[1] = append(acked[1], u.acked[1]...)
			u.ackedB += ackedB
			return
		}
		for k := range delN {
			u.count[k] -= delN[k]
			u.bytes[k] -= delSize[k]
		}
	}
	return del, settle
}

// queued is one message read from the queue for sending.
type queued struct {
	kind    int
	seq     uint64
	payload []byte
	size    int // bytes on disk
}

// readFrom returns up to max messages of kind with seq > after, oldest first, skipping those
// acknowledged and not yet deleted.
func (u *Uplink) readFrom(kind int, after uint64, max int) ([]queued, error) {
	u.mu.Lock()
	skip := map[uint64]bool{}
	for _, s := range u.acked[kind] {
		if s > after {
			skip[s] = true
		}
	}
	u.mu.Unlock()
	// Held telemetry is looked at before the queue: a held message committed meanwhile is
	// then seen in both (and taken once), never in neither.
	var held []*heldMsg
	if kind == kindTelemetry {
		held = u.heldAfter(after, max)
	}
	var out []queued
	err := u.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketNames[kind]).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			s := binary.BigEndian.Uint64(k)
			if skip[s] {
				continue
			}
			p, err := unpack(v)
			if err != nil {
				// A value we cannot read would block its topic for ever; say so loudly and
				// skip it (its seq will show as a gap, which is the truth).
				u.log.Error("unreadable queued message skipped", "topic", kindName[kind], "seq", s, "err", err)
				continue
			}
			out = append(out, queued{kind: kind, seq: s, payload: p, size: len(v)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("uplink: read %s queue: %w", kindName[kind], err)
	}
	last := after
	if len(out) > 0 {
		last = out[len(out)-1].seq
	}
	for _, m := range held {
		if len(out) >= max {
			break
		}
		if m.seq <= last || skip[m.seq] {
			continue
		}
		p, err := unpack(m.packed)
		if err != nil { // we packed it ourselves a moment ago
			return nil, fmt.Errorf("uplink: held telemetry seq %d: %w", m.seq, err)
		}
		out = append(out, queued{kind: kind, seq: m.seq, payload: p, size: len(m.packed)})
	}
	return out, nil
}

package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrWait is what a send returns when there is nowhere to send to (no uplink configured):
// the publisher then waits for Kick instead of retrying on a timer.
var ErrWait = errors.New("audit: nowhere to publish")

// Kick makes the publishers try again now (an uplink was started).
func (l *Log) Kick() { l.poke() }

// Publish sends every record not yet sent, oldest first, through send until ctx ends. The
// trail is its own queue: a record counts as sent once send returned nil (the broker
// acknowledged it), and the seq sent is kept on disk, so what was not sent goes out after a
// restart (at least once). A failing send is retried with a backoff from 5 s to 1 min.
func (l *Log) Publish(ctx context.Context, send func(context.Context, Record) error) {
	l.publish(ctx, kSent, send)
}

// PublishTo is Publish for another destination (a notify target), with its own cursor named
// name. A destination new to the trail starts at its head: it gets the records written from
// then on, not the whole history (which /api/v1/audit and R/audit serve).
func (l *Log) PublishTo(ctx context.Context, name string, send func(context.Context, Record) error) error {
	k := cursorKey(name)
	err := l.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta.Get(k) != nil {
			return nil
		}
		head, err := getLink(meta, kHead)
		if err != nil {
			return err
		}
		if head.Seq == 0 {
			if head, err = getLink(meta, kAnchor); err != nil {
				return err
			}
		}
		return putLink(meta, k, link{Seq: head.Seq})
	})
	if err != nil {
		return err
	}
	l.publish(ctx, k, send)
	return nil
}

// ForgetCursors deletes the cursors of destinations other than keep (a target that left the
// config), so a target that comes back starts at the head again. It writes nothing when there
// is nothing to delete.
func (l *Log) ForgetCursors(keep []string) error {
	want := map[string]bool{}
	for _, n := range keep {
		want[string(cursorKey(n))] = true
	}
	var gone [][]byte
	l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bMeta).Cursor()
		for k, _ := c.Seek(cursorPrefix); k != nil && bytes.HasPrefix(k, cursorPrefix); k, _ = c.Next() {
			if !want[string(k)] {
				gone = append(gone, bytes.Clone(k))
			}
		}
		return nil
	})
	if len(gone) == 0 {
		return nil
	}
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, k := range gone {
			if err := tx.Bucket(bMeta).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

var cursorPrefix = []byte("sent:")

func cursorKey(name string) []byte { return append(bytes.Clone(cursorPrefix), name...) }

func (l *Log) publish(ctx context.Context, cursor []byte, send func(context.Context, Record) error) {
	const first, most = 5 * time.Second, time.Minute
	retry := first
	for ctx.Err() == nil {
		// Taken before reading, so a record appended in between wakes the wait below.
		wake := l.woken()
		recs, err := l.unsent(cursor, 64)
		if err != nil {
			l.opt.Log.Error("audit: read unsent records", "err", err)
		}
		var sent uint64
		var failed error
		for _, r := range recs {
			if failed = send(ctx, r); failed != nil {
				break
			}
			sent = r.Seq
		}
		if sent > 0 {
			if err := l.db.Update(func(tx *bolt.Tx) error {
				return putLink(tx.Bucket(bMeta), cursor, link{Seq: sent})
			}); err != nil {
				l.opt.Log.Error("audit: note what was sent", "err", err)
			}
		}
		switch {
		case failed == nil && len(recs) == 64:
			retry = first
			continue
		case failed == nil || errors.Is(failed, ErrWait):
			retry = first
			select {
			case <-ctx.Done():
			case <-wake:
			}
		default:
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			retry = min(retry*2, most)
		}
	}
}

// unsent returns up to max records after the last one sent, oldest first.
func (l *Log) unsent(cursor []byte, max int) ([]Record, error) {
	var out []Record
	err := l.db.View(func(tx *bolt.Tx) error {
		sent, err := getLink(tx.Bucket(bMeta), cursor)
		if err != nil {
			return err
		}
		c := tx.Bucket(bRecords).Cursor()
		for k, v := c.Seek(seqKey(sent.Seq + 1)); k != nil && len(out) < max; k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

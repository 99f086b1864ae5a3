package audit

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrWait is what a send returns when there is nowhere to send to (no uplink configured):
// the publisher then waits for Kick instead of retrying on a timer.
var ErrWait = errors.New("audit: nowhere to publish")

// Kick makes the publisher try again now (an uplink was started).
func (l *Log) Kick() { l.poke() }

// Publish sends every record not yet sent, oldest first, through send until ctx ends. The
// trail is its own queue: a record counts as sent once send returned nil (the broker
// acknowledged it), and the seq sent is kept on disk, so what was not sent goes out after a
// restart (at least once). A failing send is retried with a backoff from 5 s to 1 min.
func (l *Log) Publish(ctx context.Context, send func(context.Context, Record) error) {
	const first, most = 5 * time.Second, time.Minute
	retry := first
	for ctx.Err() == nil {
		recs, err := l.unsent(64)
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
				return putLink(tx.Bucket(bMeta), kSent, link{Seq: sent})
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
			case <-l.wake:
			}
		default:
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
			case <-l.wake:
			case <-t.C:
			}
			t.Stop()
			retry = min(retry*2, most)
		}
	}
}

// unsent returns up to max records after the last one sent, oldest first.
func (l *Log) unsent(max int) ([]Record, error) {
	var out []Record
	err := l.db.View(func(tx *bolt.Tx) error {
		sent, err := getLink(tx.Bucket(bMeta), kSent)
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

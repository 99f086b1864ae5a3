// Package audit keeps the audit trail: who did what (CONTRACT.md §7), as hash-chained records
// in the daemon's bbolt database. A record that records an action is written in the same write
// transaction as the action (AppendTx), so an action is never stored without its record, nor a
// record without its action.
//
// The chain. Each record's hash is hex(SHA-256(prev || canonical)), where prev is the previous
// record's hash as 64 lowercase hex characters (the empty string before the first record ever
// written) and canonical is the record's JSON without "hash": the keys seq, ts, actor, source,
// action, target, detail in that order, no white space, strings escaped as Go's encoding/json
// does with HTML escaping off, ts in RFC 3339 UTC with milliseconds. Any edit of a stored record
// breaks its hash; removing one breaks the seq sequence; removing the newest ones breaks the
// head (the seq and hash of the newest record, kept beside the records).
//
// Retention. Records older than the retention are deleted oldest first; the seq and hash of the
// newest deleted one stay as the anchor, from which Verify starts the chain. An anchor is as
// good as the records it replaces were: an auditor who kept the R/audit messages can check it
// against them.
//
// The package knows bbolt and nothing of the site, the web or MQTT.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sources of a record.
const (
	Web    = "web"
	MQTT   = "mqtt"
	NUT    = "nut"
	Config = "config"
	System = "system"
)

// Actions recorded. Firmware updates (CONTRACT.md §8) are to be recorded as ActionFirmware
// with the outcome in detail.
const (
	ActionLogin          = "login"
	ActionLoginFailed    = "login.failed"
	ActionAck            = "incident.ack"
	ActionRelay          = "relay.set"
	ActionCommand        = "command"
	ActionCommandRefused = "command.refused"
	ActionReload         = "config.reload"
	ActionReloadRefused  = "config.reload.refused"
	ActionNUTPrimary     = "nut.primary"
	ActionNUTFSD         = "nut.fsd"
	ActionNUTInstcmd     = "nut.instcmd"
	ActionShutdown       = "shutdown.command"
	ActionFirmware       = "firmware.update"
	ActionSuppressed     = "suppressed"
	ActionBackup         = "database.backup"
)

// DefaultRetention is audit.retention's default.
const DefaultRetention = 400 * 24 * time.Hour

// Record is one audit record (CONTRACT.md §7).
type Record struct {
	Seq    uint64 `json:"seq"`
	TS     string `json:"ts"`
	Actor  string `json:"actor"`
	Source string `json:"source"`
	Action string `json:"action"`
	Target string `json:"target"`
	Detail string `json:"detail"`
	Hash   string `json:"hash"`
}

// canonical is the record's JSON without hash, as the chain hashes it.
func (r Record) canonical() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		Seq    uint64 `json:"seq"`
		TS     string `json:"ts"`
		Actor  string `json:"actor"`
		Source string `json:"source"`
		Action string `json:"action"`
		Target string `json:"target"`
		Detail string `json:"detail"`
	}{r.Seq, r.TS, r.Actor, r.Source, r.Action, r.Target, r.Detail})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Chain is the hash of r after a record whose hash is prev.
func Chain(prev string, r Record) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write(r.canonical())
	return hex.EncodeToString(h.Sum(nil))
}

var (
	bRecords = []byte("audit")
	bMeta    = []byte("audit-meta")
	kHead    = []byte("head")   // the newest record's seq and hash
	kAnchor  = []byte("anchor") // the newest pruned record's seq and hash
	kSent    = []byte("sent")   // records up to this seq went out on R/audit
)

type link struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func getLink(b *bolt.Bucket, k []byte) (link, error) {
	var l link
	v := b.Get(k)
	if v == nil {
		return l, nil
	}
	if err := json.Unmarshal(v, &l); err != nil {
		return l, fmt.Errorf("audit: %s: %w", k, err)
	}
	return l, nil
}

func putLink(b *bolt.Bucket, k []byte, l link) error {
	v, _ := json.Marshal(l)
	return b.Put(k, v)
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// Options configure a Log.
type Options struct {
	Retention time.Duration // default DefaultRetention
	Now       func() time.Time
	Log       *slog.Logger
	// RefusalBurst records of failures (failed logins, refused commands) per source address
	// are written per RefusalWindow; beyond that they are counted, and one suppressed record
	// says how many when the window ends. Defaults 5 and 1 minute.
	RefusalBurst  int
	RefusalWindow time.Duration
}

// MaxRefusalKeys bounds the addresses whose refusals are counted separately; the ones beyond
// share one count.
const MaxRefusalKeys = 1024

// Log is the audit trail of one database. It is safe for concurrent use.
type Log struct {
	db        *bolt.DB
	opt       Options
	mu        sync.Mutex
	wake      chan struct{} // closed and replaced by poke: every publisher wakes
	nextPrune time.Time
	refusals  map[string]*refusal
	dropped   uint64 // records that could not be written (logged)
	suppress  uint64 // refusals counted in a suppressed record rather than recorded one by one
}

// Open prepares the trail in db and applies the retention.
func Open(db *bolt.DB, opt Options) (*Log, error) {
	if opt.Retention <= 0 {
		opt.Retention = DefaultRetention
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.RefusalBurst <= 0 {
		opt.RefusalBurst = 5
	}
	if opt.RefusalWindow <= 0 {
		opt.RefusalWindow = time.Minute
	}
	l := &Log{db: db, opt: opt, wake: make(chan struct{}), refusals: map[string]*refusal{}}
	// A start or a reload commits nothing once the buckets exist: retention is applied by the
	// first record added (nextPrune is zero), in that record's own commit.
	missing := false
	db.View(func(tx *bolt.Tx) error {
		missing = tx.Bucket(bRecords) == nil || tx.Bucket(bMeta) == nil
		return nil
	})
	if missing {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bRecords, bMeta} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	return l, nil
}

// SetRetention changes the retention (a reload); it applies at the next prune.
func (l *Log) SetRetention(d time.Duration) {
	if d <= 0 {
		d = DefaultRetention
	}
	l.mu.Lock()
	l.opt.Retention = d
	l.mu.Unlock()
}

// AppendTx adds r to the trail inside tx, a write transaction on the trail's database, and
// fills in its seq, ts (when empty) and hash. If tx rolls back, so does the record.
func (l *Log) AppendTx(tx *bolt.Tx, r Record) (Record, error) {
	if tx.DB() != l.db || !tx.Writable() {
		return r, errors.New("audit: AppendTx needs a write transaction on the trail's database")
	}
	recs, meta := tx.Bucket(bRecords), tx.Bucket(bMeta)
	head, err := getLink(meta, kHead)
	if err != nil {
		return r, err
	}
	if head.Seq == 0 {
		// Everything was pruned (or nothing written yet): the chain goes on from the anchor.
		if head, err = getLink(meta, kAnchor); err != nil {
			return r, err
		}
	}
	r.Seq = head.Seq + 1
	if r.TS == "" {
		r.TS = formatTime(l.opt.Now())
	}
	r.Hash = Chain(head.Hash, r)
	v, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if err := recs.Put(seqKey(r.Seq), v); err != nil {
		return r, fmt.Errorf("audit: %w", err)
	}
	if err := putLink(meta, kHead, link{r.Seq, r.Hash}); err != nil {
		return r, fmt.Errorf("audit: %w", err)
	}
	tx.OnCommit(l.poke)
	return r, nil
}

// Append adds r in a transaction of its own (a record of something that has no transaction:
// a login, a reload), pruning what the retention lets go at most hourly. A record that cannot
// be written is logged.
func (l *Log) Append(r Record) {
	now := l.opt.Now()
	l.mu.Lock()
	prune := !now.Before(l.nextPrune)
	if prune {
		l.nextPrune = now.Add(time.Hour)
	}
	l.mu.Unlock()
	err := l.db.Update(func(tx *bolt.Tx) error {
		if _, err := l.AppendTx(tx, r); err != nil {
			return err
		}
		if prune {
			return l.prune(tx, now)
		}
		return nil
	})
	if err != nil {
		l.mu.Lock()
		l.dropped++
		l.mu.Unlock()
		l.opt.Log.Error("audit record not written", "action", r.Action, "actor", r.Actor, "err", err)
	}
}

// prune deletes the records older than the retention and keeps the anchor. At least the
// newest record stays, so the head always names a stored record or the anchor.
func (l *Log) prune(tx *bolt.Tx, now time.Time) error {
	l.mu.Lock()
	cut := now.Add(-l.opt.Retention)
	l.mu.Unlock()
	recs, meta := tx.Bucket(bRecords), tx.Bucket(bMeta)
	var last *link
	c := recs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil // an unreadable record stays for Verify to name
		}
		ts, err := time.Parse(time.RFC3339Nano, r.TS)
		if err != nil || !ts.Before(cut) {
			break
		}
		if nk, _ := c.Next(); nk == nil {
			break
		}
		if err := recs.Delete(k); err != nil {
			return err
		}
		last = &link{r.Seq, r.Hash}
	}
	if last == nil {
		return nil
	}
	return putLink(meta, kAnchor, *last)
}

// Records returns up to limit records, newest first.
func (l *Log) Records(limit int) ([]Record, error) {
	out := []Record{}
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bRecords).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				r = Record{Seq: binary.BigEndian.Uint64(k), Detail: "unreadable record: " + err.Error()}
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Dropped is how many records could not be written.
func (l *Log) Dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Suppressed is how many refusals were counted rather than recorded one by one.
func (l *Log) Suppressed() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.suppress
}

func (l *Log) poke() {
	l.mu.Lock()
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// woken is closed by the next poke.
func (l *Log) woken() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// Broken says where the chain breaks.
type Broken struct {
	Seq    uint64
	Reason string
}

func (b *Broken) Error() string { return fmt.Sprintf("audit record seq %d: %s", b.Seq, b.Reason) }

// Verify checks the chain of the trail in db (read-only: a View is enough). It returns the
// number of records, or a *Broken naming the first record that does not fit.
func Verify(db *bolt.DB) (int, error) {
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		recs, meta := tx.Bucket(bRecords), tx.Bucket(bMeta)
		if recs == nil || meta == nil {
			return nil
		}
		anchor, err := getLink(meta, kAnchor)
		if err != nil {
			return &Broken{0, err.Error()}
		}
		head, err := getLink(meta, kHead)
		if err != nil {
			return &Broken{0, err.Error()}
		}
		prev := anchor
		err = recs.ForEach(func(k, v []byte) error {
			seq := uint64(0)
			if len(k) == 8 {
				seq = binary.BigEndian.Uint64(k)
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return &Broken{seq, "unreadable: " + err.Error()}
			}
			if r.Seq != seq {
				return &Broken{seq, fmt.Sprintf("stored under seq %d but says seq %d", seq, r.Seq)}
			}
			if seq != prev.Seq+1 {
				return &Broken{seq, fmt.Sprintf("follows seq %d: records %d to %d are missing", prev.Seq, prev.Seq+1, seq-1)}
			}
			if want := Chain(prev.Hash, r); want != r.Hash {
				return &Broken{seq, fmt.Sprintf("hash does not match its content (edited): stored %s, computed %s", r.Hash, want)}
			}
			prev = link{r.Seq, r.Hash}
			n++
			return nil
		})
		if err != nil {
			return err
		}
		if head != prev {
			return &Broken{prev.Seq + 1, fmt.Sprintf("the trail ends at seq %d but its head says seq %d: the newest records are missing or the head was edited", prev.Seq, head.Seq)}
		}
		return nil
	})
	return n, err
}

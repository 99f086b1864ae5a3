package uplink

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
)

// Held telemetry (Options.TelemetryFlush): a telemetry message gets its seq at once, is
// published at once from memory, and reaches the bbolt queue only if the broker has not
// acknowledged it within TelemetryFlush. While a broker is connected almost nothing is
// committed, so the flash sees a few bytes per reading instead of two 4 KiB pages per message.
//
// Three things keep the contract's seq promise (rises by one, survives restarts, never
// reused) without a commit per message:
//
//   - seqs are reserved in blocks: the telemetry bucket's sequence is a ceiling, raised by
//     reserveStep in a commit about once every reserveStep messages (it rides along with a
//     flush when there is one). After a power cut the next seq is the ceiling + 1: seqs are
//     never reused, and the gap tells the consumer that telemetry around the cut may be lost.
//   - every held message is appended to the hold file before anyone can publish it, with one
//     write(2) and no fsync. A file in tmpfs (the daemon puts it in /run when it can) or the
//     page cache outlives the process, so after a crash or a SIGKILL the next start finds every
//     held message and the header's start seq: seqs carry on without a gap and the held
//     messages are queued again (at-least-once: consumers dedupe by seq). The file names the
//     kernel's boot_id: a file from another boot is not trusted for the seq (its tail may be
//     lost), only for the messages whose checksums hold.
//   - a clean stop commits every unacknowledged held message and sets the bucket's sequence
//     back to the last seq used, then removes the hold file.
//
// A hold file is trusted for the seq only if it is whole, from this boot, and names the
// bucket's current sequence as its ceiling: a file left behind by a rewrite that failed is
// not, so a seq it does not list can never be handed out twice.
//
// Format: "RWHOLD1\n", a header (uint8 length + boot_id, uint64 start seq, uint64 ceiling,
// CRC-32C of these), then records: uint32 length of seq+payload, CRC-32C of seq+payload,
// uint64 seq, the payload in a stored form (compress.go). In a tmpfs the payload is raw:
// packing takes an encoder of about 1 MB, which a site whose broker acknowledges in time
// would keep for nothing; committing a held message packs it. A hold file on a disk gets
// packed payloads, a tenth of the bytes written.

// metaBucket holds heldKey while telemetry seqs are reserved beyond the last one used, i.e.
// from the first reservation until a clean stop: found at open without a usable hold file,
// it means the last run ended without a stop and its held telemetry is gone (a power cut).
var (
	metaBucket = []byte("uplink.meta")
	heldKey    = []byte("held")
)

const (
	holdMagic   = "RWHOLD1\n"
	reserveStep = 1024
	// holdCompact is the dead weight (acknowledged or committed records) the hold file may
	// carry before it is rewritten with only the live ones.
	holdCompact = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// heldMsg is one held telemetry message.
type heldMsg struct {
	seq        uint64
	packed     []byte // stored form: raw, or packed when the hold file is on a disk
	readings   int
	at         time.Time
	committing bool // being committed to the queue
	acked      bool // acknowledged while being committed: its delete follows the commit
}

// holdFile is the append-only file behind the held messages.
type holdFile struct {
	path string
	f    *os.File
	size int64
}

// kernelBootID is the kernel's boot_id (changes at every boot), or "" if unknown.
func kernelBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func holdHeader(boot string, start, ceiling uint64) []byte {
	if len(boot) > 255 {
		boot = boot[:255]
	}
	h := append([]byte(holdMagic), byte(len(boot)))
	h = append(h, boot...)
	h = binary.BigEndian.AppendUint64(h, start)
	h = binary.BigEndian.AppendUint64(h, ceiling)
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(h[len(holdMagic):], castagnoli))
}

// appendHoldRecord appends the record of one held message to dst.
func appendHoldRecord(dst []byte, seq uint64, packed []byte) []byte {
	at := len(dst)
	dst = append(dst, make([]byte, 8)...) // length and checksum, filled in below
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, packed...)
	body := dst[at+8:]
	binary.BigEndian.PutUint32(dst[at:], uint32(len(body)))
	binary.BigEndian.PutUint32(dst[at+4:], crc32.Checksum(body, castagnoli))
	return dst
}

// holdRec is a record read back from a hold file.
type holdRec struct {
	seq    uint64
	packed []byte
}

// hold is what a hold file says.
type hold struct {
	found          bool   // the file exists
	boot           string // kernel boot_id when it was written
	start, ceiling uint64 // the next seq and the bucket's sequence when it was (re)written
	recs           []holdRec
	bad            string // why the reading stopped before the end, if it did
}

// readHold parses a hold file: its header, and its records up to the first one that is cut
// short or fails its checksum (a write torn by a power cut).
func readHold(path string) (hold, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return hold{}, nil
	}
	if err != nil {
		return hold{}, err
	}
	h := hold{found: true}
	r := b
	if !bytes.HasPrefix(r, []byte(holdMagic)) || len(r) < len(holdMagic)+1 {
		h.bad = "no header"
		return h, nil
	}
	r = r[len(holdMagic):]
	n := int(r[0])
	if len(r) < 1+n+16+4 {
		h.bad = "header cut short"
		return h, nil
	}
	if crc32.Checksum(r[:1+n+16], castagnoli) != binary.BigEndian.Uint32(r[1+n+16:]) {
		h.bad = "header checksum"
		return h, nil
	}
	h.boot, h.start, h.ceiling = string(r[1:1+n]), binary.BigEndian.Uint64(r[1+n:]), binary.BigEndian.Uint64(r[1+n+8:])
	r = r[1+n+16+4:]
	for len(r) > 0 {
		if len(r) < 8 {
			h.bad = "record cut short"
			return h, nil
		}
		l, sum := binary.BigEndian.Uint32(r), binary.BigEndian.Uint32(r[4:])
		if l < 8 || uint64(len(r)-8) < uint64(l) {
			h.bad = "record cut short"
			return h, nil
		}
		body := r[8 : 8+l]
		if crc32.Checksum(body, castagnoli) != sum {
			h.bad = "record checksum"
			return h, nil
		}
		h.recs = append(h.recs, holdRec{seq: binary.BigEndian.Uint64(body), packed: bytes.Clone(body[8:])})
		r = r[8+l:]
	}
	return h, nil
}

// writeHold replaces the file at path with one holding start and msgs, and opens it for
// appending. The new file is written next to it and renamed over it, so a crash leaves either
// the old file or the new one.
func writeHold(path, boot string, start, ceiling uint64, msgs []*heldMsg) (*holdFile, error) {
	buf := holdHeader(boot, start, ceiling)
	for _, m := range msgs {
		buf = appendHoldRecord(buf, m.seq, m.packed)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, buf, 0o600); err != nil {
		return nil, fmt.Errorf("write hold file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write hold file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open hold file: %w", err)
	}
	return &holdFile{path: path, f: f, size: int64(len(buf))}, nil
}

func (h *holdFile) append(seq uint64, packed []byte) error {
	rec := appendHoldRecord(make([]byte, 0, 16+len(packed)), seq, packed)
	n, err := h.f.Write(rec)
	h.size += int64(n)
	if err == nil && n < len(rec) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("append to hold file %s: %w", h.path, err)
	}
	return nil
}

func (h *holdFile) close() {
	if h != nil {
		h.f.Close()
	}
}

// DefaultHoldFile is where the hold file goes when Options.HoldFile is empty: next to the
// database.
func DefaultHoldFile(dbPath string) string { return dbPath + ".hold" }

// openHold reads the hold file a crash may have left, queues its messages, settles the
// telemetry seq and, with TelemetryFlush, starts a fresh hold file. Without TelemetryFlush a
// hold file left by an earlier run is still read, queued and removed.
func (u *Uplink) openHold() error {
	path := u.opts.HoldFile
	if path == "" {
		path = DefaultHoldFile(u.db.Path())
	}
	u.holdPath, u.boot = path, kernelBootID()
	u.holdOnDisk = !inMemory(filepath.Dir(path))
	h, err := readHold(path)
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	held := u.opts.TelemetryFlush > 0
	if !h.found && !held {
		return nil
	}
	if h.bad != "" {
		u.log.Warn("hold file damaged: queued the messages before the damage", "file", path,
			"messages", len(h.recs), "why", h.bad)
	}
	items := make([]item, len(h.recs))
	for i, r := range h.recs {
		items[i] = item{kind: kindTelemetry, seq: r.seq, packed: r.packed}
	}
	var (
		next, lastKey uint64
		lost          bool // the last run held telemetry and ended without a stop, and its hold file is not usable
	)
	drop, err := u.enqueue(items, func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketNames[kindTelemetry])
		cur := b.Sequence()
		next = cur + 1
		if k, _ := b.Cursor().Last(); k != nil {
			lastKey = binary.BigEndian.Uint64(k)
		}
		if h.found && h.bad == "" && h.boot != "" && h.boot == u.boot && h.ceiling == cur {
			// Same boot, whole, and current: it lists every seq handed out since it was
			// written, so the seq carries on without a gap.
			next = h.start
		} else {
			lost = meta.Get(heldKey) != nil
		}
		for _, r := range h.recs {
			next = max(next, r.seq+1)
		}
		next = max(next, lastKey+1)
		if held {
			if err := meta.Put(heldKey, []byte{1}); err != nil {
				return err
			}
			return b.SetSequence(next - 1 + reserveStep)
		}
		if err := meta.Delete(heldKey); err != nil {
			return err
		}
		return b.SetSequence(next - 1)
	})
	u.reportDrop(drop)
	if err != nil {
		return fmt.Errorf("uplink: queue the hold file's messages: %w", err)
	}
	if lost {
		state := h.bad
		if state == "" {
			state = "missing"
			if h.found {
				state = "stale or from another boot"
			}
		}
		u.log.Warn("the last run ended without a stop and its held telemetry is gone (a power cut?): "+
			"telemetry it had not delivered is lost, and the telemetry seq jumps",
			"hold_file", path, "hold_file_state", state, "last_queued_seq", lastKey, "next_seq", next)
	}
	if len(h.recs) > 0 {
		u.log.Info("queued held telemetry left by the last run", "messages", len(h.recs),
			"first_seq", h.recs[0].seq, "last_seq", h.recs[len(h.recs)-1].seq, "next_seq", next)
	}
	if !held {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("uplink: remove hold file: %w", err)
		}
		return nil
	}
	u.nextSeq, u.ceiling = next, next-1+reserveStep
	u.pmu.Lock()
	u.rewriteHold()
	u.pmu.Unlock()
	return nil
}

// inMemory reports whether dir is on a tmpfs or ramfs, where writes cost no flash.
func inMemory(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	const tmpfsMagic, ramfsMagic = 0x01021994, 0x858458f6
	return uint32(st.Type) == tmpfsMagic || uint32(st.Type) == ramfsMagic
}

// rewriteHold replaces the hold file with the live held messages, the next seq and the
// ceiling. Callers hold pmu. On failure the file is removed (a stale file must not be
// trusted) and the held messages live in memory only until a later rewrite works.
func (u *Uplink) rewriteHold() {
	h, err := writeHold(u.holdPath, u.boot, u.nextSeq, u.ceiling, u.held)
	u.hold.close()
	u.hold = h
	if err != nil {
		u.holdFailed(err)
		return
	}
	if u.holdErr {
		u.log.Info("hold file usable again", "file", u.holdPath)
		u.holdErr = false
	}
}

// holdFailed drops the hold file after a write failed. Callers hold pmu.
func (u *Uplink) holdFailed(err error) {
	u.hold.close()
	u.hold = nil
	rmErr := os.Remove(u.holdPath)
	if errors.Is(rmErr, os.ErrNotExist) {
		rmErr = nil
	}
	if !u.holdErr {
		u.log.Error("hold file unusable: held telemetry is in memory only until it is committed",
			"file", u.holdPath, "err", err, "remove_err", rmErr)
		u.holdErr = true
	}
}

// reserve raises the ceiling of handed-out telemetry seqs by reserveStep. Callers hold pmu.
func (u *Uplink) reserve() error {
	c := max(u.ceiling, u.nextSeq-1) + reserveStep
	err := u.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketNames[kindTelemetry])
		if c > b.Sequence() {
			return b.SetSequence(c)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("uplink: reserve telemetry seqs: %w", err)
	}
	u.ceiling = c
	u.rewriteHold() // the header names the new ceiling
	return nil
}

// hold1 hands out the next seq to a telemetry message and holds it: appended to the hold
// file, then visible to the sender. It reports whether the held messages outgrew the memory
// they may take. Callers hold pmu.
func (u *Uplink) hold1(it item, readings int) (full bool, err error) {
	if u.nextSeq > u.ceiling {
		if err := u.reserve(); err != nil {
			return false, err
		}
	}
	seq := u.nextSeq
	payload, err := it.build(seq)
	if err != nil {
		return false, fmt.Errorf("uplink: telemetry: %w", err)
	}
	m := &heldMsg{seq: seq, readings: readings, at: time.Now()}
	if u.holdOnDisk {
		m.packed = pack(payload) // a tenth of the bytes reach the flash
	} else {
		m.packed = raw(payload)
	}
	u.nextSeq++
	if u.hold != nil {
		if err := u.hold.append(seq, m.packed); err != nil {
			u.holdFailed(err)
		}
	}
	u.held = append(u.held, m)
	u.heldReadings += readings
	u.heldBytes += int64(len(m.packed))
	if len(u.held) == 1 {
		signal(u.heldWake) // the flusher has nothing to wait for until now
	}
	return u.heldReadings >= maxPendingReadings, nil
}

// unhold takes an acknowledged message out of the held ones; false if it is not held (it is
// in the queue, or being committed to it).
func (u *Uplink) unhold(seq uint64) bool {
	u.pmu.Lock()
	defer u.pmu.Unlock()
	i, ok := slices.BinarySearchFunc(u.held, seq, func(m *heldMsg, s uint64) int { return cmp.Compare(m.seq, s) })
	if !ok {
		return false
	}
	m := u.held[i]
	if m.committing {
		// Its commit is under way: the ack must not wait in acked for a delete that could be
		// committed before the message is stored (the delete would find nothing, and the
		// message would stay queued with its ack spent). commitHeld queues the delete.
		m.acked = true
		return true
	}
	u.heldReadings -= m.readings
	u.heldBytes -= int64(len(m.packed))
	if i == 0 {
		u.held[0] = nil
		u.held = u.held[1:]
	} else {
		u.held = slices.Delete(u.held, i, i+1)
	}
	if u.hold != nil && u.hold.size-u.heldBytes > holdCompact {
		signal(u.heldWake) // the flusher compacts the file (holdDue)
	}
	return true
}

// heldAfter returns the held messages with seq > after, at most max, oldest first.
func (u *Uplink) heldAfter(after uint64, max int) []*heldMsg {
	u.pmu.Lock()
	defer u.pmu.Unlock()
	i, _ := slices.BinarySearchFunc(u.held, after+1, func(m *heldMsg, s uint64) int { return cmp.Compare(m.seq, s) })
	hs := u.held[i:]
	if len(hs) > max {
		hs = hs[:max]
	}
	return slices.Clone(hs)
}

// commitHeld commits the held messages not yet acknowledged to the queue. With stop it also
// sets the bucket's sequence back to the last seq handed out, removes the hold file and
// hands every later Telemetry call to the queue directly.
func (u *Uplink) commitHeld(stop bool) (Drop, error) {
	u.fmu.Lock()
	defer u.fmu.Unlock()
	u.pmu.Lock()
	if u.stopped || u.opts.TelemetryFlush <= 0 {
		u.pmu.Unlock()
		return Drop{}, nil
	}
	var items []item
	for _, m := range u.held {
		if !m.committing {
			m.committing = true
			items = append(items, item{kind: kindTelemetry, seq: m.seq, packed: m.packed})
		}
	}
	last := u.nextSeq - 1
	ceiling := uint64(0)
	if u.ceiling < last+reserveStep/2 {
		ceiling = last + reserveStep // ride along: saves the Telemetry path a commit
	}
	if stop {
		u.stopped = true
	}
	u.pmu.Unlock()
	var drop Drop
	var err error
	if len(items) > 0 || stop {
		drop, err = u.enqueue(items, func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketNames[kindTelemetry])
			switch {
			case stop:
				if err := tx.Bucket(metaBucket).Delete(heldKey); err != nil {
					return err
				}
				return b.SetSequence(last)
			case ceiling > b.Sequence():
				return b.SetSequence(ceiling)
			}
			return nil
		})
	}
	var ackedSeqs []uint64
	var ackedB int64
	defer func() { u.ackStored(ackedSeqs, ackedB) }() // after pmu is released
	u.pmu.Lock()
	defer u.pmu.Unlock()
	if err != nil {
		// Still held, but for those acknowledged meanwhile: they are delivered.
		u.held = slices.DeleteFunc(u.held, func(m *heldMsg) bool { return m.acked })
		for _, m := range u.held {
			m.committing = false
		}
	} else {
		for _, m := range u.held {
			if m.committing && m.acked {
				ackedSeqs = append(ackedSeqs, m.seq)
				ackedB += int64(len(m.packed))
			}
		}
		u.held = slices.DeleteFunc(u.held, func(m *heldMsg) bool { return m.committing })
	}
	u.heldReadings, u.heldBytes = 0, 0
	for _, m := range u.held {
		u.heldReadings += m.readings
		u.heldBytes += int64(len(m.packed))
	}
	if err != nil {
		return drop, err
	}
	if stop {
		u.hold.close()
		u.hold = nil
		if err := os.Remove(u.holdPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.log.Warn("remove hold file", "err", err)
		}
		return drop, nil
	}
	if len(items) > 0 {
		u.ceiling = max(u.ceiling, ceiling)
		u.rewriteHold()
	}
	return drop, nil
}

// nextHoldDue is when the oldest held message is due for a commit; false when none is held.
func (u *Uplink) nextHoldDue() (time.Time, bool) {
	u.pmu.Lock()
	defer u.pmu.Unlock()
	if len(u.held) == 0 {
		return time.Time{}, false
	}
	return u.held[0].at.Add(u.opts.TelemetryFlush), true
}

// holdDue commits the held messages when the oldest has waited TelemetryFlush for its
// acknowledgement, and keeps the hold file small.
func (u *Uplink) holdDue() error {
	u.pmu.Lock()
	due := len(u.held) > 0 && !u.held[0].committing && time.Since(u.held[0].at) >= u.opts.TelemetryFlush
	if !u.stopped && (u.hold == nil || u.hold.size-u.heldBytes > holdCompact) {
		u.rewriteHold()
	}
	u.pmu.Unlock()
	if !due {
		return nil
	}
	drop, err := u.commitHeld(false)
	u.reportDrop(drop)
	return err
}

// Package update installs signed firmware bundles into the inactive boot slot of the
// firmware image and commits or reports them after the reboot (CONTRACT.md §8).
//
// Install: the bundle is read from a stream into a size-bounded spool and verified
// (signature against the keys built into the image, board, epoch, sizes, hashes:
// internal/fwbundle) before the slot is touched; then the inactive slot's device is
// written, read back and compared, the boot state (internal/bootstate) set to try the new
// slot once, a pending record put in the database, and the board rebooted through /init.
//
// After a boot the pending record and the slot booted say what happened: booted into the
// target, the update is on trial and commits itself after update.commit_after of a healthy
// site; booted into another slot, the trial failed (crash, hang, power cut) and the boot
// script went back: the update is reported as rolled back. Every boot writes the boot state
// at most once (tries of the running slot back to full); nothing is written periodically.
//
// The package knows the site only through Options' funcs (health, audit and incident
// reporting): it must not import daemon/site or daemon/web.
package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/internal/bootstate"
	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/gptpart"
	"github.com/rackwatch/rackwatch/internal/minisign"
)

// How this daemon is updated, in Firmware.Updates.
const (
	UpdatesAB   = "ab"   // the firmware image: A/B slots, this package
	UpdatesApt  = "apt"  // installed from the .deb: apt updates it
	UpdatesNone = "none" // anything else (a binary run by hand, a test)
)

// Outcomes of an update, in LastUpdate.Outcome.
const (
	OutcomeInstalled  = "installed"   // written, rebooting into it
	OutcomeTrial      = "trial"       // running it, not committed yet
	OutcomeCommitted  = "committed"   // ran healthy for commit_after: the default now
	OutcomeRolledBack = "rolled-back" // its trial failed; the board came back to the old slot
	OutcomeFailed     = "failed"      // stopped before the switch (power cut, write error)
)

// Board is the board name this build runs on when firmware.json does not say.
const Board = "rackwatch-arm64"

// Defaults of Options.
const (
	DefaultFirmwareFile = "/etc/rackwatch/firmware.json"
	DefaultKeysDir      = "/etc/rackwatch/keys"
	DefaultDpkgList     = "/var/lib/dpkg/info/rackwatch.list"
	DefaultCommitAfter  = 60 * time.Second
	DefaultMaxBytes     = 256 << 20
	// rebootDelay lets the answer to the request (HTTP reply, MQTT command reply) leave
	// before /init stops the daemon.
	rebootDelay = 2 * time.Second
)

// ErrBusy is returned while another update runs, or while the running firmware is on trial
// (writing the other slot would overwrite the version to fall back to).
var ErrBusy = errors.New("update: another update is in progress")

// ErrUnsupported is returned when this daemon does not update itself.
var ErrUnsupported = errors.New("update: this installation is not updated by rackwatch")

// ErrRefused wraps every reason a bundle was refused (nothing was written).
var ErrRefused = fwbundle.ErrRefused

// Options configure the updater. Empty fields take the firmware image's paths; tests point
// them at temp files.
type Options struct {
	DB      *bolt.DB
	Version string // the daemon's build version: used when there is no firmware.json
	// Slot is the slot booted ("a" or "b", RACKWATCH_SLOT from /init); "" when the daemon does
	// not run as the image's child, and then nothing is installed.
	Slot         string
	BootDir      string // mounted boot partition (RACKWATCH_BOOT_DIR)
	FirmwareFile string
	KeysDir      string
	SpoolDir     string // where bundles are spooled (RUNTIME_DIRECTORY/tmp: a tmpfs)
	DpkgList     string // present when installed from the .deb
	// Device returns the block device of slot ("a" or "b"); default: the GPT partition
	// named rackwatch-<slot>.
	Device func(slot string) (string, error)
	// Reboot reboots the board; default: SIGTERM to PID 1, which /init takes as a reboot.
	Reboot      func() error
	RebootDelay time.Duration
	BootID      string // this boot's id: a pending record of this same boot is not a result yet
	Now         func() time.Time
	Log         *slog.Logger
	// Report hears of every outcome: the site turns it into an audit record and an incident.
	Report func(Report)
}

// Report is one update event for the audit trail and the incidents.
type Report struct {
	By     string // who asked ("" for the updater itself, after a boot)
	Update LastUpdate
}

// Settings are the config keys (update.*), which a reload may change.
type Settings struct {
	CommitAfter time.Duration
	MaxBytes    int64
	CAFile      string
}

// Firmware is the "firmware" object of /api/v1/status and R/state.
type Firmware struct {
	Version    string      `json:"version"`
	Slot       string      `json:"slot,omitempty"`
	Committed  bool        `json:"committed"`
	Updates    string      `json:"updates"`
	Busy       bool        `json:"busy,omitempty"` // an update is being installed
	LastUpdate *LastUpdate `json:"last_update,omitempty"`
}

// LastUpdate describes the last update tried.
type LastUpdate struct {
	Version string `json:"version"`
	From    string `json:"from"` // version it replaced
	Slot    string `json:"slot"` // slot written
	Outcome string `json:"outcome"`
	At      string `json:"at"`
	KeyID   string `json:"key_id,omitempty"`
	Error   string `json:"error,omitempty"`
}

// pending is the database record of an update between install and its result.
type pending struct {
	From     string `json:"from"`
	FromSlot string `json:"from_slot"`
	To       string `json:"to"` // slot written
	Version  string `json:"version"`
	KeyID    string `json:"key_id"`
	BootID   string `json:"boot_id"`
	At       string `json:"at"`
}

var (
	bucket     = []byte("firmware")
	pendingKey = []byte("pending")
	lastKey    = []byte("last")
)

// firmwareInfo is /etc/rackwatch/firmware.json, written into the initramfs by mkimage.
type firmwareInfo struct {
	Version string `json:"version"`
	Board   string `json:"board"`
	Epoch   int64  `json:"epoch"`
}

// Updater is the process's one updater, shared by every site of a reload.
type Updater struct {
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	fw      firmwareInfo
	keys    []minisign.PublicKey
	updates string

	busy atomic.Bool
	mu   sync.Mutex
	set  Settings
	// committed is false while the running slot is on trial.
	committed bool
	last      *LastUpdate
	changed   chan struct{} // committed or last changed: R/state is published again
}

// New makes the updater and reads what it needs at the start: the running firmware's
// version, board and epoch, the trusted keys, the last update from the database.
func New(opt Options) (*Updater, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.FirmwareFile == "" {
		opt.FirmwareFile = DefaultFirmwareFile
	}
	if opt.KeysDir == "" {
		opt.KeysDir = DefaultKeysDir
	}
	if opt.DpkgList == "" {
		opt.DpkgList = DefaultDpkgList
	}
	if opt.SpoolDir == "" {
		opt.SpoolDir = os.TempDir()
	}
	if opt.Device == nil {
		opt.Device = func(slot string) (string, error) { return gptpart.Find("rackwatch-" + slot) }
	}
	if opt.Reboot == nil {
		opt.Reboot = func() error { return syscall.Kill(1, syscall.SIGTERM) }
	}
	if opt.RebootDelay == 0 {
		opt.RebootDelay = rebootDelay
	}
	u := &Updater{opt: opt, log: opt.Log, now: opt.Now, committed: true, changed: make(chan struct{}, 1),
		set: Settings{CommitAfter: DefaultCommitAfter, MaxBytes: DefaultMaxBytes}}
	u.fw = firmwareInfo{Version: opt.Version, Board: Board}
	switch {
	case opt.Slot != "":
		u.updates = UpdatesAB
		if opt.Slot != "a" && opt.Slot != "b" {
			return nil, fmt.Errorf("update: RACKWATCH_SLOT=%q, want a or b", opt.Slot)
		}
		b, err := os.ReadFile(opt.FirmwareFile)
		if err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		if err := json.Unmarshal(b, &u.fw); err != nil {
			return nil, fmt.Errorf("update: %s: %w", opt.FirmwareFile, err)
		}
		if u.keys, err = LoadKeys(opt.KeysDir); err != nil {
			return nil, err
		}
	case fileExists(opt.DpkgList):
		u.updates = UpdatesApt
	default:
		u.updates = UpdatesNone
	}
	if opt.DB != nil {
		// A read: a start that has nothing to settle writes nothing.
		if err := opt.DB.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			if b == nil {
				return nil
			}
			if v := b.Get(lastKey); v != nil {
				var l LastUpdate
				if json.Unmarshal(v, &l) == nil {
					u.last = &l
				}
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("update: database: %w", err)
		}
	}
	return u, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// LoadKeys reads every *.pub in dir. No key is an error on the image: it could never be
// updated.
func LoadKeys(dir string) ([]minisign.PublicKey, error) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.pub"))
	var keys []minisign.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("update: key %s: %w", p, err)
		}
		k, err := minisign.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("update: key %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("update: no public keys (*.pub) in %s", dir)
	}
	return keys, nil
}

// Configure applies the update.* settings (at the start and on every reload).
func (u *Updater) Configure(s Settings) {
	if s.CommitAfter <= 0 {
		s.CommitAfter = DefaultCommitAfter
	}
	if s.MaxBytes <= 0 {
		s.MaxBytes = DefaultMaxBytes
	}
	u.mu.Lock()
	u.set = s
	u.mu.Unlock()
}

func (u *Updater) settings() Settings {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.set
}

// Changed is signalled when the firmware object changed (a commit, a result).
func (u *Updater) Changed() <-chan struct{} { return u.changed }

func (u *Updater) signal() {
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

// Status is the firmware object.
func (u *Updater) Status() Firmware {
	u.mu.Lock()
	defer u.mu.Unlock()
	f := Firmware{Version: u.fw.Version, Slot: u.opt.Slot, Committed: u.committed, Updates: u.updates, Busy: u.busy.Load()}
	if u.last != nil {
		l := *u.last
		f.LastUpdate = &l
	}
	return f
}

func upper(slot string) string { return strings.ToUpper(slot) }

func (u *Updater) stamp() string { return u.now().UTC().Format(time.RFC3339) }

// Boot looks at what the last boot did and settles it: a pending update that booted is on
// trial (Run commits it), one that did not rolled back; a normal boot gives the running slot
// its full tries back. It writes the boot state at most once. Nothing happens off the image.
func (u *Updater) Boot() error {
	if u.updates != UpdatesAB {
		return nil
	}
	cur := upper(u.opt.Slot)
	st, err := bootstate.Load(u.opt.BootDir)
	if err != nil {
		// The script boots the default order when neither copy is valid; write a good one.
		u.log.Warn("update: boot state unreadable, writing a fresh one", "err", err)
	}
	p, err := u.loadPending()
	if err != nil {
		return err
	}
	switch {
	case p != nil && p.BootID != "" && p.BootID == u.opt.BootID:
		// Installed during this boot (the daemon restarted before the reboot): nothing to
		// judge yet.
		return nil
	case p != nil && upper(p.To) == cur && st.Trial == cur:
		u.mu.Lock()
		u.committed = false
		u.last = &LastUpdate{Version: p.Version, From: p.From, Slot: p.To, Outcome: OutcomeTrial, At: p.At, KeyID: p.KeyID}
		u.mu.Unlock()
		u.log.Info("update: running the new firmware on trial", "version", u.fw.Version, "slot", u.opt.Slot)
		return nil
	case p != nil && upper(p.To) == cur:
		// Committed in the boot state, but the power went before the record said so.
		return u.finish(p, OutcomeCommitted, "")
	case p != nil:
		outcome, why := OutcomeRolledBack, fmt.Sprintf("the new firmware in slot %s did not stay up (crash, hang or power cut before the commit); the board went back to slot %s", p.To, u.opt.Slot)
		if st.Trial != upper(p.To) {
			outcome, why = OutcomeFailed, "the update was interrupted before the reboot into the new slot"
		}
		if err := u.saveState(normalState(st, cur)); err != nil {
			return err
		}
		return u.finish(p, outcome, why)
	case st.Trial == cur:
		// On trial with no record (the database was replaced): judge it like a pending one.
		u.mu.Lock()
		u.committed = false
		u.mu.Unlock()
		return nil
	}
	if want := normalState(st, cur); !sameState(st, want) {
		return u.saveState(want)
	}
	return nil
}

// normalState is st with cur first, at full tries, and no trial.
func normalState(st bootstate.State, cur string) bootstate.State {
	n := bootstate.State{Gen: st.Gen, Order: []string{cur, bootstate.Other(cur)}, Left: map[string]int{}, Trial: ""}
	for k, v := range st.Left {
		n.Left[k] = v
	}
	n.Left[cur] = bootstate.MaxTries
	if _, ok := n.Left[bootstate.Other(cur)]; !ok {
		n.Left[bootstate.Other(cur)] = bootstate.MaxTries
	}
	return n
}

func sameState(a, b bootstate.State) bool {
	if a.Trial != b.Trial || strings.Join(a.Order, " ") != strings.Join(b.Order, " ") || len(a.Left) != len(b.Left) {
		return false
	}
	for k, v := range a.Left {
		if b.Left[k] != v {
			return false
		}
	}
	return true
}

func (u *Updater) saveState(st bootstate.State) error {
	if err := st.Save(u.opt.BootDir); err != nil {
		return fmt.Errorf("update: write boot state: %w", err)
	}
	return nil
}

// Run commits a trial once the site has been healthy for commit_after without a break, then
// returns; it returns at once when nothing is on trial. healthy is the site's health.
func (u *Updater) Run(ctx context.Context, healthy func() error) {
	u.mu.Lock()
	trial := !u.committed
	u.mu.Unlock()
	if !trial || u.updates != UpdatesAB {
		return
	}
	// The site is checked a few times within the window: an unhealthy check starts the
	// window again. The timer stops for good with the commit.
	start := u.now()
	for {
		after := u.settings().CommitAfter
		step := max(after/4, 100*time.Millisecond)
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := healthy(); err != nil {
			u.log.Warn("update: site not healthy; the commit waits", "err", err)
			start = u.now()
			continue
		}
		if u.now().Sub(start) >= after {
			break
		}
	}
	if err := u.commit(); err != nil {
		u.log.Error("update: commit failed", "err", err)
	}
}

func (u *Updater) commit() error {
	cur := upper(u.opt.Slot)
	st, _ := bootstate.Load(u.opt.BootDir)
	if err := u.saveState(normalState(st, cur)); err != nil {
		return err
	}
	p, err := u.loadPending()
	if err != nil {
		return err
	}
	if p == nil {
		p = &pending{To: u.opt.Slot, Version: u.fw.Version, At: u.stamp()}
	}
	u.log.Info("update: committed", "version", u.fw.Version, "slot", u.opt.Slot)
	return u.finish(p, OutcomeCommitted, "")
}

// finish records an update's result in place of its pending record and reports it.
func (u *Updater) finish(p *pending, outcome, why string) error {
	l := LastUpdate{Version: p.Version, From: p.From, Slot: p.To, Outcome: outcome, At: u.stamp(), KeyID: p.KeyID, Error: why}
	if err := u.put(nil, &l); err != nil {
		return err
	}
	u.mu.Lock()
	u.last = &l
	if outcome == OutcomeCommitted {
		u.committed = true
	}
	u.mu.Unlock()
	u.signal()
	u.report("", l)
	return nil
}

func (u *Updater) report(by string, l LastUpdate) {
	if u.opt.Report != nil {
		u.opt.Report(Report{By: by, Update: l})
	}
}

func (u *Updater) loadPending() (*pending, error) {
	if u.opt.DB == nil {
		return nil, nil
	}
	var p *pending
	err := u.opt.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		if v := b.Get(pendingKey); v != nil {
			p = new(pending)
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("pending update record: %w", err)
			}
		}
		return nil
	})
	return p, err
}

// put writes the pending record (nil: deletes it) and the last update (nil: leaves it), in
// one transaction.
func (u *Updater) put(p *pending, l *LastUpdate) error {
	if u.opt.DB == nil {
		return nil
	}
	return u.opt.DB.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if p == nil {
			if err := b.Delete(pendingKey); err != nil {
				return err
			}
		} else {
			v, _ := json.Marshal(p)
			if err := b.Put(pendingKey, v); err != nil {
				return err
			}
		}
		if l != nil {
			v, _ := json.Marshal(l)
			return b.Put(lastKey, v)
		}
		return nil
	})
}

// Result is what Install answers.
type Result struct {
	Version string `json:"version"`
	Slot    string `json:"slot"`
	KeyID   string `json:"key_id"`
	Reboot  bool   `json:"reboot"`
}

// Install verifies the bundle read from r, writes it into the inactive slot and reboots into
// it (after RebootDelay). by is who asked, for the audit trail. Only one runs at a time.
func (u *Updater) Install(ctx context.Context, r io.Reader, by string) (Result, error) {
	return u.installChecked(ctx, r, by, nil)
}

// installChecked is Install with check run once the bundle is verified, before the slot is
// touched (the download's own checksum).
func (u *Updater) installChecked(ctx context.Context, r io.Reader, by string, check func() error) (Result, error) {
	switch u.updates {
	case UpdatesApt:
		return Result{}, fmt.Errorf("%w: it was installed from the .deb; update it with apt", ErrUnsupported)
	case UpdatesNone:
		return Result{}, fmt.Errorf("%w: it does not run from the firmware image", ErrUnsupported)
	}
	if !u.busy.CompareAndSwap(false, true) {
		return Result{}, ErrBusy
	}
	defer u.busy.Store(false)
	u.mu.Lock()
	trial := !u.committed
	u.mu.Unlock()
	if trial {
		return Result{}, fmt.Errorf("%w: the running firmware is on trial until it commits (update.commit_after)", ErrBusy)
	}
	res, err := u.install(ctx, r, check)
	if err != nil {
		l := LastUpdate{From: u.fw.Version, Slot: bootstate.Other(u.opt.Slot), Outcome: OutcomeFailed, At: u.stamp(), Error: err.Error()}
		if errors.Is(err, ErrRefused) {
			// A refused bundle changes nothing on the board: only the audit trail hears of it.
			u.report(by, LastUpdate{From: u.fw.Version, Outcome: "refused", At: l.At, Error: err.Error()})
			return Result{}, err
		}
		u.put(nil, &l)
		u.mu.Lock()
		u.last = &l
		u.mu.Unlock()
		u.signal()
		u.report(by, l)
		return Result{}, err
	}
	l := LastUpdate{Version: res.Version, From: u.fw.Version, Slot: res.Slot, Outcome: OutcomeInstalled, At: u.stamp(), KeyID: res.KeyID}
	u.mu.Lock()
	u.last = &l
	u.mu.Unlock()
	u.report(by, l)
	time.AfterFunc(u.opt.RebootDelay, func() {
		u.log.Info("update: rebooting into the new firmware", "version", res.Version, "slot", res.Slot)
		if err := u.opt.Reboot(); err != nil {
			u.log.Error("update: reboot", "err", err)
		}
	})
	return res, nil
}

func (u *Updater) install(ctx context.Context, r io.Reader, check func() error) (Result, error) {
	set := u.settings()
	if err := os.MkdirAll(u.opt.SpoolDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("update: spool: %w", err)
	}
	// The parts are bounded by MaxBytes in Open; this bounds the rest of the stream.
	r = io.LimitReader(r, set.MaxBytes+maxHeaderBytes+maxTrailer)
	b, err := fwbundle.Open(ctxReader{ctx, r}, fwbundle.Policy{Keys: u.keys, Board: u.fw.Board, MinEpoch: u.fw.Epoch,
		MaxBytes: set.MaxBytes, SpoolDir: u.opt.SpoolDir})
	if err != nil {
		return Result{}, err
	}
	defer b.Close()
	if check != nil {
		if err := check(); err != nil {
			return Result{}, fmt.Errorf("%w: %v", ErrRefused, err)
		}
	}
	part, ok := b.Manifest.Part(fwbundle.SlotPart)
	if !ok {
		return Result{}, fmt.Errorf("%w: no %s in the bundle", ErrRefused, fwbundle.SlotPart)
	}
	target := bootstate.Other(u.opt.Slot)
	dev, err := u.opt.Device(target)
	if err != nil {
		return Result{}, fmt.Errorf("update: slot %s: %w", target, err)
	}
	if size, err := deviceSize(dev); err != nil {
		return Result{}, fmt.Errorf("update: slot %s (%s): %w", target, dev, err)
	} else if part.RawSize > size {
		return Result{}, fmt.Errorf("%w: the slot image is %d bytes, slot %s only %d", ErrRefused, part.RawSize, target, size)
	}
	cur := upper(u.opt.Slot)
	st, _ := bootstate.Load(u.opt.BootDir)
	// The slot about to be written is not bootable until it is whole and read back.
	off := normalState(st, cur)
	off.Left[upper(target)] = 0
	if err := u.saveState(off); err != nil {
		return Result{}, err
	}
	u.log.Info("update: writing slot", "slot", target, "device", dev, "version", b.Manifest.Version, "bytes", part.RawSize)
	if err := writeSlot(ctx, dev, b, part); err != nil {
		return Result{}, fmt.Errorf("update: slot %s (%s): %w", target, dev, err)
	}
	p := pending{From: u.fw.Version, FromSlot: u.opt.Slot, To: target, Version: b.Manifest.Version, KeyID: b.KeyID.String(),
		BootID: u.opt.BootID, At: u.stamp()}
	if err := u.put(&p, nil); err != nil {
		return Result{}, fmt.Errorf("update: pending record: %w", err)
	}
	trial := off
	trial.Order = []string{upper(target), cur}
	trial.Left[upper(target)] = 1
	trial.Trial = upper(target)
	if err := u.saveState(trial); err != nil {
		u.put(nil, nil)
		return Result{}, err
	}
	u.log.Info("update: boot state set: the next boot tries the new slot once", "slot", target, "version", b.Manifest.Version)
	return Result{Version: b.Manifest.Version, Slot: target, KeyID: b.KeyID.String(), Reboot: true}, nil
}

// writeSlot writes the part's raw bytes to dev, syncs, and reads them back.
func writeSlot(ctx context.Context, dev string, b *fwbundle.Bundle, part fwbundle.Part) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	raw, err := b.Raw(part.Name)
	if err != nil {
		return err
	}
	defer raw.Close()
	n, err := io.Copy(f, ctxReader{ctx, io.LimitReader(raw, part.RawSize)})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n != part.RawSize {
		return fmt.Errorf("write: %d of %d bytes", n, part.RawSize)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	// Read back through a new descriptor, after dropping the page cache where the kernel
	// allows: the check is of what the device holds.
	dropCache(f)
	rf, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer rf.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(rf, part.RawSize)); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != part.RawSHA256 {
		return fmt.Errorf("read back: sha256 %s, written %s", got, part.RawSHA256)
	}
	return nil
}

// deviceSize is the size of a block device (or of a file standing in for one).
func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

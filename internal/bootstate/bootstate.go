// Package bootstate reads and writes the A/B boot state that the firmware's boot script
// (boot.scr, run by U-Boot) keeps on the boot partition: which slot to try first, how many
// tries each slot has left, and which slot is on trial after an update.
//
// The state is a U-Boot text environment (what `env export -t` writes: KEY=VALUE lines sorted
// by key, then a NUL byte), kept twice, in rwstate.0 and rwstate.1, because a FAT write is not
// atomic. Every write goes to the copy that is not the newest, with the generation RW_GEN one
// higher, so a power cut during a write loses at most that write. RW_END repeats RW_GEN; since
// the keys are sorted RW_GEN is the last line, so a write cut short lacks RW_GEN or has it
// shortened, and disagrees with RW_END. The numbers (RW_GEN, BOOT_x_LEFT) are hexadecimal
// without a prefix because U-Boot's setexpr, which counts them at boot, prints them so.
//
// Both U-Boot and this package must pick the same copy, so a copy is valid exactly when
// RW_GEN is a hex number and RW_END equals it; the other keys are read leniently, as the
// boot script does. The package must not import anything of the daemon: /init uses it too.
package bootstate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// MaxTries is how many boots a slot gets before the boot script gives up on it.
const MaxTries = 3

// Files are the names of the two copies at the root of the boot partition.
var Files = [2]string{"rwstate.0", "rwstate.1"}

// The two slots, as the state file names them. The kernel command line and RACKWATCH_SLOT
// name them in lower case ("a", "b").
const (
	SlotA = "A"
	SlotB = "B"
)

// ErrNoState is returned (wrapped) by Load when neither copy is valid.
var ErrNoState = errors.New("bootstate: no valid copy of the boot state")

// maxFile bounds what is read of a copy: a real one is about 80 bytes.
const maxFile = 4096

// State is one generation of the boot state.
type State struct {
	Gen   uint64
	Order []string       // SlotA, SlotB in boot order
	Left  map[string]int // tries left per slot
	Trial string         // slot on trial after an update, "" when none
}

// Default is the state of a fresh image: A first, every slot with MaxTries.
func Default() State {
	return State{Order: []string{SlotA, SlotB}, Left: map[string]int{SlotA: MaxTries, SlotB: MaxTries}}
}

// Other returns the slot that is not slot ("A" for "B" and the reverse), in the same case.
func Other(slot string) string {
	switch slot {
	case "A":
		return "B"
	case "B":
		return "A"
	case "a":
		return "b"
	case "b":
		return "a"
	}
	return ""
}

// Load returns the newest valid copy in dir, the mounted boot partition. When neither copy
// is valid it returns Default() and an error wrapping ErrNoState; the boot script then boots
// the first slot of the default order.
func Load(dir string) (State, error) {
	s, _, err := load(dir)
	return s, err
}

// load also returns the index of the copy it read (-1 when none is valid).
func load(dir string) (State, int, error) {
	best, idx := State{}, -1
	var errs []error
	for i, name := range Files {
		b, err := readBounded(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, err := Parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		// Equal generations: the first copy wins, as in the boot script.
		if idx < 0 || s.Gen > best.Gen {
			best, idx = s, i
		}
	}
	if idx < 0 {
		return Default(), -1, fmt.Errorf("%w in %s: %w", ErrNoState, dir, errors.Join(errs...))
	}
	return best, idx, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, maxFile)
	}
	return b, nil
}

// Parse reads one copy. It fails only when the copy is torn or not a state at all (RW_GEN
// missing, not hex, or not equal to RW_END); other keys that are missing or wrong read as
// the boot script reads them: an unknown BOOT_ORDER as "A B", a missing or bad count as 0
// tries, an unknown BOOT_TRIAL as none.
func Parse(b []byte) (State, error) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	gen, end := kv["RW_GEN"], kv["RW_END"]
	if gen == "" {
		return State{}, errors.New("no RW_GEN: torn or empty")
	}
	if end != gen {
		return State{}, fmt.Errorf("RW_END %q differs from RW_GEN %q: torn", end, gen)
	}
	g, err := strconv.ParseUint(gen, 16, 64)
	if err != nil {
		return State{}, fmt.Errorf("RW_GEN %q: not a hex number", gen)
	}
	s := State{Gen: g, Left: map[string]int{}}
	switch kv["BOOT_ORDER"] { // exactly as boot.scr's test compares it
	case "B A":
		s.Order = []string{SlotB, SlotA}
	default:
		s.Order = []string{SlotA, SlotB}
	}
	for _, slot := range []string{SlotA, SlotB} {
		n, err := strconv.ParseUint(kv["BOOT_"+slot+"_LEFT"], 16, 8)
		if err == nil {
			s.Left[slot] = int(n)
		} else {
			s.Left[slot] = 0
		}
	}
	if t := kv["BOOT_TRIAL"]; t == SlotA || t == SlotB {
		s.Trial = t
	}
	return s, nil
}

// Marshal returns the copy's bytes: the same bytes U-Boot's `env export -t` writes for the
// same values (sorted keys, a NUL at the end; BOOT_TRIAL left out when empty, since U-Boot
// cannot hold an empty variable).
func (s State) Marshal() []byte {
	kv := map[string]string{
		"BOOT_ORDER": strings.Join(s.order(), " "),
		"RW_GEN":     strconv.FormatUint(s.Gen, 16),
		"RW_END":     strconv.FormatUint(s.Gen, 16),
	}
	for _, slot := range []string{SlotA, SlotB} {
		n := s.Left[slot]
		n = max(0, min(n, 0xff))
		kv["BOOT_"+slot+"_LEFT"] = strconv.FormatInt(int64(n), 16)
	}
	if s.Trial == SlotA || s.Trial == SlotB {
		kv["BOOT_TRIAL"] = s.Trial
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, kv[k])
	}
	b.WriteByte(0)
	return b.Bytes()
}

// order is Order made valid: both slots, each once, unknown names dropped.
func (s State) order() []string {
	var o []string
	seen := map[string]bool{}
	for _, slot := range s.Order {
		if (slot == SlotA || slot == SlotB) && !seen[slot] {
			o = append(o, slot)
			seen[slot] = true
		}
	}
	for _, slot := range []string{SlotA, SlotB} {
		if !seen[slot] {
			o = append(o, slot)
		}
	}
	return o
}

// Save writes s as the next generation: into the copy that is not the newest valid one,
// with a generation one above both s.Gen and the newest on disk (so that saving an old State
// twice still moves forward), then fsyncs the file and dir. The newest copy is never
// touched, so a power cut during Save leaves it to be read. There must be one writer at a
// time: on the board that is rackwatch (U-Boot writes only before Linux runs).
func (s State) Save(dir string) error {
	cur, idx, err := load(dir)
	target := 0
	if err == nil {
		target = 1 - idx
		s.Gen = max(s.Gen, cur.Gen)
	}
	s.Gen++
	path := filepath.Join(dir, Files[target])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("bootstate: %w", err)
	}
	if _, err := f.Write(s.Marshal()); err != nil {
		f.Close()
		return fmt.Errorf("bootstate: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("bootstate: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bootstate: close %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bootstate: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("bootstate: sync %s: %w", dir, err)
	}
	return nil
}

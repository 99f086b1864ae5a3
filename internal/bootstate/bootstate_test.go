package bootstate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// uboot is what U-Boot 2023.01's `env export -t` wrote for these values on the QEMU board
// (BOOT_A_LEFT=2 after a decrement, RW_GEN 0x1a after an increment): the format Marshal
// must match byte for byte.
const uboot = "BOOT_A_LEFT=2\nBOOT_B_LEFT=3\nBOOT_ORDER=A B\nRW_END=1a\nRW_GEN=1a\n\x00"

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want State
		err  bool
	}{
		{"uboot export", uboot, State{Gen: 0x1a, Order: []string{"A", "B"}, Left: map[string]int{"A": 2, "B": 3}}, false},
		{"trial, B first", "BOOT_A_LEFT=3\nBOOT_B_LEFT=1\nBOOT_ORDER=B A\nBOOT_TRIAL=B\nRW_END=7\nRW_GEN=7\n",
			State{Gen: 7, Order: []string{"B", "A"}, Left: map[string]int{"A": 3, "B": 1}, Trial: "B"}, false},
		{"hand edited: CRLF, comment, any order, no NUL", "# state\r\nRW_END=0\r\nRW_GEN=0\r\nBOOT_ORDER=B A\r\nBOOT_B_LEFT=3\r\n",
			State{Gen: 0, Order: []string{"B", "A"}, Left: map[string]int{"A": 0, "B": 3}}, false},
		{"order not exactly B A", "BOOT_ORDER=B  A\nRW_GEN=2\nRW_END=2\n",
			State{Gen: 2, Order: []string{"A", "B"}, Left: map[string]int{"A": 0, "B": 0}}, false},
		{"lenient keys", "BOOT_ORDER=C\nBOOT_A_LEFT=x\nBOOT_TRIAL=Z\nRW_GEN=2\nRW_END=2\n",
			State{Gen: 2, Order: []string{"A", "B"}, Left: map[string]int{"A": 0, "B": 0}}, false},
		{"garbage after the NUL", "BOOT_ORDER=B A\nRW_END=3\nRW_GEN=3\n\x00RW_GEN=9\n",
			State{Gen: 3, Order: []string{"B", "A"}, Left: map[string]int{"A": 0, "B": 0}}, false},
		{"empty", "", State{}, true},
		{"zeros (a torn FAT write)", "\x00\x00\x00\x00", State{}, true},
		{"no RW_END", "BOOT_ORDER=A B\nRW_GEN=3\n", State{}, true},
		{"RW_GEN cut short", "BOOT_ORDER=A B\nRW_END=1a\nRW_GEN=1", State{}, true},
		{"RW_GEN not hex", "RW_END=zz\nRW_GEN=zz\n", State{}, true},
		{"RW_GEN negative", "RW_END=-1\nRW_GEN=-1\n", State{}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse([]byte(c.in))
			if (err != nil) != c.err {
				t.Fatalf("Parse(%q) error = %v, want error %v", c.in, err, c.err)
			}
			if !c.err && !reflect.DeepEqual(got, c.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
			}
		})
	}
}

func TestMarshalIsUBootExport(t *testing.T) {
	s := State{Gen: 0x1a, Order: []string{"A", "B"}, Left: map[string]int{"A": 2, "B": 3}}
	if got := string(s.Marshal()); got != uboot {
		t.Errorf("Marshal = %q, want %q", got, uboot)
	}
	// Bad values are written as something the boot script can read.
	s = State{Gen: 1, Order: []string{"B", "B", "x"}, Left: map[string]int{"A": -4}, Trial: "x"}
	want := "BOOT_A_LEFT=0\nBOOT_B_LEFT=0\nBOOT_ORDER=B A\nRW_END=1\nRW_GEN=1\n\x00"
	if got := string(s.Marshal()); got != want {
		t.Errorf("Marshal = %q, want %q", got, want)
	}
}

// TestTornAtEveryLength cuts a copy at every length, as a power cut during a FAT write can
// leave it: every cut short of the whole text is refused, so the other copy is used.
func TestTornAtEveryLength(t *testing.T) {
	for _, full := range []string{uboot, string(State{Gen: 0x100, Order: []string{"B", "A"}, Left: map[string]int{"A": 3, "B": 1}, Trial: "B"}.Marshal())} {
		text := full[:len(full)-2] // without the last newline and the NUL
		for n := 0; n < len(text); n++ {
			if s, err := Parse([]byte(full[:n])); err == nil {
				t.Errorf("Parse(%q) = %+v, want an error", full[:n], s)
			}
		}
		for _, n := range []int{len(full) - 2, len(full) - 1, len(full)} {
			if _, err := Parse([]byte(full[:n])); err != nil {
				t.Errorf("Parse(%q): %v", full[:n], err)
			}
		}
	}
}

func write(t *testing.T, dir string, i int, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, Files[i]), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func gen(g uint64, order ...string) string {
	return string(State{Gen: g, Order: order, Left: map[string]int{"A": 3, "B": 3}}.Marshal())
}

func TestLoad(t *testing.T) {
	for _, c := range []struct {
		name       string
		copy0      string // "-" for a missing file
		copy1      string
		wantGen    uint64
		wantOrder  string
		wantNoCopy bool
	}{
		{"newest wins (1)", gen(4, "A", "B"), gen(5, "B", "A"), 5, "B", false},
		{"newest wins (0)", gen(6, "B", "A"), gen(5, "A", "B"), 6, "B", false},
		{"hex order, not text order", gen(0x9, "A", "B"), gen(0x10, "B", "A"), 0x10, "B", false},
		{"equal: the first copy", gen(2, "B", "A"), gen(2, "A", "B"), 2, "B", false},
		{"newest torn", gen(4, "A", "B"), gen(5, "B", "A")[:20], 4, "A", false},
		{"newest empty", "", gen(8, "B", "A"), 8, "B", false},
		{"one missing", "-", gen(1, "B", "A"), 1, "B", false},
		{"both torn", gen(4, "B", "A")[:30], gen(5, "B", "A")[:10], 0, "A", true},
		{"both missing", "-", "-", 0, "A", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, text := range []string{c.copy0, c.copy1} {
				if text != "-" {
					write(t, dir, i, text)
				}
			}
			s, err := Load(dir)
			if c.wantNoCopy {
				if !errors.Is(err, ErrNoState) {
					t.Fatalf("Load: err = %v, want ErrNoState", err)
				}
				if !reflect.DeepEqual(s, Default()) {
					t.Errorf("Load = %+v, want the default", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Gen != c.wantGen || s.Order[0] != c.wantOrder {
				t.Errorf("Load = %+v, want gen %d, %s first", s, c.wantGen, c.wantOrder)
			}
		})
	}
}

// TestSave checks that a write never touches the newest valid copy and moves the generation
// forward, whatever the State it was given.
func TestSave(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, 0, gen(0, "A", "B"))
	write(t, dir, 1, gen(0, "A", "B")[:5]) // a fresh image may hold one copy only

	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		file int
		gen  uint64
	}{{1, 1}, {0, 2}, {1, 3}, {0, 4}} {
		before, _ := os.ReadFile(filepath.Join(dir, Files[1-want.file]))
		s.Order = []string{"B", "A"}
		s.Left["B"] = i
		if err := s.Save(dir); err != nil { // s.Gen stays 0: Save must still move forward
			t.Fatal(err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, Files[1-want.file]))
		if !bytes.Equal(before, after) {
			t.Errorf("save %d rewrote %s, the newest copy", i, Files[1-want.file])
		}
		got, err := Parse(mustRead(t, filepath.Join(dir, Files[want.file])))
		if err != nil || got.Gen != want.gen || got.Left["B"] != i {
			t.Errorf("save %d: %s = %+v, %v; want gen %d", i, Files[want.file], got, err, want.gen)
		}
		if l, _ := Load(dir); l.Gen != want.gen {
			t.Errorf("save %d: Load gen = %d, want %d", i, l.Gen, want.gen)
		}
	}
	// A torn newest copy: the next write replaces it, and counts on from the valid one.
	write(t, dir, 0, "BOOT_ORDER=A B\nRW_E")
	if err := (State{Order: []string{"A", "B"}, Left: map[string]int{"A": 1, "B": 3}}).Save(dir); err != nil {
		t.Fatal(err)
	}
	if l, err := Load(dir); err != nil || l.Gen != 4 || l.Left["A"] != 1 {
		t.Errorf("after a torn copy: Load = %+v, %v; want gen 4 with A=1", l, err)
	}
	// Nothing valid: the write still lands, as generation 1.
	empty := t.TempDir()
	if err := Default().Save(empty); err != nil {
		t.Fatal(err)
	}
	if l, err := Load(empty); err != nil || l.Gen != 1 {
		t.Errorf("save into an empty dir: Load = %+v, %v", l, err)
	}
}

func TestSaveError(t *testing.T) {
	if err := Default().Save(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Save into a missing folder gave no error")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOther(t *testing.T) {
	for in, want := range map[string]string{"A": "B", "B": "A", "a": "b", "b": "a", "": "", "C": ""} {
		if got := Other(in); got != want {
			t.Errorf("Other(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(uboot))
	f.Add([]byte("RW_GEN=ffffffffffffffff\nRW_END=ffffffffffffffff\nBOOT_A_LEFT=ff\n"))
	f.Add([]byte("\x00=\n==\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		if len(s.Order) != 2 || s.Order[0] == s.Order[1] {
			t.Fatalf("Parse(%q): order %v", b, s.Order)
		}
		// What Parse accepts, Marshal writes back to the same state.
		again, err := Parse(s.Marshal())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", b, again, err, s)
		}
	})
}

func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "boot")
	defer os.RemoveAll(dir)
	// After an update to slot B: B first with one try, on trial.
	s := Default()
	s.Order = []string{SlotB, SlotA}
	s.Left[SlotB] = 1
	s.Trial = SlotB
	if err := s.Save(dir); err != nil {
		panic(err)
	}
	got, _ := Load(dir)
	fmt.Println(got.Gen, got.Order, got.Left[SlotB], got.Trial)
	// Output: 1 [B A] 1 B
}

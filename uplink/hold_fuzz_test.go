package uplink

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadHold: whatever the hold file holds at start (torn by a crash, written by something
// else), readHold returns whole records or a reason, never a panic, and every record it
// returns is one that appendHoldRecord would have written.
func FuzzReadHold(f *testing.F) {
	f.Add(append(holdHeader("boot", 7, 1030), appendHoldRecord(nil, 7, pack([]byte(`{"seq":7}`)))...))
	f.Add(holdHeader("", 0, 0))
	f.Add([]byte(holdMagic))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "h")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := readHold(path)
		if err != nil {
			t.Fatal(err)
		}
		if !h.found {
			t.Fatal("an existing file read as absent")
		}
		// The records read back are a prefix of the file, byte for byte.
		var again []byte
		for _, r := range h.recs {
			again = appendHoldRecord(again, r.seq, r.packed)
		}
		if len(h.recs) > 0 && !bytes.Contains(b, again) {
			t.Fatalf("records %+v are not in the file", h.recs)
		}
		if h.bad == "" && len(h.recs) > 0 && !bytes.HasSuffix(b, again) {
			t.Fatal("no reason given, yet the records do not reach the end of the file")
		}
	})
}

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// A bundle built signed, and one built unsigned then signed by the minisign tool and put
// back with -resign, are both accepted, and carry the slot image unchanged.
func TestBuildAndResign(t *testing.T) {
	bin := testpeer.Require(t, "minisign", "minisign")
	t.Setenv("SOURCE_DATE_EPOCH", "1800000000")
	dir := t.TempDir()
	slot := filepath.Join(dir, "slot.img")
	img := bytes.Repeat([]byte("rackwatch slot\x00\x00\x00"), 40000)
	os.WriteFile(slot, img, 0o644)
	pubB, _ := os.ReadFile("../keys/dev.pub")
	pub, err := minisign.ParsePublicKey(pubB)
	if err != nil {
		t.Fatal(err)
	}
	pol := fwbundle.Policy{Keys: []minisign.PublicKey{pub}, Board: "rackwatch-arm64", MinEpoch: 1800000000, MaxBytes: 1 << 20, SpoolDir: dir}

	signed := filepath.Join(dir, "signed.update")
	if err := build(slot, "v9", "rackwatch-arm64", "../keys/dev.key", signed); err != nil {
		t.Fatal(err)
	}
	unsigned := filepath.Join(dir, "unsigned.update")
	if err := build(slot, "v9", "rackwatch-arm64", "", unsigned); err != nil {
		t.Fatal(err)
	}
	mf := unsigned + ".manifest.json"
	if out, err := exec.Command(bin, "-S", "-s", "../keys/dev.key", "-m", mf).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	resigned := filepath.Join(dir, "resigned.update")
	if err := resignBundle(unsigned, mf+".minisig", resigned); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{signed, resigned, unsigned} {
		f, _ := os.Open(p)
		b, err := fwbundle.Open(f, pol)
		f.Close()
		if p == unsigned {
			if err == nil {
				t.Fatal("an unsigned bundle is accepted")
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(p), err)
		}
		if b.Manifest.Version != "v9" || b.Manifest.Epoch != 1800000000 {
			t.Fatalf("manifest %+v", b.Manifest)
		}
		b.Close()
	}
}

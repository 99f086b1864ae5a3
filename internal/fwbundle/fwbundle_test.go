package fwbundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

const board = "rackwatch-arm64"

func devKey(t testing.TB) minisign.SecretKey {
	t.Helper()
	b, err := os.ReadFile("../../images/keys/dev.key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := minisign.ParseSecretKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// slotImage is a stand-in for a FAT slot image: mostly zeros, some noise.
func slotImage(seed uint64) []byte {
	img := make([]byte, 256<<10)
	r := mrand.New(mrand.NewPCG(seed, 1))
	for i := 0; i < 16<<10; i++ {
		img[r.IntN(len(img))] = byte(r.Uint32())
	}
	return img
}

type build struct {
	board, version string
	epoch          int64
	key            minisign.SecretKey
	img            []byte
	edit           func(m *fwbundle.Manifest) // after the part is described, before signing
}

func (c build) bytes(t testing.TB) []byte {
	t.Helper()
	var part bytes.Buffer
	p, err := fwbundle.CompressPartLevel(fwbundle.SlotPart, bytes.NewReader(c.img), &part, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	m := fwbundle.Manifest{Format: fwbundle.Format, Board: c.board, Version: c.version, Epoch: c.epoch, Parts: []fwbundle.Part{p}}
	if c.edit != nil {
		c.edit(&m)
	}
	mb, err := fwbundle.EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := fwbundle.SignManifest(c.key, mb)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := fwbundle.Write(&out, mb, sig, []io.Reader{bytes.NewReader(part.Bytes())}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func policy(t testing.TB) fwbundle.Policy {
	return fwbundle.Policy{Keys: []minisign.PublicKey{devKey(t).Public()}, Board: board, MinEpoch: 1000, MaxBytes: 4 << 20, SpoolDir: t.TempDir()}
}

func TestRoundTrip(t *testing.T) {
	img := slotImage(1)
	b := build{board: board, version: "v2", epoch: 2000, key: devKey(t), img: img}.bytes(t)
	if again := (build{board: board, version: "v2", epoch: 2000, key: devKey(t), img: img}).bytes(t); !bytes.Equal(b, again) {
		t.Error("same inputs give different bundles")
	}
	pol := policy(t)
	bu, err := fwbundle.Open(bytes.NewReader(b), pol)
	if err != nil {
		t.Fatal(err)
	}
	defer bu.Close()
	if bu.Manifest.Version != "v2" || bu.KeyID != devKey(t).ID {
		t.Fatalf("manifest %+v key %s", bu.Manifest, bu.KeyID)
	}
	rc, err := bu.Raw(fwbundle.SlotPart)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, img) {
		t.Fatal("raw part differs from the image")
	}
	// The spool is unlinked: nothing is left in the spool dir even while it is open.
	if ents, _ := os.ReadDir(pol.SpoolDir); len(ents) != 0 {
		t.Fatalf("spool dir holds %v", ents)
	}
}

func TestRefused(t *testing.T) {
	key := devKey(t)
	other, _ := minisign.GenerateKey(rand.Reader)
	good := build{board: board, version: "v2", epoch: 2000, key: key, img: slotImage(2)}
	goodBytes := good.bytes(t)

	withBoard, withEpoch, withKey := good, good, good
	withBoard.board = "rackwatch-armv7"
	withEpoch.epoch = 999
	withKey.key = other
	lying := good
	lying.edit = func(m *fwbundle.Manifest) { m.Parts[0].RawSHA256 = strings.Repeat("0", 64) }

	// unsigned: the signature entry holds a signature of other bytes
	unsigned := rewrite(t, goodBytes, func(name string, b []byte) []byte {
		if name == fwbundle.SignatureName {
			return []byte("untrusted comment: none\n")
		}
		return b
	})
	tampered := rewrite(t, goodBytes, func(name string, b []byte) []byte {
		if name == fwbundle.SlotPart {
			b = bytes.Clone(b)
			b[len(b)/2] ^= 1
		}
		return b
	})
	editedManifest := rewrite(t, goodBytes, func(name string, b []byte) []byte {
		if name == fwbundle.ManifestName {
			return bytes.Replace(b, []byte(`"v2"`), []byte(`"v3"`), 1)
		}
		return b
	})
	cases := map[string][]byte{
		"other board":     withBoard.bytes(t),
		"older epoch":     withEpoch.bytes(t),
		"unknown key":     withKey.bytes(t),
		"raw hash lies":   lying.bytes(t),
		"unsigned":        unsigned,
		"tampered part":   tampered,
		"edited manifest": editedManifest,
		"empty":           nil,
		"not a tar":       []byte("hello"),
	}
	for _, cut := range []int{100, 600, 1500, 3000, len(goodBytes) / 2, len(goodBytes) - 1600} {
		cases["truncated at "+itoa(cut)] = goodBytes[:cut]
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			pol := policy(t)
			bu, err := fwbundle.Open(bytes.NewReader(b), pol)
			if err == nil {
				bu.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, fwbundle.ErrRefused) {
				t.Fatalf("error %v does not wrap ErrRefused", err)
			}
			t.Log(err)
		})
	}
	small := policy(t)
	small.MaxBytes = int64(len(goodBytes)) / 2
	if _, err := fwbundle.Open(bytes.NewReader(goodBytes), small); !errors.Is(err, fwbundle.ErrRefused) {
		t.Errorf("a bundle over max bytes: err = %v", err)
	}
	if bu, err := fwbundle.Open(bytes.NewReader(goodBytes), policy(t)); err != nil {
		t.Fatalf("the good bundle is refused: %v", err)
	} else {
		bu.Close()
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// rewrite re-tars a bundle with f applied to each entry's bytes.
func rewrite(t testing.TB, in []byte, f func(name string, b []byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(in))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		b = f(h.Name, b)
		h.Size = int64(len(b))
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	return out.Bytes()
}

// The bundle's signature is the real format: minisign -V verifies it, and a manifest signed
// by the minisign tool is accepted.
func TestMinisignTool(t *testing.T) {
	bin := testpeer.Require(t, "minisign", "minisign")
	dir := t.TempDir()
	b := build{board: board, version: "v2", epoch: 2000, key: devKey(t), img: slotImage(4)}.bytes(t)
	m, sig, err := fwbundle.ReadManifest(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mf := filepath.Join(dir, fwbundle.ManifestName)
	os.WriteFile(mf, m, 0o644)
	os.WriteFile(mf+".minisig", sig, 0o644)
	if out, err := exec.Command(bin, "-V", "-p", "../../images/keys/dev.pub", "-m", mf).CombinedOutput(); err != nil {
		t.Fatalf("minisign -V: %v\n%s", err, out)
	}
	os.Remove(mf + ".minisig")
	if out, err := exec.Command(bin, "-S", "-s", "../../images/keys/dev.key", "-m", mf).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	toolSig, _ := os.ReadFile(mf + ".minisig")
	resigned := rewrite(t, b, func(name string, b []byte) []byte {
		if name == fwbundle.SignatureName {
			return toolSig
		}
		return b
	})
	bu, err := fwbundle.Open(bytes.NewReader(resigned), policy(t))
	if err != nil {
		t.Fatalf("a bundle signed by minisign is refused: %v", err)
	}
	bu.Close()
}

func FuzzOpen(f *testing.F) {
	key := devKey(f)
	good := build{board: board, version: "v2", epoch: 2000, key: key, img: make([]byte, 4096)}.bytes(f)
	f.Add(good)
	f.Add(good[:700])
	pol := fwbundle.Policy{Keys: []minisign.PublicKey{key.Public()}, Board: board, MaxBytes: 1 << 20, SpoolDir: f.TempDir()}
	f.Fuzz(func(t *testing.T, b []byte) {
		if bu, err := fwbundle.Open(bytes.NewReader(b), pol); err == nil {
			bu.Close()
		}
	})
}

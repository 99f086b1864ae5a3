package minisign_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/internal/minisign"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func devKeys(t *testing.T) (minisign.SecretKey, minisign.PublicKey, string, string) {
	t.Helper()
	skPath, _ := filepath.Abs("../../images/keys/dev.key")
	pkPath, _ := filepath.Abs("../../images/keys/dev.pub")
	skb, err := os.ReadFile(skPath)
	if err != nil {
		t.Fatal(err)
	}
	pkb, err := os.ReadFile(pkPath)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := minisign.ParseSecretKey(skb)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := minisign.ParsePublicKey(pkb)
	if err != nil {
		t.Fatal(err)
	}
	if sk.ID != pk.ID || !bytes.Equal(sk.Public().Key, pk.Key) {
		t.Fatalf("dev.key and dev.pub are not a pair: %s %s", sk.ID, pk.ID)
	}
	if !strings.Contains(string(pkb), pk.ID.String()) {
		t.Fatalf("key id %s not in the comment minisign wrote: %s", pk.ID, pkb)
	}
	return sk, pk, skPath, pkPath
}

// minisign signs (prehashed by default, and the legacy pure form with -l); Go verifies.
func TestVerifyMinisignTool(t *testing.T) {
	bin := testpeer.Require(t, "minisign", "minisign")
	_, pk, skPath, _ := devKeys(t)
	dir := t.TempDir()
	msg := filepath.Join(dir, "msg")
	body := []byte("manifest bytes\n")
	os.WriteFile(msg, body, 0o644)
	for _, legacy := range []bool{false, true} {
		args := []string{"-S", "-s", skPath, "-m", msg, "-t", "rackwatch test"}
		if legacy {
			args = append(args, "-l")
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("minisign %v: %v\n%s", args, err, out)
		}
		sb, _ := os.ReadFile(msg + ".minisig")
		sig, err := minisign.ParseSignature(sb)
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{false: "ED", true: "Ed"}[legacy]
		if sig.Algorithm != want || sig.TrustedComment != "rackwatch test" {
			t.Fatalf("legacy=%v: algorithm %q comment %q", legacy, sig.Algorithm, sig.TrustedComment)
		}
		if _, err := minisign.Verify([]minisign.PublicKey{pk}, body, sig); err != nil {
			t.Fatalf("legacy=%v: %v", legacy, err)
		}
		if _, err := minisign.Verify([]minisign.PublicKey{pk}, append(body, 'x'), sig); err == nil {
			t.Fatalf("legacy=%v: changed message verified", legacy)
		}
		bad := sig
		bad.TrustedComment += " (edited)"
		if _, err := minisign.Verify([]minisign.PublicKey{pk}, body, bad); err == nil {
			t.Fatalf("legacy=%v: edited trusted comment verified", legacy)
		}
		if !bytes.Equal(sig.Encode(), sb) {
			t.Fatalf("re-encoding differs:\n%s\n%s", sig.Encode(), sb)
		}
	}
}

// Go signs; minisign -V verifies, with the dev key and with a key Go generated.
func TestSignVerifiedByMinisignTool(t *testing.T) {
	bin := testpeer.Require(t, "minisign", "minisign")
	sk, _, _, pkPath := devKeys(t)
	gen, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	genPub := filepath.Join(dir, "gen.pub")
	os.WriteFile(genPub, gen.Public().Encode(), 0o644)
	// minisign reads the secret key Go wrote, and signs with it.
	genSec := filepath.Join(dir, "gen.key")
	os.WriteFile(genSec, gen.Encode(), 0o600)
	msg := filepath.Join(dir, "msg")
	body := []byte("{\"format\":1}\n")
	os.WriteFile(msg, body, 0o644)
	for _, c := range []struct {
		sk  minisign.SecretKey
		pub string
	}{{sk, pkPath}, {gen, genPub}} {
		sig, err := minisign.Sign(c.sk, body, "signature from rackwatch", "file:msg")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(msg+".minisig", sig.Encode(), 0o644)
		if out, err := exec.Command(bin, "-V", "-p", c.pub, "-m", msg).CombinedOutput(); err != nil {
			t.Fatalf("minisign -V refused a Go signature: %v\n%s", err, out)
		} else if !strings.Contains(string(out), "file:msg") {
			t.Fatalf("minisign -V output lacks the trusted comment: %s", out)
		}
		os.WriteFile(msg, append(body, 'x'), 0o644)
		if err := exec.Command(bin, "-V", "-p", c.pub, "-m", msg).Run(); err == nil {
			t.Fatal("minisign -V accepted a changed file")
		}
		os.WriteFile(msg, body, 0o644)
	}
	if out, err := exec.Command(bin, "-S", "-s", genSec, "-m", msg).CombinedOutput(); err != nil {
		t.Fatalf("minisign cannot sign with a key Go wrote: %v\n%s", err, out)
	}
	sb, _ := os.ReadFile(msg + ".minisig")
	sig, err := minisign.ParseSignature(sb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := minisign.Verify([]minisign.PublicKey{gen.Public()}, body, sig); err != nil {
		t.Fatal(err)
	}
	// Another trusted key does not verify it: the id must match.
	if _, err := minisign.Verify([]minisign.PublicKey{sk.Public()}, body, sig); err == nil {
		t.Fatal("verified with the wrong key")
	}
}

func TestEncryptedKeyRefused(t *testing.T) {
	bin := testpeer.Require(t, "minisign", "minisign")
	dir := t.TempDir()
	cmd := exec.Command(bin, "-G", "-p", filepath.Join(dir, "p"), "-s", filepath.Join(dir, "s"))
	cmd.Stdin = strings.NewReader("pw\npw\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "s"))
	if _, err := minisign.ParseSecretKey(b); !errors.Is(err, minisign.ErrEncrypted) {
		t.Fatalf("err = %v, want ErrEncrypted", err)
	}
}

func TestParseErrors(t *testing.T) {
	_, pk, _, _ := devKeys(t)
	good := string(pk.Encode())
	for _, c := range []string{"", "untrusted comment: x\n", "untrusted comment: x\nnot base64!\n",
		"untrusted comment: x\nRWQ=\n", strings.Replace(good, "RW", "RX", 1), strings.Repeat("a", 9000)} {
		if _, err := minisign.ParsePublicKey([]byte(c)); err == nil {
			t.Errorf("public key %q accepted", c)
		}
		if _, err := minisign.ParseSignature([]byte(c)); err == nil {
			t.Errorf("signature %q accepted", c)
		}
		if _, err := minisign.ParseSecretKey([]byte(c)); err == nil {
			t.Errorf("secret key %q accepted", c)
		}
	}
	if _, err := minisign.Verify(nil, nil, minisign.Signature{Algorithm: "ED"}); err == nil {
		t.Error("verified with no keys")
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../images/keys/dev.pub", "../../images/keys/dev.key", "testdata/msg.minisig"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, err := minisign.ParsePublicKey(b); err == nil {
			if k2, err := minisign.ParsePublicKey(k.Encode()); err != nil || k2.ID != k.ID {
				t.Fatalf("public key does not round-trip: %v", err)
			}
		}
		if s, err := minisign.ParseSignature(b); err == nil {
			if _, err := minisign.ParseSignature(s.Encode()); err != nil {
				t.Fatalf("signature does not round-trip: %v", err)
			}
			minisign.Verify(nil, b, s)
		}
		if k, err := minisign.ParseSecretKey(b); err == nil {
			if _, err := minisign.ParseSecretKey(k.Encode()); err != nil {
				t.Fatalf("secret key does not round-trip: %v", err)
			}
		}
	})
}

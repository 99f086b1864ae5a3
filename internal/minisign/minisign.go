// Package minisign reads and writes the key and signature files of minisign
// (https://jedisct1.github.io/minisign/), so that firmware bundles can be signed with the
// minisign tool on an offline machine and verified by the daemon with crypto/ed25519 alone.
//
// Every file is two or four text lines; each binary line is standard base64.
//
//	public key:  "untrusted comment: ..." / base64("Ed" | key id (8) | Ed25519 public key (32))
//	secret key:  "untrusted comment: ..." / base64("Ed" | kdf ("Sc", or two zero bytes when
//	             not encrypted) | "B2" | kdf salt (32) | opslimit (8) | memlimit (8) |
//	             key id (8) | Ed25519 private key (64) | BLAKE2b-256 checksum (32))
//	signature:   "untrusted comment: ..." / base64(alg (2) | key id (8) | signature (64)) /
//	             "trusted comment: TEXT" / base64(global signature (64))
//
// The signature algorithm "Ed" signs the message itself; "ED" (minisign's default) signs the
// BLAKE2b-512 hash of the message. The global signature signs the 64 signature bytes followed
// by TEXT, so the trusted comment cannot be changed without the key. The key id is stored
// little-endian and printed by minisign as 16 upper-case hex digits.
//
// Encrypted secret keys (scrypt) are refused: the bundle builder reads only keys made with
// `minisign -G -W`; a site that encrypts its key signs with the minisign tool instead.
// The package depends only on the standard library and golang.org/x/crypto/blake2b.
package minisign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/blake2b"
)

// KeyID names a key pair; signatures carry the id of the key that made them.
type KeyID [8]byte

// String is the id as minisign prints it.
func (id KeyID) String() string {
	return fmt.Sprintf("%016X", binary.LittleEndian.Uint64(id[:]))
}

// PublicKey is a minisign public key.
type PublicKey struct {
	ID  KeyID
	Key ed25519.PublicKey
}

// SecretKey is an unencrypted minisign secret key.
type SecretKey struct {
	ID  KeyID
	Key ed25519.PrivateKey
}

// Public returns the public half.
func (k SecretKey) Public() PublicKey {
	return PublicKey{ID: k.ID, Key: k.Key.Public().(ed25519.PublicKey)}
}

// Signature is a parsed signature file.
type Signature struct {
	Algorithm        string // "Ed" (message signed as is) or "ED" (BLAKE2b-512 prehashed)
	ID               KeyID
	Sig              [ed25519.SignatureSize]byte
	UntrustedComment string
	TrustedComment   string
	GlobalSig        [ed25519.SignatureSize]byte
}

const (
	commentPrefix = "untrusted comment: "
	trustedPrefix = "trusted comment: "
	// maxFile bounds what the parsers accept: real files are a few hundred bytes; a
	// comment longer than this is not from minisign.
	maxFile = 8192
)

// ErrEncrypted is returned for a secret key protected by a password.
var ErrEncrypted = errors.New("minisign: the secret key is encrypted (made without -W); sign with the minisign tool or make an unencrypted key with `minisign -G -W`")

// lines splits a file into its non-empty lines, tolerating CRLF and a missing final newline.
func lines(b []byte, what string) ([]string, error) {
	if len(b) > maxFile {
		return nil, fmt.Errorf("minisign: %s longer than %d bytes", what, maxFile)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimRight(l, "\r")
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

func decodeLine(l string, want int, what string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(l))
	if err != nil {
		return nil, fmt.Errorf("minisign: %s: bad base64: %w", what, err)
	}
	if len(raw) != want {
		return nil, fmt.Errorf("minisign: %s: %d bytes, want %d", what, len(raw), want)
	}
	return raw, nil
}

// ParsePublicKey reads a public key file, or just its base64 line (as `minisign -P` takes it).
func ParsePublicKey(b []byte) (PublicKey, error) {
	ls, err := lines(b, "public key")
	if err != nil {
		return PublicKey{}, err
	}
	switch {
	case len(ls) == 2 && strings.HasPrefix(ls[0], commentPrefix):
		ls = ls[1:]
	case len(ls) == 1:
	default:
		return PublicKey{}, errors.New("minisign: public key: want an untrusted comment line and a key line")
	}
	raw, err := decodeLine(ls[0], 2+8+ed25519.PublicKeySize, "public key")
	if err != nil {
		return PublicKey{}, err
	}
	if string(raw[:2]) != "Ed" {
		return PublicKey{}, fmt.Errorf("minisign: public key: algorithm %q, want \"Ed\"", raw[:2])
	}
	var k PublicKey
	copy(k.ID[:], raw[2:10])
	k.Key = ed25519.PublicKey(bytes.Clone(raw[10:]))
	return k, nil
}

// Encode returns the public key file.
func (k PublicKey) Encode() []byte {
	raw := append(append([]byte("Ed"), k.ID[:]...), k.Key...)
	return []byte(commentPrefix + "minisign public key " + k.ID.String() + "\n" + base64.StdEncoding.EncodeToString(raw) + "\n")
}

const secretLen = 2 + 2 + 2 + 32 + 8 + 8 + 8 + ed25519.PrivateKeySize + 32

// ParseSecretKey reads an unencrypted secret key file (`minisign -G -W`).
func ParseSecretKey(b []byte) (SecretKey, error) {
	ls, err := lines(b, "secret key")
	if err != nil {
		return SecretKey{}, err
	}
	if len(ls) != 2 || !strings.HasPrefix(ls[0], commentPrefix) {
		return SecretKey{}, errors.New("minisign: secret key: want an untrusted comment line and a key line")
	}
	raw, err := decodeLine(ls[1], secretLen, "secret key")
	if err != nil {
		return SecretKey{}, err
	}
	if string(raw[:2]) != "Ed" {
		return SecretKey{}, fmt.Errorf("minisign: secret key: algorithm %q, want \"Ed\"", raw[:2])
	}
	switch kdf := raw[2:4]; {
	case string(kdf) == "Sc":
		return SecretKey{}, ErrEncrypted
	case kdf[0] != 0 || kdf[1] != 0:
		return SecretKey{}, fmt.Errorf("minisign: secret key: unknown key derivation %q", kdf)
	}
	if string(raw[4:6]) != "B2" {
		return SecretKey{}, fmt.Errorf("minisign: secret key: checksum algorithm %q, want \"B2\"", raw[4:6])
	}
	body := raw[54:]
	var k SecretKey
	copy(k.ID[:], body[:8])
	sk := body[8 : 8+ed25519.PrivateKeySize]
	chk := body[8+ed25519.PrivateKeySize:]
	// minisign leaves the checksum of an unencrypted key zero; when it is set, it must match.
	if !allZero(chk) {
		want := secretChecksum(raw[:2], k.ID, sk)
		if subtle.ConstantTimeCompare(chk, want[:]) != 1 {
			return SecretKey{}, errors.New("minisign: secret key: checksum mismatch (damaged key file)")
		}
	}
	k.Key = ed25519.NewKeyFromSeed(sk[:ed25519.SeedSize])
	if !bytes.Equal(k.Key[ed25519.SeedSize:], sk[ed25519.SeedSize:]) {
		return SecretKey{}, errors.New("minisign: secret key: public half does not match the seed (damaged key file)")
	}
	return k, nil
}

func secretChecksum(alg []byte, id KeyID, sk []byte) [32]byte {
	h, _ := blake2b.New256(nil)
	h.Write(alg)
	h.Write(id[:])
	h.Write(sk)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// GenerateKey makes a new key pair from rand (crypto/rand.Reader outside tests).
func GenerateKey(rand io.Reader) (SecretKey, error) {
	var k SecretKey
	if _, err := io.ReadFull(rand, k.ID[:]); err != nil {
		return k, err
	}
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return k, err
	}
	k.Key = priv
	return k, nil
}

// Encode returns an unencrypted secret key file that minisign reads.
func (k SecretKey) Encode() []byte {
	raw := make([]byte, 0, secretLen)
	raw = append(raw, "Ed"...)
	raw = append(raw, 0, 0)
	raw = append(raw, "B2"...)
	raw = append(raw, make([]byte, 32+8+8)...)
	raw = append(raw, k.ID[:]...)
	raw = append(raw, k.Key...)
	chk := secretChecksum([]byte("Ed"), k.ID, k.Key)
	raw = append(raw, chk[:]...)
	return []byte(commentPrefix + "minisign secret key\n" + base64.StdEncoding.EncodeToString(raw) + "\n")
}

// ParseSignature reads a signature file.
func ParseSignature(b []byte) (Signature, error) {
	ls, err := lines(b, "signature")
	if err != nil {
		return Signature{}, err
	}
	if len(ls) != 4 {
		return Signature{}, fmt.Errorf("minisign: signature: %d lines, want 4", len(ls))
	}
	if !strings.HasPrefix(ls[0], commentPrefix) {
		return Signature{}, errors.New("minisign: signature: first line is not an untrusted comment")
	}
	if !strings.HasPrefix(ls[2], trustedPrefix) {
		return Signature{}, errors.New("minisign: signature: third line is not a trusted comment")
	}
	raw, err := decodeLine(ls[1], 2+8+ed25519.SignatureSize, "signature")
	if err != nil {
		return Signature{}, err
	}
	var s Signature
	s.Algorithm = string(raw[:2])
	if s.Algorithm != "Ed" && s.Algorithm != "ED" {
		return Signature{}, fmt.Errorf("minisign: signature: algorithm %q, want \"Ed\" or \"ED\"", s.Algorithm)
	}
	copy(s.ID[:], raw[2:10])
	copy(s.Sig[:], raw[10:])
	g, err := decodeLine(ls[3], ed25519.SignatureSize, "global signature")
	if err != nil {
		return Signature{}, err
	}
	copy(s.GlobalSig[:], g)
	s.UntrustedComment = strings.TrimPrefix(ls[0], commentPrefix)
	s.TrustedComment = strings.TrimPrefix(ls[2], trustedPrefix)
	return s, nil
}

// Encode returns the signature file.
func (s Signature) Encode() []byte {
	raw := append(append([]byte(s.Algorithm), s.ID[:]...), s.Sig[:]...)
	var b strings.Builder
	b.WriteString(commentPrefix + s.UntrustedComment + "\n")
	b.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
	b.WriteString(trustedPrefix + s.TrustedComment + "\n")
	b.WriteString(base64.StdEncoding.EncodeToString(s.GlobalSig[:]) + "\n")
	return []byte(b.String())
}

func prehash(msg []byte) []byte {
	h := blake2b.Sum512(msg)
	return h[:]
}

// Sign signs msg the way minisign does by default (prehashed, "ED").
func Sign(k SecretKey, msg []byte, untrusted, trusted string) (Signature, error) {
	if strings.ContainsAny(untrusted+trusted, "\r\n") {
		return Signature{}, errors.New("minisign: comments must be one line")
	}
	s := Signature{Algorithm: "ED", ID: k.ID, UntrustedComment: untrusted, TrustedComment: trusted}
	copy(s.Sig[:], ed25519.Sign(k.Key, prehash(msg)))
	copy(s.GlobalSig[:], ed25519.Sign(k.Key, append(s.Sig[:], trusted...)))
	return s, nil
}

// Verify checks sig over msg with the key among keys whose id the signature names, including
// the global signature over the trusted comment, and returns that key.
func Verify(keys []PublicKey, msg []byte, sig Signature) (PublicKey, error) {
	var k PublicKey
	found := false
	for _, c := range keys {
		if c.ID == sig.ID {
			k, found = c, true
			break
		}
	}
	if !found {
		return PublicKey{}, fmt.Errorf("minisign: signed by key %s, which is not among the %d trusted keys", sig.ID, len(keys))
	}
	var signed []byte
	switch sig.Algorithm {
	case "Ed":
		signed = msg
	case "ED":
		signed = prehash(msg)
	default:
		return PublicKey{}, fmt.Errorf("minisign: unknown signature algorithm %q", sig.Algorithm)
	}
	if len(k.Key) != ed25519.PublicKeySize || !ed25519.Verify(k.Key, signed, sig.Sig[:]) {
		return PublicKey{}, fmt.Errorf("minisign: signature by key %s does not verify", sig.ID)
	}
	if !ed25519.Verify(k.Key, append(sig.Sig[:], sig.TrustedComment...), sig.GlobalSig[:]) {
		return PublicKey{}, fmt.Errorf("minisign: trusted comment signature by key %s does not verify", sig.ID)
	}
	return k, nil
}

// Package fwbundle writes and reads firmware update bundles (rackwatch-BOARD-VERSION.update).
//
// A bundle is a POSIX tar whose entries come in this order:
//
//  1. manifest.json: {"format":1,"board":…,"version":…,"epoch":N,"parts":[{"name",
//     "size","sha256","raw_size","raw_sha256"}]}; size/sha256 are of the part as stored,
//     raw_size/raw_sha256 of what it decompresses to (what ends up on the slot).
//  2. manifest.json.minisig: a minisign signature (package minisign) of manifest.json.
//  3. the parts, in manifest order; a part whose name ends in ".gz" is gzip.
//
// Only the manifest is signed; the parts are bound to it by their hashes. Open reads a
// bundle from a stream, checks the signature and the manifest before it reads the parts,
// spools the parts to a size-bounded file and checks every size and hash, so that nothing
// of an unverified bundle reaches a slot. The package must not depend on the daemon: the
// bundle builder (images/mkupdate) uses it too.
package fwbundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/internal/minisign"
)

// Format is the manifest format this package writes and reads.
const Format = 1

// Entry names.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.json.minisig"
	SlotPart      = "slot.img.gz"
)

// Bounds on the signed header entries: real ones are a few hundred bytes.
const (
	maxManifest  = 64 << 10
	maxSignature = 8 << 10
	maxParts     = 8
)

// Part describes one part of the bundle.
type Part struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	RawSize   int64  `json:"raw_size"`
	RawSHA256 string `json:"raw_sha256"`
}

// Manifest is manifest.json.
type Manifest struct {
	Format  int    `json:"format"`
	Board   string `json:"board"`
	Version string `json:"version"`
	Epoch   int64  `json:"epoch"`
	Parts   []Part `json:"parts"`
}

// Part returns the part named name.
func (m Manifest) Part(name string) (Part, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return Part{}, false
}

func (m Manifest) check() error {
	if m.Format != Format {
		return fmt.Errorf("manifest format %d, this daemon reads %d", m.Format, Format)
	}
	if m.Board == "" || m.Version == "" {
		return errors.New("manifest lacks board or version")
	}
	if len(m.Parts) == 0 || len(m.Parts) > maxParts {
		return fmt.Errorf("manifest has %d parts, want 1 to %d", len(m.Parts), maxParts)
	}
	seen := map[string]bool{}
	for _, p := range m.Parts {
		if p.Name == "" || strings.ContainsAny(p.Name, "/\\") || p.Name == ManifestName || p.Name == SignatureName || seen[p.Name] {
			return fmt.Errorf("manifest: bad or repeated part name %q", p.Name)
		}
		seen[p.Name] = true
		if p.Size < 0 || p.RawSize < 0 {
			return fmt.Errorf("manifest: part %s: negative size", p.Name)
		}
		for _, h := range []string{p.SHA256, p.RawSHA256} {
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("manifest: part %s: bad sha256 %q", p.Name, h)
			}
		}
	}
	return nil
}

// CompressPart gzips raw into dst (best compression: a bundle is built once and downloaded
// by every board) and returns the part's description.
func CompressPart(name string, raw io.Reader, dst io.Writer) (Part, error) {
	return CompressPartLevel(name, raw, dst, gzip.BestCompression)
}

// CompressPartLevel is CompressPart with a gzip level (tests trade size for time).
func CompressPartLevel(name string, raw io.Reader, dst io.Writer, level int) (Part, error) {
	rawHash, hash := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(dst, hash)}
	zw, err := gzip.NewWriterLevel(cw, level)
	if err != nil {
		return Part{}, err
	}
	n, err := io.Copy(io.MultiWriter(zw, rawHash), raw)
	if err != nil {
		return Part{}, fmt.Errorf("compress %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return Part{}, fmt.Errorf("compress %s: %w", name, err)
	}
	return Part{Name: name, Size: cw.n, SHA256: hex.EncodeToString(hash.Sum(nil)),
		RawSize: n, RawSHA256: hex.EncodeToString(rawHash.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// EncodeManifest is the manifest as it is signed and stored.
func EncodeManifest(m Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// SignManifest signs manifest bytes as minisign -S would (prehashed); the trusted comment
// names the version and board so that `minisign -V` shows what was signed.
func SignManifest(sk minisign.SecretKey, manifest []byte) ([]byte, error) {
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, err
	}
	sig, err := minisign.Sign(sk, manifest, "signature from minisign secret key",
		fmt.Sprintf("timestamp:%d\tfile:%s\tversion:%s\tboard:%s", m.Epoch, ManifestName, m.Version, m.Board))
	if err != nil {
		return nil, err
	}
	return sig.Encode(), nil
}

// Write writes a bundle: the manifest, its signature, then each part's bytes read from
// bodies (in manifest order). Entry times are the manifest's epoch, so that the same
// inputs give the same bytes.
func Write(w io.Writer, manifest, signature []byte, bodies []io.Reader) error {
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if len(bodies) != len(m.Parts) {
		return fmt.Errorf("%d bodies for %d parts", len(bodies), len(m.Parts))
	}
	tw := tar.NewWriter(w)
	mt := time.Unix(m.Epoch, 0).UTC()
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: mt, Format: tar.FormatPAX, Typeflag: tar.TypeReg}
	}
	for _, e := range []struct {
		name string
		b    []byte
	}{{ManifestName, manifest}, {SignatureName, signature}} {
		if err := tw.WriteHeader(hdr(e.name, int64(len(e.b)))); err != nil {
			return err
		}
		if _, err := tw.Write(e.b); err != nil {
			return err
		}
	}
	for i, p := range m.Parts {
		if err := tw.WriteHeader(hdr(p.Name, p.Size)); err != nil {
			return err
		}
		if n, err := io.Copy(tw, bodies[i]); err != nil {
			return fmt.Errorf("part %s: %w", p.Name, err)
		} else if n != p.Size {
			return fmt.Errorf("part %s: %d bytes, manifest says %d", p.Name, n, p.Size)
		}
	}
	return tw.Close()
}

// Policy is what a bundle must satisfy to be accepted.
type Policy struct {
	Keys     []minisign.PublicKey // trusted keys (images/keys/*.pub as built in)
	Board    string               // the running board
	MinEpoch int64                // the running firmware's epoch: older bundles are refused
	MaxBytes int64                // bound on the spooled parts together
	SpoolDir string               // where the parts are spooled (a tmpfs on the board)
}

// Bundle is an opened, fully verified bundle; its parts are in a spool file until Close.
type Bundle struct {
	Manifest Manifest
	KeyID    minisign.KeyID
	spool    *os.File
	offsets  map[string]int64
}

// ErrRefused wraps every reason a bundle is not accepted (as opposed to I/O failures of
// the spool): the HTTP API answers 400/422 for it.
var ErrRefused = errors.New("bundle refused")

func refused(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// Open reads a bundle from r, checks it against pol and returns it. Nothing is returned
// (and the spool is removed) unless the signature, the board, the epoch and every part's
// size and both hashes are right.
func Open(r io.Reader, pol Policy) (*Bundle, error) {
	tr := tar.NewReader(r)
	manifest, err := readEntry(tr, ManifestName, maxManifest)
	if err != nil {
		return nil, err
	}
	sigText, err := readEntry(tr, SignatureName, maxSignature)
	if err != nil {
		return nil, err
	}
	sig, err := minisign.ParseSignature(sigText)
	if err != nil {
		return nil, refused("%v", err)
	}
	key, err := minisign.Verify(pol.Keys, manifest, sig)
	if err != nil {
		return nil, refused("%v", err)
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, refused("manifest: %v", err)
	}
	if err := m.check(); err != nil {
		return nil, refused("%v", err)
	}
	if m.Board != pol.Board {
		return nil, refused("bundle is for board %q, this is %q", m.Board, pol.Board)
	}
	if m.Epoch < pol.MinEpoch {
		return nil, refused("bundle %s (epoch %d) is older than the running firmware (epoch %d)", m.Version, m.Epoch, pol.MinEpoch)
	}
	var total int64
	for _, p := range m.Parts {
		total += p.Size
		if p.Size > pol.MaxBytes || total > pol.MaxBytes {
			return nil, refused("parts total more than the limit of %d bytes", pol.MaxBytes)
		}
	}
	f, err := os.CreateTemp(pol.SpoolDir, "update-*.spool")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The spool is unlinked at once: it lives as long as the open file, even if the
	// daemon dies mid-update.
	os.Remove(f.Name())
	b := &Bundle{Manifest: m, KeyID: key.ID, spool: f, offsets: map[string]int64{}}
	if err := b.spoolParts(tr); err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

func readEntry(tr *tar.Reader, name string, max int64) ([]byte, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, refused("reading %s: %v", name, truncated(err))
	}
	if h.Name != name || h.Typeflag != tar.TypeReg {
		return nil, refused("entry %q where %s belongs", h.Name, name)
	}
	if h.Size > max {
		return nil, refused("%s is %d bytes, more than %d", name, h.Size, max)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, refused("reading %s: %v", name, truncated(err))
	}
	return b, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("bundle truncated")
	}
	return err
}

func (b *Bundle) spoolParts(tr *tar.Reader) error {
	var off int64
	for _, p := range b.Manifest.Parts {
		h, err := tr.Next()
		if err != nil {
			return refused("reading part %s: %v", p.Name, truncated(err))
		}
		if h.Name != p.Name || h.Typeflag != tar.TypeReg {
			return refused("entry %q where part %s belongs", h.Name, p.Name)
		}
		if h.Size != p.Size {
			return refused("part %s: %d bytes, manifest says %d", p.Name, h.Size, p.Size)
		}
		hash := sha256.New()
		n, err := io.Copy(io.MultiWriter(b.spool, hash), io.LimitReader(tr, p.Size))
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return refused("part %s: bundle truncated", p.Name)
			}
			return fmt.Errorf("spool part %s: %w", p.Name, err)
		}
		if n != p.Size {
			return refused("part %s: bundle truncated", p.Name)
		}
		if got := hex.EncodeToString(hash.Sum(nil)); got != p.SHA256 {
			return refused("part %s: sha256 %s, manifest says %s", p.Name, got, p.SHA256)
		}
		b.offsets[p.Name] = off
		off += n
		if err := b.checkRaw(p); err != nil {
			return err
		}
	}
	if h, err := tr.Next(); err != io.EOF {
		if err != nil {
			return refused("after the parts: %v", truncated(err))
		}
		return refused("unexpected entry %q after the parts", h.Name)
	}
	return nil
}

func (b *Bundle) checkRaw(p Part) error {
	rc, err := b.Raw(p.Name)
	if err != nil {
		return refused("part %s: %v", p.Name, err)
	}
	defer rc.Close()
	hash := sha256.New()
	n, err := io.Copy(hash, io.LimitReader(rc, p.RawSize+1))
	if err != nil {
		return refused("part %s: decompress: %v", p.Name, err)
	}
	if n != p.RawSize {
		return refused("part %s: %d bytes decompressed, manifest says %d", p.Name, n, p.RawSize)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != p.RawSHA256 {
		return refused("part %s: decompressed sha256 %s, manifest says %s", p.Name, got, p.RawSHA256)
	}
	return nil
}

// Raw returns a reader of the part's raw (decompressed) bytes from the spool.
func (b *Bundle) Raw(name string) (io.ReadCloser, error) {
	p, ok := b.Manifest.Part(name)
	if !ok {
		return nil, fmt.Errorf("no part %s", name)
	}
	off, ok := b.offsets[name]
	if !ok {
		return nil, fmt.Errorf("part %s not spooled", name)
	}
	sr := io.NewSectionReader(b.spool, off, p.Size)
	if !strings.HasSuffix(name, ".gz") {
		return io.NopCloser(sr), nil
	}
	zr, err := gzip.NewReader(sr)
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return zr, nil
}

// Close removes the spool.
func (b *Bundle) Close() error { return b.spool.Close() }

// ReadManifest returns the manifest and signature of a bundle file without verifying them
// (for tools that re-sign a bundle, and for tests).
func ReadManifest(r io.Reader) (manifest, signature []byte, err error) {
	tr := tar.NewReader(r)
	if manifest, err = readEntry(tr, ManifestName, maxManifest); err != nil {
		return nil, nil, err
	}
	if signature, err = readEntry(tr, SignatureName, maxSignature); err != nil {
		return nil, nil, err
	}
	return bytes.Clone(manifest), signature, nil
}

// Resign copies the bundle read from r to w with signature in place of its signature entry
// (a manifest signed on an offline machine with the minisign tool). The signature is not
// checked here: Open does that where it matters.
func Resign(w io.Writer, r io.Reader, signature []byte) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return truncated(err)
		}
		var body io.Reader = tr
		if i == 1 {
			if h.Name != SignatureName {
				return fmt.Errorf("entry %q where %s belongs", h.Name, SignatureName)
			}
			h.Size = int64(len(signature))
			body = bytes.NewReader(signature)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, body); err != nil {
			return err
		}
	}
	return tw.Close()
}

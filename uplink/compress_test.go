package uplink

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"testing"
)

func TestPackRoundTrip(t *testing.T) {
	rs := make([]Reading, 50)
	for i := range rs {
		rs[i] = Reading{Device: "inlet-a", Metric: "temperature", Value: 21.5 + float64(i)/10, Unit: "°C", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}
	}
	big, _ := json.Marshal(struct {
		Seq      int       `json:"seq"`
		Readings []Reading `json:"readings"`
	}{7, rs})
	for name, p := range map[string][]byte{"empty": {}, "tiny": []byte("{}"), "telemetry": big, "binary": {0xff, 0x00, 0x01}} {
		v := pack(p)
		got, err := unpack(v)
		if err != nil || !bytes.Equal(got, p) {
			t.Errorf("%s: round trip gave %q, %v", name, got, err)
		}
		if len(v) > len(p)+1 {
			t.Errorf("%s: packed %d bytes into %d", name, len(p), len(v))
		}
	}
	if v := pack(big); len(v) > len(big)/4 {
		t.Errorf("50 readings: %d JSON bytes packed only to %d", len(big), len(v))
	}
	// Values earlier versions wrote: deflate with dictV1 (this one is 50 readings), and, in
	// the first cut, JSON as is.
	var b bytes.Buffer
	b.WriteByte(storedDeflate)
	w, _ := flate.NewWriterDict(&b, flate.BestSpeed, dictV1)
	w.Write(big)
	w.Close()
	if got, err := unpack(b.Bytes()); err != nil || !bytes.Equal(got, big) {
		t.Errorf("deflate value: %.60q, %v", got, err)
	}
	if v := pack(big); v[0] != storedZstd || len(v) >= b.Len() {
		t.Errorf("zstd packs 50 readings into %d bytes (marker %#x), deflate into %d", len(v), v[0], b.Len())
	}
	// The first cut stored JSON as is.
	if got, err := unpack([]byte(`{"seq":1}`)); err != nil || string(got) != `{"seq":1}` {
		t.Errorf("legacy value: %q, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0x7f}, {storedDeflate, 0xff, 0xff}, {storedZstd, 0x28, 0xb5, 0x2f, 0xfd, 0xff}} {
		if _, err := unpack(bad); err == nil {
			t.Errorf("unpack(%x) accepted", bad)
		}
	}
}

// FuzzUnpack: whatever sits in the queue file, unpack returns an error or bytes, never panics.
func FuzzUnpack(f *testing.F) {
	f.Add(pack([]byte(`{"seq":1,"readings":[]}`)))
	f.Add([]byte{storedRaw, '{'})
	f.Add([]byte{storedDeflate, 0x01, 0x00})
	f.Add([]byte{storedZstd, 0x28, 0xb5, 0x2f, 0xfd, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		unpack(v)
	})
}

package uplink

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
)

// Queued payloads are stored deflated: telemetry JSON repeats the same keys for every reading
// and shrinks several times, which means fewer flash pages written per reading and a longer
// backlog in queue_max_bytes. The first byte says how a value is stored.
const (
	storedRaw     = 0x00
	storedDeflate = 0x01 // raw deflate with dictV1 as the preset dictionary
)

// dictV1 primes the compressor with what every payload contains. It is part of the on-disk
// format: never change it; add a dictV2 and a new marker instead.
var dictV1 = []byte(`{"seq":,"ts":"2026-01-01T00:00:00.000Z","readings":[{"device":"","metric":"","value":,"unit":"","quality":"good","ts":"},` +
	`{"device":"","metric":"temperature","value":,"unit":"°C","quality":"good","ts":"},{"device":"","metric":"ups.status","value":"OL","unit":"","quality":"stale","ts":"},` +
	`{"seq":,"id":"","event":"opened","severity":"critical","rule":"","device":"","metric":"","value":,"threshold":,"opened_at":"","ts":""}`)

var deflaters = sync.Pool{New: func() any {
	w, err := flate.NewWriterDict(io.Discard, flate.BestSpeed, dictV1)
	if err != nil {
		panic(err) // only for a bad level, which is a constant here
	}
	return w
}}

// inflaters keeps flate readers (about 40 KB each) for reuse across a backlog drain.
var inflaters sync.Pool

// pack turns a payload into its stored form.
func pack(payload []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(payload)/3 + 16)
	b.WriteByte(storedDeflate)
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&b)
	w.Write(payload) // a bytes.Buffer does not fail
	w.Close()
	deflaters.Put(w)
	if b.Len() >= len(payload)+1 {
		return append([]byte{storedRaw}, payload...)
	}
	return b.Bytes()
}

// unpack returns the payload of a stored value.
func unpack(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, fmt.Errorf("empty stored message")
	}
	switch v[0] {
	case storedRaw:
		return append([]byte(nil), v[1:]...), nil
	case storedDeflate:
		r, _ := inflaters.Get().(io.ReadCloser)
		if r == nil {
			r = flate.NewReaderDict(bytes.NewReader(v[1:]), dictV1)
		} else if err := r.(flate.Resetter).Reset(bytes.NewReader(v[1:]), dictV1); err != nil {
			return nil, fmt.Errorf("inflate stored message: %w", err)
		}
		defer inflaters.Put(r)
		out, err := io.ReadAll(io.LimitReader(r, 64<<20))
		if err != nil {
			return nil, fmt.Errorf("inflate stored message: %w", err)
		}
		return out, nil
	case '{':
		// Written by the first cut of this package, before payloads were packed.
		return append([]byte(nil), v...), nil
	}
	return nil, fmt.Errorf("stored message with unknown format %#x", v[0])
}

package uplink

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// Queued payloads are stored compressed: telemetry JSON repeats the same keys for every
// reading and shrinks several times, which means fewer flash pages written per reading and a
// longer backlog in queue_max_bytes. The first byte says how a value is stored.
//
// New values are zstd (fastest level, dictV1 as a raw dictionary): the backlog drain decodes
// every message on a 2-core board that also runs the broker connection, and zstd decodes
// telemetry faster than deflate and packs it smaller (the round-trip test holds it to the
// smaller size). Values stored as deflate are still read, so a queue written by an older
// firmware drains after an update.
const (
	storedRaw     = 0x00
	storedDeflate = 0x01 // raw deflate with dictV1 as the preset dictionary (read only)
	storedZstd    = 0x02 // a zstd frame, dictV1 as raw dictionary 1
)

// dictV1 primes the compressor with what every payload contains. It is part of the on-disk
// format: never change it; add a dictV2 and a new marker instead.
var dictV1 = []byte(`{"seq":,"ts":"2026-01-01T00:00:00.000Z","readings":[{"device":"","metric":"","value":,"unit":"","quality":"good","ts":"},` +
	`{"device":"","metric":"temperature","value":,"unit":"°C","quality":"good","ts":"},{"device":"","metric":"ups.status","value":"OL","unit":"","quality":"stale","ts":"},` +
	`{"seq":,"id":"","event":"opened","severity":"critical","rule":"","device":"","metric":"","value":,"threshold":,"opened_at":"","ts":""}`)

// encoders holds zstd encoders between uses. One costs about 1 MB (its tables and window,
// made again for every encoder), and a site whose broker is connected packs nothing: held
// telemetry stays raw until it must be committed (hold.go), so the encoder is needed only
// while messages go to the queue (an outage, an incident). The pool keeps one across an
// outage's flushes and lets the collector take it back after a quiet while.
var encoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(1, dictV1), zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true),
		zstd.WithWindowSize(encoderWindow), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(err) // only for bad options, which are constants here
	}
	return enc
}}

// packs counts pack's calls, for tests.
var packs atomic.Int64

// zstdDec is safe for concurrent use; made on first use.
var (
	zstdOnce sync.Once
	zstdDec  *zstd.Decoder
)

// encoderWindow bounds the encoder's history (zstd's default at this level keeps 8 MB, a
// sixth of the board's budget for a 1,000-sensor site). A telemetry message of 1,000
// readings is about 120 KB, so 256 KiB still covers the largest payloads.
const encoderWindow = 256 << 10

// maxUnpacked bounds what one stored value may expand to.
const maxUnpacked = 64 << 20

func decoder() *zstd.Decoder {
	zstdOnce.Do(func() {
		var err error
		zstdDec, err = zstd.NewReader(nil, zstd.WithDecoderDictRaw(1, dictV1), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(maxUnpacked))
		if err != nil {
			panic(err)
		}
	})
	return zstdDec
}

// inflaters keeps flate readers (about 40 KB each) for reuse across a backlog drain.
var inflaters sync.Pool

// pack turns a payload into its stored form.
func pack(payload []byte) []byte {
	packs.Add(1)
	enc := encoders.Get().(*zstd.Encoder)
	v := enc.EncodeAll(payload, append(make([]byte, 0, len(payload)/3+32), storedZstd))
	encoders.Put(enc)
	if len(v) >= len(payload)+1 {
		return append([]byte{storedRaw}, payload...)
	}
	return v
}

// raw is a payload's stored form without packing it: what held telemetry keeps until it is
// committed (prepare packs it then).
func raw(payload []byte) []byte {
	return append([]byte{storedRaw}, payload...)
}

// unpack returns the payload of a stored value.
func unpack(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, fmt.Errorf("empty stored message")
	}
	switch v[0] {
	case storedRaw:
		return append([]byte(nil), v[1:]...), nil
	case storedZstd:
		out, err := decoder().DecodeAll(v[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("decode stored message: %w", err)
		}
		return out, nil
	case storedDeflate:
		r, _ := inflaters.Get().(io.ReadCloser)
		if r == nil {
			r = flate.NewReaderDict(bytes.NewReader(v[1:]), dictV1)
		} else if err := r.(flate.Resetter).Reset(bytes.NewReader(v[1:]), dictV1); err != nil {
			return nil, fmt.Errorf("inflate stored message: %w", err)
		}
		defer inflaters.Put(r)
		out, err := io.ReadAll(io.LimitReader(r, maxUnpacked))
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

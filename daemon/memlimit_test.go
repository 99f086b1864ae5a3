package main

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

// TestMemoryLimit: the default bounds a small site's heap; a live heap that would leave less
// than minHeadroom under it raises the limit instead of making the collector run back to back.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, overhead uint64
		want           int64
	}{
		{live: 20 * mib, overhead: 12 * mib, want: defaultMemoryLimit},
		{live: 28 * mib, overhead: 12 * mib, want: defaultMemoryLimit},
		{live: 31 * mib, overhead: 13 * mib, want: 52 * mib},
		{live: 200 * mib, overhead: 20 * mib, want: 228 * mib},
	} {
		if got := memoryLimit(tc.live, tc.overhead); got != tc.want {
			t.Errorf("live %d MiB, overhead %d MiB: limit %d MiB, want %d MiB", tc.live/mib, tc.overhead/mib, got/mib, tc.want/mib)
		}
	}
}

// TestDefaultGCPercent: without GOGC the daemon collects at 50 %, with GOGC it leaves Go's
// setting alone.
func TestDefaultGCPercent(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t.Setenv("GOMEMLIMIT", "off")
	t.Setenv("GOGC", "")
	keepMemoryLimit(ctx, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, defaultGCPercent)
	}
	t.Setenv("GOGC", "100")
	keepMemoryLimit(ctx, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100: GC percent %d, want it left at 100", got)
	}
}

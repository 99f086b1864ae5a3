package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Go's collector lets the heap grow to twice the live heap between collections (GOGC=100):
// on a site of 1,000 devices that headroom would be the largest part of the daemon's memory.
// Unless GOMEMLIMIT is set, the daemon sets a soft limit on
// the Go runtime's memory (heap, stacks, runtime structures; not the binary's mapped pages),
// so the collector runs earlier instead of letting the heap double.
//
// A limit near the live heap would make the collector run back to back and burn the CPU, so
// the limit is never less than what the runtime holds now beyond garbage plus minHeadroom: a
// site whose live heap outgrows the default gets a higher limit, not a busy collector.
// defaultGCPercent replaces Go's GOGC=100 unless GOGC is set: a small site's live heap is a few
// MB and Go's minimum heap target (4 MB at GOGC=100, scaled by GOGC) let its heap double before
// the first collection; at 50 the headroom is half the live heap (2 MB at least), for a
// collection a minute or so on a one-UPS site, and a 1,000-device site stays under its limit.
const defaultGCPercent = 50

const (
	defaultMemoryLimit = 48 << 20
	minHeadroom        = 8 << 20
	memoryLimitEvery   = 10 * time.Second
)

var memSamples = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/total:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
}

// memoryLimit is the limit for a live heap and the runtime's other memory (stacks, runtime
// structures, unused parts of heap spans).
func memoryLimit(live, overhead uint64) int64 {
	return max(defaultMemoryLimit, int64(live+overhead)+minHeadroom)
}

// keepMemoryLimit sets the default GC percent (unless GOGC is set) and the default limit, and
// keeps the limit above the live heap until ctx ends; with GOMEMLIMIT set it leaves the limit
// alone (the runtime has read it).
func keepMemoryLimit(ctx context.Context, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(defaultMemoryLimit)
	t := time.NewTicker(memoryLimitEvery)
	defer t.Stop()
	raised := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(memSamples)
		v := func(i int) uint64 { return memSamples[i].Value.Uint64() }
		live, total, released, free, objects := v(0), v(1), v(2), v(3), v(4)
		overhead := total - released - free - objects
		limit := memoryLimit(live, overhead)
		debug.SetMemoryLimit(limit)
		if limit > defaultMemoryLimit && !raised {
			log.Warn("memory limit raised above the default: set GOMEMLIMIT for a site this size",
				"limit_mib", (limit+1<<20-1)>>20, "live_heap_mib", live>>20, "default_mib", defaultMemoryLimit>>20)
		}
		raised = limit > defaultMemoryLimit
	}
}

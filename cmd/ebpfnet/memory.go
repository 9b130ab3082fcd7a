package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// memoryFloor is the daemon's smallest soft heap limit, unless GOMEMLIMIT
// sets one.
const memoryFloor = 40 << 20

// gcPercent is the daemon's GOGC unless GOGC sets one. Its live heap is a
// few MiB, which at Go's default (100) is collected every few MiB of
// garbage: every DNS query makes some. The memory limit still bounds it.
const gcPercent = 400

// memoryHeadroom is how many times its live heap the daemon may hold
// before the limit makes the collector run: the live heap, as much again
// of garbage, and room for stacks and the runtime's own.
const memoryHeadroom = 3

// memoryFollowEvery is how often the limit follows the live heap; a
// variable for the tests.
var memoryFollowEvery = 5 * time.Second

// limitMemory bounds the daemon's heap softly, so that a burst (decoding
// a large state) does not leave RSS at its peak, and keeps the bound
// above what the daemon needs as its state grows: a fixed one that the
// live heap comes near (thousands of sandboxes) would have the collector
// run all the time, and every change pay for it. It follows the live
// heap until ctx ends.
func limitMemory(ctx context.Context) {
	debug.SetMemoryLimit(memoryFloor)
	go followLiveHeap(ctx)
}

func followLiveHeap(ctx context.Context) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(memoryFollowEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return // a runtime without the metric: keep the floor
		}
		debug.SetMemoryLimit(max(memoryFloor, memoryHeadroom*int64(sample[0].Value.Uint64())))
	}
}

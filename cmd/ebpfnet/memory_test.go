package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// A live heap that outgrows the floor raises the limit with it, so that
// the collector does not run all the time; when it shrinks, the limit
// comes back down to the floor.
func TestMemoryLimitFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	defer func(every time.Duration) { memoryFollowEvery = every }(memoryFollowEvery)
	memoryFollowEvery = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limitMemory(ctx)
	if got := debug.SetMemoryLimit(-1); got != memoryFloor {
		t.Fatalf("limit at start = %d, want the floor %d", got, memoryFloor)
	}
	live := make([]byte, 2*memoryFloor)
	for i := range live {
		live[i] = byte(i)
	}
	limitReaches(t, func(limit int64) bool { return limit >= memoryHeadroom*int64(len(live)) })
	runtime.KeepAlive(live)
	live = nil
	limitReaches(t, func(limit int64) bool { return limit == memoryFloor })
}

// limitReaches waits for the memory limit to satisfy ok, collecting so
// that the live heap is measured.
func limitReaches(t *testing.T, ok func(int64) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		runtime.GC()
		if ok(debug.SetMemoryLimit(-1)) {
			return
		}
	}
	t.Fatalf("memory limit stuck at %d MiB", debug.SetMemoryLimit(-1)>>20)
}

package engine

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// reclaimInterval is how often the daemon returns the memory of expired
// conntrack entries. The datapath treats them as gone from the moment they
// expire, so this bounds memory, not correctness.
const reclaimInterval = 10 * time.Second

// Default NAT port range: above the kernel's default ephemeral range.
const (
	defaultNATPortMin = 61000
	defaultNATPortMax = 65535
)

// natPorts decides the masquerade port range. Translated tuples must never
// be a host connection's, so the range stays clear of the host's ephemeral
// ports: a range asked for that overlaps them is refused, and the default
// moves below them when they cover it. lo and hi are the host's
// ephemeral range.
func natPorts(min, max uint16, lo, hi int) (uint16, uint16, error) {
	overlaps := func(a, b uint16) bool { return int(a) <= hi && int(b) >= lo }
	if min != 0 {
		if overlaps(min, max) {
			return 0, 0, fmt.Errorf("NAT port range %d-%d overlaps the host's ephemeral ports %d-%d (net.ipv4.ip_local_port_range): translated flows could collide with host connections", min, max, lo, hi)
		}
		return min, max, nil
	}
	if !overlaps(defaultNATPortMin, defaultNATPortMax) {
		return defaultNATPortMin, defaultNATPortMax, nil
	}
	n := defaultNATPortMax - defaultNATPortMin
	if lo-1-n < 1024 {
		return 0, 0, fmt.Errorf("the host's ephemeral ports %d-%d leave no room for a NAT port range: narrow net.ipv4.ip_local_port_range", lo, hi)
	}
	return uint16(lo - 1 - n), uint16(lo - 1), nil
}

// reclaimConntrack removes expired conntrack entries every
// reclaimInterval until stop is closed.
func (e *Engine) reclaimConntrack(stop <-chan struct{}) {
	t := time.NewTicker(reclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n, err := e.maps.ReclaimExpired(dpmaps.Now())
		if err != nil {
			e.log.Warn("reclaim expired conntrack entries", "err", err)
		} else if n > 0 {
			e.reclaimed.Add(uint64(n))
			e.log.Debug("reclaimed expired conntrack entries", "entries", n)
		}
	}
}

// conntrackFlushes are the flushes of removed endpoints' conntrack entries
// under way. A flush walks both tables, which may take a while when they
// are full, so it runs off the engine's lock; an endpoint given one of the
// addresses meanwhile waits for it (awaitFlush), so that it never finds
// its predecessor's flows, which ct_owner would hand to it.
type conntrackFlushes struct {
	mu      sync.Mutex
	pending map[netip.Addr]chan struct{} // closed when the address is flushed
	running sync.WaitGroup
}

// flushConntrack removes, in the background, the conntrack entries of
// flows that addrs, a removed endpoint's addresses, are an end of.
func (e *Engine) flushConntrack(addrs []netip.Addr) {
	f := &e.flushes
	done := make(chan struct{})
	f.mu.Lock()
	if f.pending == nil {
		f.pending = map[netip.Addr]chan struct{}{}
	}
	for _, a := range addrs {
		f.pending[a] = done
	}
	f.running.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.running.Done()
		n, err := e.maps.FlushConntrack(addrs)
		if err != nil {
			e.log.Warn("flush the conntrack entries of a removed endpoint", "addrs", addrs, "err", err)
		} else if n > 0 {
			e.log.Debug("flushed the conntrack entries of a removed endpoint", "addrs", addrs, "entries", n)
		}
		f.mu.Lock()
		for _, a := range addrs {
			if f.pending[a] == done {
				delete(f.pending, a)
			}
		}
		f.mu.Unlock()
		close(done)
	}()
}

// awaitFlush waits until no flush of any of addrs is under way.
func (e *Engine) awaitFlush(addrs []netip.Addr) {
	for _, a := range addrs {
		e.flushes.mu.Lock()
		done := e.flushes.pending[a]
		e.flushes.mu.Unlock()
		if done != nil {
			<-done
		}
	}
}

package wiring

import (
	"net/netip"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/maps"
)

// reclaimInterval is how often the daemon returns the memory of expired
// conntrack entries. The datapath treats them as gone from the moment they
// expire, so this bounds memory, not correctness.
const reclaimInterval = 10 * time.Second

// ReclaimConntrack removes expired conntrack entries, and the addresses
// of lapsed egress answers, every reclaimInterval until stop is closed.
func (w *Wiring) ReclaimConntrack(stop <-chan struct{}) {
	t := time.NewTicker(reclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		w.reclaimEgress(maps.Now())
		n, err := w.cfg.Maps.ReclaimExpired(maps.Now())
		if err != nil {
			w.cfg.Log.Warn("reclaim expired conntrack entries", "err", err)
		} else if n > 0 {
			w.reclaimed.Add(uint64(n))
			w.cfg.Log.Debug("reclaimed expired conntrack entries", "entries", n)
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
func (w *Wiring) flushConntrack(addrs []netip.Addr) {
	f := &w.flushes
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
		n, err := w.cfg.Maps.FlushConntrack(addrs)
		if err != nil {
			w.cfg.Log.Warn("flush the conntrack entries of a removed endpoint", "addrs", addrs, "err", err)
		} else if n > 0 {
			w.cfg.Log.Debug("flushed the conntrack entries of a removed endpoint", "addrs", addrs, "entries", n)
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
func (w *Wiring) awaitFlush(addrs []netip.Addr) {
	for _, a := range addrs {
		w.flushes.mu.Lock()
		done := w.flushes.pending[a]
		w.flushes.mu.Unlock()
		if done != nil {
			<-done
		}
	}
}

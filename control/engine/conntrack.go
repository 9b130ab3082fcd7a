package engine

import (
	"fmt"
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

package wiring

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/maps"
)

// egressNames are the names the resolver answered the addresses in
// egress_names for, by source and address, for inspect and the monitor,
// and how many live answers each source holds. The datapath holds the
// addresses and their lapse, and keeps them over a restart of the
// daemon; their names are then unknown until asked again.
type egressNames struct {
	mu    sync.Mutex
	names map[[2]netip.Addr]*egressName
	live  map[netip.Addr]int // answers not yet lapsed, by source
}

type egressName struct {
	EgressAnswer
	counted bool // in live
}

// maxEgressAnswers bounds the answers one source holds at once, so that
// no sandbox, asking for names whose answers it chooses (*.domain of a
// zone of its own), fills egress_names for the others.
const maxEgressAnswers = 4096

// EgressAnswer is an address a source may reach because the resolver
// answered it for Name, until Lapses (CLOCK_BOOTTIME, maps.Now).
type EgressAnswer struct {
	Source, Addr netip.Addr
	Name         string // "" when the daemon restarted since
	Lapses       time.Duration
	Left         time.Duration // of its TTL, as EgressAnswers read it
}

// LearnEgress lets sources reach the addrs of their family that the
// resolver answered for name, for ttl (dns.Learn). A source holding
// maxEgressAnswers live answers gets no new address: an error, which the
// resolver answers with SERVFAIL.
func (w *Wiring) LearnEgress(sources []netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	lapses := maps.Now() + ttl
	n := &w.egressNames
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		n.names, n.live = map[[2]netip.Addr]*egressName{}, map[netip.Addr]int{}
	}
	for _, src := range sources {
		for _, a := range addrs {
			if !src.IsValid() || a.Is4() != src.Is4() {
				continue
			}
			had := n.names[[2]netip.Addr{src, a}]
			if (had == nil || !had.counted) && n.live[src] >= maxEgressAnswers {
				return fmt.Errorf("egress address %s of %s: %d answers live already", a, src, maxEgressAnswers)
			}
			if err := w.cfg.Maps.PutEgressName(maps.EgressName{Source: src, Addr: a, Lapses: lapses}); err != nil {
				return err
			}
			if had == nil {
				had = &egressName{}
				n.names[[2]netip.Addr{src, a}] = had
			}
			if !had.counted {
				had.counted = true
				n.live[src]++
			}
			if had.Lapses < lapses {
				had.EgressAnswer = EgressAnswer{Source: src, Addr: a, Name: name, Lapses: lapses}
			}
		}
	}
	return nil
}

// EgressAnswers are the addresses sources may reach by name now.
func (w *Wiring) EgressAnswers(sources ...netip.Addr) ([]EgressAnswer, error) {
	all, err := w.cfg.Maps.EgressNames()
	if err != nil {
		return nil, err
	}
	now := maps.Now()
	var out []EgressAnswer
	w.egressNames.mu.Lock()
	defer w.egressNames.mu.Unlock()
	for _, e := range all {
		if e.Lapses <= now || !slices.Contains(sources, e.Source) {
			continue
		}
		a := EgressAnswer{Source: e.Source, Addr: e.Addr, Lapses: e.Lapses, Left: e.Lapses - now}
		if known, ok := w.egressNames.names[[2]netip.Addr{e.Source, e.Addr}]; ok {
			a.Name = known.Name
		}
		out = append(out, a)
	}
	return out, nil
}

// EgressName is the name the resolver last answered addr for to source,
// lapsed or not, while the daemon remembers it; "" if none.
func (w *Wiring) EgressName(source, addr netip.Addr) string {
	w.egressNames.mu.Lock()
	defer w.egressNames.mu.Unlock()
	if known, ok := w.egressNames.names[[2]netip.Addr{source, addr}]; ok {
		return known.Name
	}
	return ""
}

// ForgetEgressAnswers removes what sources may reach by the names that
// allowed no longer allows, and by names the daemon no longer knows (a
// restart since): a list changed live holds for answers already given.
func (w *Wiring) ForgetEgressAnswers(sources []netip.Addr, allowed func(name string) bool) error {
	w.egressNames.mu.Lock()
	defer w.egressNames.mu.Unlock()
	_, err := w.cfg.Maps.DeleteEgressNames(func(e maps.EgressName) bool {
		if !slices.Contains(sources, e.Source) {
			return false
		}
		known, ok := w.egressNames.names[[2]netip.Addr{e.Source, e.Addr}]
		if ok && allowed(known.Name) {
			return false
		}
		w.egressNames.forget([2]netip.Addr{e.Source, e.Addr})
		return true
	})
	return err
}

// reclaimEgress removes the addresses whose answers lapsed before now,
// which the datapath already refuses; their names are kept a while after,
// for the monitor to name what a sandbox that did not ask again is
// refused.
func (w *Wiring) reclaimEgress(now time.Duration) {
	if _, err := w.cfg.Maps.ReclaimEgressNames(now); err != nil {
		w.cfg.Log.Warn("reclaim lapsed egress addresses", "err", err)
	}
	n := &w.egressNames
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, a := range n.names {
		switch {
		case a.Lapses+keepLapsedNames <= now:
			n.forget(k)
		case a.Lapses <= now && a.counted:
			a.counted = false
			n.live[a.Source]--
		}
	}
}

// forget drops the answer of key, and its count.
func (n *egressNames) forget(key [2]netip.Addr) {
	if a, ok := n.names[key]; ok && a.counted {
		if n.live[a.Source]--; n.live[a.Source] <= 0 {
			delete(n.live, a.Source)
		}
	}
	delete(n.names, key)
}

// keepLapsedNames is how long a lapsed answer's name is kept.
const keepLapsedNames = 10 * time.Minute

package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// batchSize is how many entries one batch syscall moves: large enough that
// walking a full conntrack table takes a few dozen calls, small enough that
// a hash bucket never outgrows it.
const batchSize = 4096

// Now is the datapath's clock (CLOCK_BOOTTIME), which conntrack lifetimes
// are measured on.
func Now() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// ReclaimExpired removes the conntrack entries whose lifetime ended before
// now and returns how many it removed. The datapath already treats them as
// gone; this returns their memory, which matters for ct: it never evicts.
// The walk of ct also recounts what each source holds there
// (correctSources).
func (m *Maps) ReclaimExpired(now time.Duration) (int, error) {
	before, err := m.ctSources()
	if err != nil {
		return 0, err
	}
	local, err := m.localSubnets()
	if err != nil {
		return 0, err
	}
	held := map[bpf.DatapathAddr]int64{}
	removed, err := m.deleteConntrack(func(table *ebpf.Map, k bpf.DatapathFlow, e bpf.DatapathCtEntry) bool {
		if time.Duration(e.Expires) <= now {
			return true
		}
		if table == m.m.Ct && e.Flags&uint8(bpf.DatapathCtFlagCT_REPLY) == 0 {
			// A flow counts for the source of its originator's entry.
			held[sourceOf(k.Saddr, local)]++
		}
		return false
	})
	if err != nil {
		return removed, err
	}
	return removed, m.correctSources(before, held)
}

// FlushConntrack removes every conntrack entry of a flow that any of
// addrs is an end of, as its packets show it or as translated, and
// returns how many it removed: a removed endpoint's flows, which must not
// pass to the next endpoint given its address (Docker's bridge driver
// flushes netfilter's conntrack likewise). The sources' shares of ct come
// back at the next reclaim (correctSources).
func (m *Maps) FlushConntrack(addrs []netip.Addr) (int, error) {
	held := make(map[bpf.DatapathAddr]bool, len(addrs))
	for _, a := range addrs {
		held[addr16(a)] = true
	}
	return m.deleteConntrack(func(_ *ebpf.Map, k bpf.DatapathFlow, e bpf.DatapathCtEntry) bool {
		return held[k.Saddr] || held[k.Daddr] || held[e.Nat.Saddr] || held[e.Nat.Daddr]
	})
}

// FlushOrphanedConntrack removes every conntrack entry of a flow that an
// address of one of the datapath's networks is an end of, when no
// endpoint has the address and it is no gateway: the flows of endpoints
// whose flush never finished (the daemon stopped or crashed while it
// ran), which ct_owner would hand to the next endpoint given the address.
// It reads what the maps hold, so it runs once they are synced. It needs
// no lock against endpoints added meanwhile: an address is looked up
// again before its flows go, and a flow seen before its endpoint was
// added is the previous holder's.
func (m *Maps) FlushOrphanedConntrack() (int, error) {
	live := map[bpf.DatapathAddr]bool{{}: true}
	endpoints, err := keys[bpf.DatapathAddr](m.m.Endpoints)
	if err != nil {
		return 0, fmt.Errorf("list endpoints: %w", err)
	}
	for _, a := range endpoints {
		live[a] = true
	}
	var (
		index uint32
		n     bpf.DatapathNetworkInfo
	)
	nets := m.m.Networks.Iterate()
	for nets.Next(&index, &n) {
		live[n.Gateway], live[n.Gateway6] = true, true
	}
	if err := nets.Err(); err != nil {
		return 0, fmt.Errorf("list networks: %w", err)
	}
	subnets, err := m.localSubnets()
	if err != nil {
		return 0, err
	}
	var local []netip.Prefix
	for p, foreign := range subnets {
		if !foreign {
			local = append(local, p)
		}
	}
	orphan := func(a bpf.DatapathAddr) bool {
		if live[a] {
			return false
		}
		addr := Addr(a)
		if !slices.ContainsFunc(local, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return false
		}
		var ep bpf.DatapathEndpointInfo
		if m.m.Endpoints.Lookup(a, &ep) == nil {
			live[a] = true // added since the endpoints were listed
			return false
		}
		return true
	}
	return m.deleteConntrack(func(_ *ebpf.Map, k bpf.DatapathFlow, e bpf.DatapathCtEntry) bool {
		return orphan(k.Saddr) || orphan(k.Daddr) || orphan(e.Nat.Saddr) || orphan(e.Nat.Daddr)
	})
}

// localSubnets are the subnets of the host's networks the datapath knows:
// ebpfnet's (false) and other runtimes' (true).
func (m *Maps) localSubnets() (map[netip.Prefix]bool, error) {
	var (
		k     bpf.DatapathSubnetKey
		index uint32
	)
	out := map[netip.Prefix]bool{}
	it := m.m.Subnets.Iterate()
	for it.Next(&k, &index) {
		out[netip.PrefixFrom(Addr(k.Addr), subnetBits(k))] = index == ForeignNetwork
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	return out, nil
}

// sourceOf is the key the datapath counts a's flows under in ct_sources
// (ct_source_of in bpf/lib/conntrack.h): the address, or for an IPv6
// address beyond the host's networks (local) its /64.
func sourceOf(a bpf.DatapathAddr, local map[netip.Prefix]bool) bpf.DatapathAddr {
	addr := Addr(a)
	if addr.Is4() {
		return a
	}
	for p := range local {
		if p.Contains(addr) {
			return a
		}
	}
	return addr16(netip.PrefixFrom(addr, 64).Masked().Addr())
}

// deleteConntrack removes the entries of both conntrack tables that match
// says to (it sees every entry, with its table), and returns how many it
// removed. Its cost is bounded by the tables' sizes: a batch read of each
// and one batch delete per chunk of matching entries.
func (m *Maps) deleteConntrack(match func(*ebpf.Map, bpf.DatapathFlow, bpf.DatapathCtEntry) bool) (int, error) {
	var removed int
	buf := ctBuffers.Get().(*ctBuffer)
	defer ctBuffers.Put(buf)
	for _, table := range []*ebpf.Map{m.m.Ct, m.m.CtNew} {
		var doomed []bpf.DatapathFlow
		err := batchLookup(table, buf.keys, buf.vals, func(n int) {
			for i := range n {
				if match(table, buf.keys[i], buf.vals[i]) {
					doomed = append(doomed, buf.keys[i])
				}
			}
		})
		if err != nil {
			return removed, err
		}
		for len(doomed) > 0 {
			chunk := doomed[:min(len(doomed), batchSize)]
			doomed = doomed[len(chunk):]
			n, err := table.BatchDelete(chunk, nil)
			removed += n
			// An entry the datapath removed meanwhile ends a batch early:
			// delete the rest one by one.
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				for _, k := range chunk[n:] {
					if ignoreMissing(table.Delete(k)) == nil {
						removed++
					}
				}
				continue
			}
			if err != nil {
				return removed, fmt.Errorf("delete entries of %s: %w", table, err)
			}
		}
	}
	return removed, nil
}

// ctSources reads the datapath's counts of flows per source (ct_sources).
func (m *Maps) ctSources() (map[bpf.DatapathAddr]bpf.DatapathCtSource, error) {
	out := map[bpf.DatapathAddr]bpf.DatapathCtSource{}
	err := batches(m.m.CtSources, func(keys []bpf.DatapathAddr, vals []bpf.DatapathCtSource) {
		for i := range keys {
			out[keys[i]] = vals[i]
		}
	})
	return out, err
}

// correctSources brings what the datapath counts a source to hold in ct
// back to what it holds, given held, the flows of each source a walk of ct
// found, and before, the datapath's counts from before the walk. The
// datapath counts the flows it moves into ct and those it removes; flows
// removed behind its back (the reclaim above, a flush, a replaced ct
// map) would hold their source's share for ever. The datapath keeps
// counting while the walk runs, so the correction is bounded by what must
// be true whatever it did meanwhile: a flow in ct now was either seen by
// the walk or moved in since before (at most walk + promoted since
// before), and a flow seen by the walk is still there unless the
// datapath removed it (at least walk - forgotten since before). The count
// is moved inside those bounds, never beyond them, so it never says a
// source holds less than it does; idle sources are removed.
func (m *Maps) correctSources(before map[bpf.DatapathAddr]bpf.DatapathCtSource, held map[bpf.DatapathAddr]int64) error {
	after, err := m.ctSources()
	if err != nil {
		return err
	}
	released := map[bpf.DatapathAddr]int64{}
	err = batches(m.m.CtReleased, func(keys []bpf.DatapathAddr, vals []int64) {
		for i := range keys {
			released[keys[i]] = vals[i]
		}
	})
	if err != nil {
		return err
	}
	sources := map[bpf.DatapathAddr]bool{}
	for _, set := range []map[bpf.DatapathAddr]int64{held, released} {
		for s := range set {
			sources[s] = true
		}
	}
	for s := range after {
		sources[s] = true
	}
	var errs []error
	for s := range sources {
		b, a, w, r := before[s], after[s], held[s], released[s]
		count := int64(a.Promoted-a.Forgotten) - r
		fixed := min(max(count, w-int64(a.Forgotten-b.Forgotten)), w+int64(a.Promoted-b.Promoted))
		r += count - fixed
		_, counted := after[s]
		if w == 0 && a == b && fixed == 0 {
			// Idle since the last walk: nothing to remember. A flow the
			// datapath moves in between the read above and this delete is
			// counted again by the next walk's lower bound.
			if counted {
				errs = append(errs, ignoreMissing(m.m.CtSources.Delete(s)))
			}
			errs = append(errs, ignoreMissing(m.m.CtReleased.Delete(s)))
			continue
		}
		if r != released[s] {
			errs = append(errs, m.m.CtReleased.Put(s, r))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("correct the flows per source of ct: %w", err)
	}
	return nil
}

// ctBuffer is a chunk of the conntrack tables as deleteConntrack reads
// them.
type ctBuffer struct {
	keys []bpf.DatapathFlow
	vals []bpf.DatapathCtEntry
}

// ctBuffers keeps deleteConntrack's chunks between calls: every endpoint
// removed flushes its flows, and a chunk allocated each time was most of
// what a sandbox remove allocated (nearly a MiB).
var ctBuffers = sync.Pool{New: func() any {
	return &ctBuffer{keys: make([]bpf.DatapathFlow, batchSize), vals: make([]bpf.DatapathCtEntry, batchSize)}
}}

// batches reads a hash map in chunks, handing each to fn.
func batches[K, V any](m *ebpf.Map, fn func([]K, []V)) error {
	keys, vals := make([]K, batchSize), make([]V, batchSize)
	return batchLookup(m, keys, vals, func(n int) { fn(keys[:n], vals[:n]) })
}

// count counts a map's entries: in batches where the map type has them
// (hash maps), else key by key.
func count(m *ebpf.Map) (int, error) {
	switch m.Type() {
	case ebpf.Hash, ebpf.LRUHash:
	default:
		all, err := keys[[]byte](m)
		return len(all), err
	}
	// Buffers of the map's own key and value sizes.
	entry := func(size uint32) any {
		t := reflect.SliceOf(reflect.ArrayOf(int(size), reflect.TypeFor[byte]()))
		return reflect.MakeSlice(t, batchSize, batchSize).Interface()
	}
	n := 0
	err := batchLookup(m, entry(m.KeySize()), entry(m.ValueSize()), func(got int) { n += got })
	return n, err
}

// batchLookup reads a whole hash map into the buffers keys and values, a
// chunk at a time, telling got how many entries each chunk holds.
func batchLookup(m *ebpf.Map, keys, values any, got func(n int)) error {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		got(n)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
	}
}

// ConntrackClass is a kind of conntrack entry, as the metrics count them.
type ConntrackClass struct {
	State   string // tcp_established, udp_replied… (enum ct_state)
	Proto   string // tcp, udp, icmp, icmpv6
	Assured bool   // in ct (proven real), not ct_new
}

// ConntrackSummary is how full conntrack is: entries by class, and the NAT
// ports of masqueraded flows in use, by the uplink address they leave
// from. Each flow has two entries, one per direction.
type ConntrackSummary struct {
	Entries  map[ConntrackClass]int
	NATPorts map[netip.Addr]int
}

// SummarizeConntrack counts the live conntrack entries. A masqueraded flow
// holds a NAT port of an uplink address (one of uplinks): its reply
// direction's entry is keyed to that address.
func (m *Maps) SummarizeConntrack(uplinks []netip.Addr, now time.Duration) (ConntrackSummary, error) {
	states, err := EnumNames("ct_state", "CT_")
	if err != nil {
		return ConntrackSummary{}, err
	}
	s := ConntrackSummary{Entries: map[ConntrackClass]int{}, NATPorts: map[netip.Addr]int{}}
	for _, table := range []*ebpf.Map{m.m.Ct, m.m.CtNew} {
		assured := table == m.m.Ct
		err := batches(table, func(keys []bpf.DatapathFlow, vals []bpf.DatapathCtEntry) {
			for i, e := range vals {
				if time.Duration(e.Expires) <= now {
					continue // gone for the datapath already
				}
				state := fmt.Sprint(e.State)
				if int(e.State) < len(states) {
					state = states[e.State]
				}
				s.Entries[ConntrackClass{State: state, Proto: protoName(keys[i].Proto), Assured: assured}]++
				daddr := Addr(keys[i].Daddr)
				kind := e.Flags & uint8(bpf.DatapathCtFlagCT_REPLY|bpf.DatapathCtFlagCT_PUBLISHED_OUT)
				if kind == uint8(bpf.DatapathCtFlagCT_REPLY) && slices.Contains(uplinks, daddr) {
					s.NATPorts[daddr]++
				}
			}
		})
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}

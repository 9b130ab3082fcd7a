package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Egress is the egress list of one sandbox as the datapath holds it: the
// addresses the sandbox sends from (its endpoints', both families), each
// of which is listed, and the destination prefixes it may reach. What the
// DNS answers for allowed names is added by PutEgressName, one address at
// a time. A sandbox's own networks and the groups that never leave the
// link are always reachable. Prefixes are canonical and not v4-mapped (the
// control plane checks them).
type Egress struct {
	Sources []netip.Addr
	Allow   []netip.Prefix
}

// egressKeyBits is the bits of an egress_key past its prefix length.
const egressKeyBits = 8 * 32

// egressKey is destination prefix p of source src; an invalid p is the
// entry that lists src (every destination).
func egressKey(src netip.Addr, p netip.Prefix) bpf.DatapathEgressKey {
	if !p.IsValid() {
		return bpf.DatapathEgressKey{Prefixlen: 128, Src: addr16(src)}
	}
	p = p.Masked()
	bits := 128 + p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.DatapathEgressKey{Prefixlen: uint32(bits), Src: addr16(src), Dst: addr16(p.Addr())}
}

// egressPrefix is the destination prefix of k, for errors.
func egressPrefix(k bpf.DatapathEgressKey) netip.Prefix {
	a := Addr(k.Dst)
	bits := int(k.Prefixlen) - 128
	if a.Is4() {
		bits -= 96
	}
	return netip.PrefixFrom(a, max(bits, 0))
}

// egressEntries are the entries of egress_allow that e makes: a listing
// entry per source, and each prefix of the source's family (the datapath
// refuses IPv6 to v4-mapped destinations before it asks).
func egressEntries(e Egress) map[bpf.DatapathEgressKey]bpf.DatapathEgressAction {
	out := map[bpf.DatapathEgressKey]bpf.DatapathEgressAction{}
	for _, src := range e.Sources {
		if !src.IsValid() {
			continue // a family the endpoint has not
		}
		out[egressKey(src, netip.Prefix{})] = bpf.DatapathEgressActionEGRESS_LISTED
		for _, p := range e.Allow {
			if p.Addr().Is4() == src.Is4() {
				out[egressKey(src, p)] = bpf.DatapathEgressActionEGRESS_ALLOW
			}
		}
	}
	return out
}

// ReplaceEgress makes now the egress list of a sandbox whose list was
// was (either may be empty: no list). The prefixes are written before the
// entries that list a source and deleted after them, so no moment refuses
// what both lists allow. What the DNS answered for sources no longer
// listed is forgotten. A list that cannot be written is put back as it
// was.
func (m *Maps) ReplaceEgress(now, was Egress) error {
	want, old := egressEntries(now), egressEntries(was)
	var done []bpf.DatapathEgressKey
	undo := func() {
		for _, k := range done {
			if v, had := old[k]; had {
				m.m.EgressAllow.Put(k, v)
			} else {
				m.m.EgressAllow.Delete(k)
			}
		}
	}
	for _, action := range []bpf.DatapathEgressAction{bpf.DatapathEgressActionEGRESS_ALLOW, bpf.DatapathEgressActionEGRESS_LISTED} {
		for k, v := range want {
			if v != action || old[k] == v {
				continue
			}
			if err := m.m.EgressAllow.Put(k, v); err != nil {
				undo()
				return fmt.Errorf("write egress prefix %s of %s: %w", egressPrefix(k), Addr(k.Src), err)
			}
			done = append(done, k)
		}
	}
	var errs []error
	for _, action := range []bpf.DatapathEgressAction{bpf.DatapathEgressActionEGRESS_LISTED, bpf.DatapathEgressActionEGRESS_ALLOW} {
		for k, v := range old {
			if _, keep := want[k]; keep || v != action {
				continue
			}
			if err := ignoreMissing(m.m.EgressAllow.Delete(k)); err != nil {
				errs = append(errs, fmt.Errorf("delete egress prefix %s of %s: %w", egressPrefix(k), Addr(k.Src), err))
			}
		}
	}
	listed := map[netip.Addr]bool{}
	for _, src := range now.Sources {
		listed[src] = true
	}
	var gone []netip.Addr
	for _, src := range was.Sources {
		if !listed[src] {
			gone = append(gone, src)
		}
	}
	return errors.Join(append(errs, m.ForgetEgressNames(gone...))...)
}

// DeleteEgress removes the lists of sources, whatever they hold, and
// what the DNS let them reach.
func (m *Maps) DeleteEgress(sources ...netip.Addr) error {
	gone := map[bpf.DatapathAddr]bool{}
	for _, s := range sources {
		gone[addr16(s)] = true
	}
	ks, err := keys[bpf.DatapathEgressKey](m.m.EgressAllow)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range ks {
		if gone[k.Src] {
			if err := ignoreMissing(m.m.EgressAllow.Delete(k)); err != nil {
				errs = append(errs, fmt.Errorf("delete egress prefix %s of %s: %w", egressPrefix(k), Addr(k.Src), err))
			}
		}
	}
	return errors.Join(append(errs, m.ForgetEgressNames(sources...))...)
}

// EgressName is an address the DNS answered for a name that the list of
// one of a sandbox's addresses (Source) allows, until Lapses
// (CLOCK_BOOTTIME, Now).
type EgressName struct {
	Source, Addr netip.Addr
	Lapses       time.Duration
}

// PutEgressName lets n.Source reach n.Addr until n.Lapses, or longer if an
// answer already let it.
func (m *Maps) PutEgressName(n EgressName) error {
	key := bpf.DatapathEgressNameKey{Src: addr16(n.Source), Dst: addr16(n.Addr)}
	lapses := uint64(n.Lapses)
	var had uint64
	if err := m.m.EgressNames.Lookup(key, &had); err == nil && had > lapses {
		return nil
	}
	if err := m.m.EgressNames.Put(key, lapses); err != nil {
		return fmt.Errorf("write egress address %s of %s: %w", n.Addr, n.Source, err)
	}
	return nil
}

// EgressNames reads every address the DNS let a source reach, lapsed or
// not.
func (m *Maps) EgressNames() ([]EgressName, error) {
	all, err := entries[bpf.DatapathEgressNameKey, uint64](m.m.EgressNames)
	if err != nil {
		return nil, err
	}
	out := make([]EgressName, 0, len(all))
	for k, v := range all {
		out = append(out, EgressName{Source: Addr(k.Src), Addr: Addr(k.Dst), Lapses: time.Duration(v)})
	}
	return out, nil
}

// ReclaimEgressNames removes the addresses whose answers lapsed before
// now, which the datapath already refuses, and returns how many.
func (m *Maps) ReclaimEgressNames(now time.Duration) (int, error) {
	return m.DeleteEgressNames(func(n EgressName) bool { return n.Lapses <= now })
}

// ForgetEgressNames removes what the DNS let sources reach.
func (m *Maps) ForgetEgressNames(sources ...netip.Addr) error {
	if len(sources) == 0 {
		return nil
	}
	gone := map[netip.Addr]bool{}
	for _, s := range sources {
		gone[s] = true
	}
	_, err := m.DeleteEgressNames(func(n EgressName) bool { return gone[n.Source] })
	return err
}

// DeleteEgressNames removes the addresses unwanted picks, and returns how
// many.
func (m *Maps) DeleteEgressNames(unwanted func(EgressName) bool) (int, error) {
	all, err := m.EgressNames()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range all {
		if !unwanted(e) {
			continue
		}
		key := bpf.DatapathEgressNameKey{Src: addr16(e.Source), Dst: addr16(e.Addr)}
		// An answer may have renewed it since the read.
		var lapses uint64
		if m.m.EgressNames.Lookup(key, &lapses) == nil && !unwanted(EgressName{e.Source, e.Addr, time.Duration(lapses)}) {
			continue
		}
		if err := ignoreMissing(m.m.EgressNames.Delete(key)); err != nil {
			return n, fmt.Errorf("delete egress address %s of %s: %w", e.Addr, e.Source, err)
		}
		n++
	}
	return n, nil
}

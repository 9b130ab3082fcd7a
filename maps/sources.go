package maps

import (
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Sources are who may open flows to a published port: the most specific
// prefix among Allow and Deny decides; a source no prefix holds is let in
// when Allow is empty and refused otherwise, in both families. No prefix
// at all lets everyone in. The datapath checks the first packet of a
// flow from outside or from a sandbox; host processes, which the socket
// hooks connect, are the host's own and are not checked. Prefixes are
// canonical and not v4-mapped (the control plane checks them).
type Sources struct {
	Allow, Deny []netip.Prefix
}

// Empty reports whether s lets everyone in without a list.
func (s Sources) Empty() bool { return len(s.Allow) == 0 && len(s.Deny) == 0 }

// sourceEntries are the entries of source_ranges that s makes for the
// publication at pub: each prefix of pub's family, and a prefix of length
// zero that says what the rest gets, so that the publication never falls
// through to the daemon's default.
func sourceEntries(pub bpf.DatapathPublicationKey, s Sources) map[bpf.DatapathSourceKey]bpf.DatapathSourceAction {
	if s.Empty() {
		return nil
	}
	v4 := Addr(pub.Addr).Is4()
	rest := bpf.DatapathSourceActionSOURCE_ALLOW
	if len(s.Allow) > 0 {
		rest = bpf.DatapathSourceActionSOURCE_DENY
	}
	var zero netip.Prefix
	if v4 {
		zero = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	} else {
		zero = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	out := map[bpf.DatapathSourceKey]bpf.DatapathSourceAction{sourceKey(pub, zero): rest}
	for _, list := range []struct {
		items  []netip.Prefix
		action bpf.DatapathSourceAction
	}{{s.Allow, bpf.DatapathSourceActionSOURCE_ALLOW}, {s.Deny, bpf.DatapathSourceActionSOURCE_DENY}} {
		for _, p := range list.items {
			if p.Addr().Is4() == v4 {
				out[sourceKey(pub, p)] = list.action
			}
		}
	}
	return out
}

// defaultSourceKeys are the publication keys the daemon's default lists
// are kept under, one per family: every address, port and protocol 0.
func defaultSourceKeys() []bpf.DatapathPublicationKey {
	return []bpf.DatapathPublicationKey{{Addr: addr16(netip.IPv4Unspecified())}, {Addr: addr16(netip.IPv6Unspecified())}}
}

// defaultSourceEntries are the entries of the daemon's default lists.
func defaultSourceEntries(s Sources) map[bpf.DatapathSourceKey]bpf.DatapathSourceAction {
	out := map[bpf.DatapathSourceKey]bpf.DatapathSourceAction{}
	for _, pub := range defaultSourceKeys() {
		for k, v := range sourceEntries(pub, s) {
			out[k] = v
		}
	}
	return out
}

// sourceKey is prefix p of the clients of the publication at pub. The
// prefix length counts the publication's key, and an IPv4 prefix counts
// the 96 bits that map it into IPv6.
func sourceKey(pub bpf.DatapathPublicationKey, p netip.Prefix) bpf.DatapathSourceKey {
	p = p.Masked()
	bits := p.Bits() + 8*publicationKeySize
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.DatapathSourceKey{Prefixlen: uint32(bits), Pub: pub, Addr: addr16(p.Addr())}
}

// publicationKeySize is the bytes of a publication's key in source_key.
var publicationKeySize = int(unsafe.Sizeof(bpf.DatapathPublicationKey{}))

// putSources makes want the entries of a publication's lists, whose
// entries were old, so that no moment lets in a source that neither the
// old lists nor the new let in: the entries that refuse are written
// first, then those that let in, and only then do the stale ones go, those
// that let in first. Lists that cannot be written (the trie full) are put
// back as they were, in one line of error.
func (m *Maps) putSources(want, old map[bpf.DatapathSourceKey]bpf.DatapathSourceAction) error {
	type written struct {
		key  bpf.DatapathSourceKey
		prev bpf.DatapathSourceAction
		had  bool
	}
	var done []written
	for _, k := range sourceWriteOrder(want) {
		prev, had := old[k]
		if had && prev == want[k] {
			continue
		}
		if err := m.m.SourceRanges.Put(k, want[k]); err != nil {
			for i := len(done) - 1; i >= 0; i-- { // back as they were
				if w := done[i]; w.had {
					m.m.SourceRanges.Put(w.key, w.prev)
				} else {
					m.m.SourceRanges.Delete(w.key)
				}
			}
			return fmt.Errorf("write source range %s of port %d (%d entries of the lists, %d written): %w",
				sourcePrefix(k), be16(k.Pub.Port), len(want), len(done), err)
		}
		done = append(done, written{k, prev, had})
	}
	var stale []bpf.DatapathSourceKey
	for k, v := range old {
		if _, ok := want[k]; !ok {
			if v == bpf.DatapathSourceActionSOURCE_ALLOW {
				stale = append([]bpf.DatapathSourceKey{k}, stale...)
			} else {
				stale = append(stale, k)
			}
		}
	}
	var first error
	for _, k := range stale {
		if err := ignoreMissing(m.m.SourceRanges.Delete(k)); err != nil && first == nil {
			first = fmt.Errorf("delete source range %s of port %d: %w", sourcePrefix(k), be16(k.Pub.Port), err)
		}
	}
	return first
}

// sourceWriteOrder is the order putSources writes entries in: those that
// refuse, then those that let in.
func sourceWriteOrder(entries map[bpf.DatapathSourceKey]bpf.DatapathSourceAction) []bpf.DatapathSourceKey {
	var deny, allow []bpf.DatapathSourceKey
	for k, v := range entries {
		if v == bpf.DatapathSourceActionSOURCE_DENY {
			deny = append(deny, k)
		} else {
			allow = append(allow, k)
		}
	}
	return append(deny, allow...)
}

// sourcePrefix is the client prefix of k, for errors.
func sourcePrefix(k bpf.DatapathSourceKey) netip.Prefix {
	a := Addr(k.Addr)
	bits := int(k.Prefixlen) - 8*publicationKeySize
	if a.Is4() {
		bits -= 96
	}
	return netip.PrefixFrom(a, max(bits, 0))
}

// ReplaceSources makes s the lists of publication p, whose lists were
// old: new flows are checked against s at once; established ones go on.
func (m *Maps) ReplaceSources(p Publication, old Sources) error {
	key := publicationKey(p)
	return m.putSources(sourceEntries(key, p.Sources), sourceEntries(key, old))
}

// PutDefaultSources makes s the lists of the publications without lists
// of their own, replacing the lists before (old).
func (m *Maps) PutDefaultSources(s, old Sources) error {
	return m.putSources(defaultSourceEntries(s), defaultSourceEntries(old))
}

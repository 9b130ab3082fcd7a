package maps

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Backend is one of the places a balanced publication leads to.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

func (b Backend) String() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// MaxBackends is how many backends a balanced publication may have.
const MaxBackends = int(bpf.DatapathMaglevSizeMAGLEV_BACKENDS)

// maglevTable builds a balanced publication's table (struct maglev_table)
// as Maglev does (Eisenbud et al., NSDI 2016): each backend has its own
// permutation of the slots, from a hash of its address and port alone,
// and the backends take turns at taking their next preferred free slot
// until every slot is taken. A backend that comes or goes thus moves few
// of the others' slots, and the same backends make the same table in any
// order and at every start: a flow whose conntrack entry was lost goes
// back to its backend. Backends are listed in the table in address order.
func maglevTable(backends []Backend) (bpf.DatapathMaglevTable, error) {
	var t bpf.DatapathMaglevTable
	// One backend once, in the form the datapath holds (addr16): an IPv4
	// address written v4-mapped is the same backend.
	bs := make([]Backend, len(backends))
	for i, b := range backends {
		bs[i] = Backend{Addr: b.Addr.Unmap(), Port: b.Port}
	}
	slices.SortFunc(bs, func(a, b Backend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	bs = slices.Compact(bs)
	if len(bs) == 0 {
		return t, fmt.Errorf("balance: no backend")
	}
	if len(bs) > MaxBackends {
		return t, fmt.Errorf("balance: %d backends, at most %d share a published port", len(bs), MaxBackends)
	}
	const m = uint64(bpf.DatapathMaglevSizeMAGLEV_SLOTS)
	offset, skip, next := make([]uint64, len(bs)), make([]uint64, len(bs)), make([]uint64, len(bs))
	for i, b := range bs {
		t.Backend[i] = bpf.DatapathPublication{Addr: addr16(b.Addr), Port: be16(b.Port)}
		a16 := b.Addr.Unmap().As16()
		h := sha256.Sum256(binary.BigEndian.AppendUint16(a16[:], b.Port))
		offset[i] = binary.BigEndian.Uint64(h[0:]) % m
		skip[i] = binary.BigEndian.Uint64(h[8:])%(m-1) + 1
	}
	var taken [bpf.DatapathMaglevSizeMAGLEV_SLOTS]bool
	for filled := uint64(0); ; {
		for i := range bs {
			slot := (offset[i] + next[i]*skip[i]) % m
			for taken[slot] {
				next[i]++
				slot = (offset[i] + next[i]*skip[i]) % m
			}
			taken[slot] = true
			t.Slot[slot] = uint8(i)
			next[i]++
			if filled++; filled == m {
				return t, nil
			}
		}
	}
}

// tableEntries are the backends of table t as the datapath holds them:
// those of its entries that name a port (one that left is zero).
func tableEntries(t *bpf.DatapathMaglevTable) []bpf.DatapathPublication {
	return slices.DeleteFunc(slices.Clone(t.Backend[:]), func(b bpf.DatapathPublication) bool { return b.Port == 0 })
}

// tableBackends lists the backends of table t.
func tableBackends(t *bpf.DatapathMaglevTable) []Backend {
	var out []Backend
	for _, b := range tableEntries(t) {
		out = append(out, Backend{Addr: Addr(b.Addr), Port: be16(b.Port)})
	}
	return out
}

// Merge gives pubs with the balanced publications of each host port
// (one per record that shares it, each naming its own backends) merged
// into one that has all of their backends, in the place of the first.
// The others are as they were.
func Merge(pubs []Publication) []Publication {
	var out []Publication
	at := map[bpf.DatapathPublicationKey]int{}
	for _, p := range pubs {
		if !p.Balanced() {
			out = append(out, p)
			continue
		}
		key := publicationKey(p)
		i, ok := at[key]
		if !ok {
			at[key] = len(out)
			p.Backends = slices.Clone(p.Backends)
			out = append(out, p)
			continue
		}
		for _, b := range p.Backends {
			if !slices.Contains(out[i].Backends, b) {
				out[i].Backends = append(out[i].Backends, b)
			}
		}
	}
	return out
}

// Unbalanced is pubs but the balanced publications, whose entries
// ReplaceBalanced writes whole.
func Unbalanced(pubs []Publication) []Publication {
	return slices.DeleteFunc(slices.Clone(pubs), Publication.Balanced)
}

// BackendFlows is how many new flows a backend of balanced publications
// took, of a protocol.
type BackendFlows struct {
	Backend Backend
	Proto   string // tcp, udp
	Flows   uint64
}

// BackendFlows reads the new flows of every backend of balanced
// publications, summed over the CPUs.
func (m *Maps) BackendFlows() ([]BackendFlows, error) {
	var (
		out []BackendFlows
		k   bpf.DatapathTargetKey
		vs  []uint64
	)
	it := m.m.BackendFlows.Iterate()
	for it.Next(&k, &vs) {
		f := BackendFlows{Backend: Backend{Addr: Addr(k.Addr), Port: be16(k.Port)}, Proto: protoName(k.Proto)}
		for _, v := range vs {
			f.Flows += v
		}
		out = append(out, f)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", m.m.BackendFlows, err)
	}
	return out, nil
}

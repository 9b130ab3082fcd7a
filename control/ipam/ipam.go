package ipam

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// ErrExhausted is returned when a pool has no free address left.
var ErrExhausted = errdefs.Conflict(errors.New("no free address left"))

// Pool is a subnet, the part of it that hands out dynamic addresses and
// what is allocated. Its ID is how networks and frontends (Docker's IPAM
// protocol among them) name it.
type Pool struct {
	ID      string       `json:"id"`
	Subnet  netip.Prefix `json:"subnet"`
	Range   netip.Prefix `json:"ipRange,omitzero"` // dynamic addresses come from here; zero means the whole subnet
	Gateway netip.Addr   `json:"gateway"`
	// Allocated is kept sorted.
	Allocated []netip.Addr `json:"allocated,omitempty"`
	// Last is the latest dynamic allocation; the next search starts after it,
	// so a released address is reused only once the pool wraps.
	Last netip.Addr `json:"last,omitzero"`
}

// NewPool checks a subnet, an optional ip range and an optional gateway
// (zero: the subnet's first address + 1, .1 or ::1) and returns an empty
// pool. IPv4 and IPv6 subnets alike; an IPv6 subnet reserves no broadcast
// address, so it may be as small as /126.
func NewPool(subnet, ipRange netip.Prefix, gateway netip.Addr) (Pool, error) {
	if subnet.Addr().Is4In6() {
		return Pool{}, errdefs.Invalidf("subnet %s is IPv4-mapped: give it as IPv4 (%s)", subnet, subnet.Addr().Unmap())
	}
	if subnet != subnet.Masked() {
		return Pool{}, errdefs.Invalidf("subnet %s has host bits set (did you mean %s?)", subnet, subnet.Masked())
	}
	// Room for the network address, a gateway and an endpoint, and for
	// IPv4 a broadcast address too.
	if maxBits := subnet.Addr().BitLen() - 2; subnet.Bits() > maxBits {
		return Pool{}, errdefs.Invalidf("subnet %s is too small: it needs room for a gateway and an endpoint (at most /%d)", subnet, maxBits)
	}
	if !gateway.IsValid() {
		gateway = subnet.Addr().Next()
	}
	p := Pool{Subnet: subnet, Gateway: gateway}
	if !subnet.Contains(gateway) {
		return Pool{}, errdefs.Invalidf("gateway %s is outside subnet %s", gateway, subnet)
	}
	if p.edge(gateway) {
		return Pool{}, errdefs.Invalidf("gateway %s is the network or broadcast address of %s", gateway, subnet)
	}
	if ipRange.IsValid() {
		if ipRange != ipRange.Masked() {
			return Pool{}, errdefs.Invalidf("ip-range %s has host bits set (did you mean %s?)", ipRange, ipRange.Masked())
		}
		if ipRange.Bits() < subnet.Bits() || !subnet.Contains(ipRange.Addr()) {
			return Pool{}, errdefs.Invalidf("ip-range %s is outside subnet %s", ipRange, subnet)
		}
		p.Range = ipRange
	}
	return p, nil
}

// lastAddr is the last address of p: the broadcast address of an IPv4 subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(a)
	return last
}

// edge reports whether a is the subnet's network address or, in IPv4, its
// broadcast address. IPv6 has no broadcast: its last address is an
// ordinary one.
func (p *Pool) edge(a netip.Addr) bool {
	return a == p.Subnet.Addr() || a.Is4() && a == lastAddr(p.Subnet)
}

// Reserved reports the addresses never handed out: network, broadcast
// (IPv4), gateway.
func (p *Pool) Reserved(a netip.Addr) bool { return p.reserved(a) }

func (p *Pool) reserved(a netip.Addr) bool { return p.edge(a) || a == p.Gateway }

func (p *Pool) dynamicRange() netip.Prefix {
	if p.Range.IsValid() {
		return p.Range
	}
	return p.Subnet
}

// InUse reports whether a is allocated.
func (p *Pool) InUse(a netip.Addr) bool {
	_, found := slices.BinarySearchFunc(p.Allocated, a, netip.Addr.Compare)
	return found
}

func (p *Pool) take(a netip.Addr) {
	i, _ := slices.BinarySearchFunc(p.Allocated, a, netip.Addr.Compare)
	p.Allocated = slices.Insert(p.Allocated, i, a)
}

// Allocate hands out the next free address of the range after the last one
// handed out, wrapping around at the end. It walks the sorted allocations
// beside the candidates, so it costs what is allocated, never the size of
// the range: a /64 is never enumerated.
func (p *Pool) Allocate() (netip.Addr, error) {
	r := p.dynamicRange()
	first, last := r.Addr(), lastAddr(r)
	start := first
	if p.Last.IsValid() && r.Contains(p.Last) && p.Last != last {
		start = p.Last.Next()
	}
	a, ok := p.nextFree(start, last)
	if !ok && start != first {
		a, ok = p.nextFree(first, start.Prev())
	}
	if !ok {
		return netip.Addr{}, fmt.Errorf("pool %s: %w", r, ErrExhausted)
	}
	p.take(a)
	p.Last = a
	return a, nil
}

// nextFree is the first address from a to last that is neither reserved
// nor allocated.
func (p *Pool) nextFree(a, last netip.Addr) (netip.Addr, bool) {
	i, _ := slices.BinarySearchFunc(p.Allocated, a, netip.Addr.Compare)
	for {
		for i < len(p.Allocated) && p.Allocated[i].Less(a) {
			i++
		}
		taken := i < len(p.Allocated) && p.Allocated[i] == a
		if !taken && !p.reserved(a) {
			return a, true
		}
		if a == last {
			return netip.Addr{}, false
		}
		a = a.Next()
	}
}

// SetGateway moves the gateway of a pool to a, an address of its subnet
// that nothing holds.
func (p *Pool) SetGateway(a netip.Addr) error {
	if a == p.Gateway {
		return nil
	}
	switch {
	case !p.Subnet.Contains(a):
		return errdefs.Invalidf("gateway %s is outside subnet %s", a, p.Subnet)
	case p.edge(a):
		return errdefs.Invalidf("gateway %s is the network or broadcast address of %s", a, p.Subnet)
	case p.InUse(a):
		return errdefs.Conflictf("gateway %s of %s is already allocated", a, p.Subnet)
	}
	p.Gateway = a
	return nil
}

// AllocateStatic takes a chosen address, which may lie anywhere in the
// subnet (as with Docker, also outside the ip range).
func (p *Pool) AllocateStatic(a netip.Addr) error {
	switch {
	case !p.Subnet.Contains(a):
		return errdefs.Invalidf("address %s is outside subnet %s", a, p.Subnet)
	case a == p.Gateway:
		return errdefs.Invalidf("address %s is the gateway of %s", a, p.Subnet)
	case p.reserved(a):
		return errdefs.Invalidf("address %s is the network or broadcast address of %s", a, p.Subnet)
	case p.InUse(a):
		return errdefs.Conflictf("address %s is already in use", a)
	}
	p.take(a)
	return nil
}

// Release returns an address to the pool; releasing a free one is a no-op.
func (p *Pool) Release(a netip.Addr) {
	if i, found := slices.BinarySearchFunc(p.Allocated, a, netip.Addr.Compare); found {
		p.Allocated = slices.Delete(p.Allocated, i, i+1)
	}
}

// Pools keeps pools by ID. The store does, so that an allocation commits
// in the same transaction as the record that uses the address.
type Pools interface {
	Pool(id string) (Pool, error)
	PutPool(Pool) error
}

// Allocate takes an address of pool id: static when it is valid (see
// AllocateStatic), the next free one otherwise.
func Allocate(ps Pools, id string, static netip.Addr) (netip.Addr, error) {
	p, err := ps.Pool(id)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := p.Take(static)
	if err != nil {
		return netip.Addr{}, err
	}
	return a, ps.PutPool(p)
}

// Take takes static when it is valid (see AllocateStatic), the next free
// address otherwise (Allocate).
func (p *Pool) Take(static netip.Addr) (netip.Addr, error) {
	if static.IsValid() {
		return static, p.AllocateStatic(static)
	}
	return p.Allocate()
}

// Release returns an address to pool id; releasing a free one is a no-op.
func Release(ps Pools, id string, a netip.Addr) error {
	p, err := ps.Pool(id)
	if err != nil {
		return err
	}
	p.Release(a)
	return ps.PutPool(p)
}

// DefaultPools are Docker's default address pools, in order: 172.17.0.0/16
// to 172.31.0.0/16, then 192.168.0.0/16 cut into /20s.
func DefaultPools() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		for b := 17; b <= 31; b++ {
			if !yield(netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16)) {
				return
			}
		}
		for p := range Split(netip.MustParsePrefix("192.168.0.0/16"), 20) {
			if !yield(p) {
				return
			}
		}
	}
}

// ULABase is the /48 of unique local addresses (RFC 4193) that a host's
// IPv6 subnets come from when none is given, as Docker 27 derives it when
// its default address pools name no IPv6 prefix: fd00::/8 followed by the
// 40 low bits of the first 8 bytes of the SHA-256 of the host's ID. Docker
// hashes its engine ID; ebpfnet the ID its state keeps (store.Tx.HostID),
// so the prefix is stable for as long as the state is.
func ULABase(hostID string) netip.Prefix {
	sum := sha256.Sum256([]byte(hostID))
	gid := binary.BigEndian.Uint64(sum[:8]) & (1<<40 - 1)
	var a [16]byte
	a[0] = 0xfd
	for i := range 5 {
		a[1+i] = byte(gid >> (8 * (4 - i)))
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// DefaultPools6 are the 65536 /64s of a /48 (ULABase), in order: Docker's
// default IPv6 pool splits its /48 into /64s.
func DefaultPools6(base48 netip.Prefix) iter.Seq[netip.Prefix] { return Split(base48.Masked(), 64) }

// Split cuts p into its subnets of length bits, in order; none when bits
// is shorter than p's or longer than its family's addresses.
func Split(p netip.Prefix, bits int) iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		if bits < p.Bits() || bits > p.Addr().BitLen() {
			return
		}
		for a, ok := p.Masked().Addr(), true; ok && p.Contains(a); a, ok = addAtBit(a, bits) {
			if !yield(netip.PrefixFrom(a, bits)) {
				return
			}
		}
	}
}

// addAtBit adds one at the last bit of a prefix of length bits of a:
// the start of the next such prefix; false past the family's last one.
func addAtBit(a netip.Addr, bits int) (netip.Addr, bool) {
	b := a.AsSlice()
	i := (bits - 1) / 8
	carry := uint(0x80 >> ((bits - 1) % 8))
	for ; i >= 0 && carry != 0; i-- {
		sum := uint(b[i]) + carry
		b[i], carry = byte(sum), sum>>8
	}
	next, _ := netip.AddrFromSlice(b)
	return next, carry == 0
}

// FreeSubnet returns the first of the default pools that overlaps none of
// used.
func FreeSubnet(pools iter.Seq[netip.Prefix], used []netip.Prefix) (netip.Prefix, error) {
	for candidate := range pools {
		if !slices.ContainsFunc(used, candidate.Overlaps) {
			return candidate, nil
		}
	}
	return netip.Prefix{}, errdefs.Conflict(errors.New("every default address pool overlaps a route or another network: choose a subnet"))
}

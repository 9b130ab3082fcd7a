package ipam

import (
	"errors"
	"fmt"
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
// (zero: the subnet's first address) and returns an empty pool.
func NewPool(subnet, ipRange netip.Prefix, gateway netip.Addr) (Pool, error) {
	if !subnet.Addr().Is4() {
		return Pool{}, errdefs.Invalidf("subnet %s: only IPv4 subnets are supported", subnet)
	}
	if subnet != subnet.Masked() {
		return Pool{}, errdefs.Invalidf("subnet %s has host bits set (did you mean %s?)", subnet, subnet.Masked())
	}
	if subnet.Bits() > 30 {
		return Pool{}, errdefs.Invalidf("subnet %s is too small: it needs room for a gateway and an endpoint (at most /30)", subnet)
	}
	if !gateway.IsValid() {
		gateway = subnet.Addr().Next()
	}
	p := Pool{Subnet: subnet, Gateway: gateway}
	if !subnet.Contains(gateway) {
		return Pool{}, errdefs.Invalidf("gateway %s is outside subnet %s", gateway, subnet)
	}
	if gateway == subnet.Addr() || gateway == broadcast(subnet) {
		return Pool{}, errdefs.Invalidf("gateway %s is the network or broadcast address of %s", gateway, subnet)
	}
	if ipRange.IsValid() {
		if ipRange != ipRange.Masked() {
			return Pool{}, errdefs.Invalidf("ip-range %s has host bits set (did you mean %s?)", ipRange, ipRange.Masked())
		}
		if !ipRange.Addr().Is4() || ipRange.Bits() < subnet.Bits() || !subnet.Contains(ipRange.Addr()) {
			return Pool{}, errdefs.Invalidf("ip-range %s is outside subnet %s", ipRange, subnet)
		}
		p.Range = ipRange
	}
	return p, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Reserved reports the addresses never handed out: network, broadcast, gateway.
func (p *Pool) Reserved(a netip.Addr) bool { return p.reserved(a) }

func (p *Pool) reserved(a netip.Addr) bool {
	return a == p.Subnet.Addr() || a == broadcast(p.Subnet) || a == p.Gateway
}

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
// handed out, wrapping around at the end.
func (p *Pool) Allocate() (netip.Addr, error) {
	r := p.dynamicRange()
	first, last := r.Addr(), broadcast(r)
	start := first
	if p.Last.IsValid() && r.Contains(p.Last) && p.Last != last {
		start = p.Last.Next()
	}
	a := start
	for {
		if !p.reserved(a) && !p.InUse(a) {
			p.take(a)
			p.Last = a
			return a, nil
		}
		if a == last {
			a = first
		} else {
			a = a.Next()
		}
		if a == start {
			return netip.Addr{}, fmt.Errorf("pool %s: %w", r, ErrExhausted)
		}
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
	case a == p.Subnet.Addr() || a == broadcast(p.Subnet):
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
	a := static
	if a.IsValid() {
		err = p.AllocateStatic(a)
	} else {
		a, err = p.Allocate()
	}
	if err != nil {
		return netip.Addr{}, err
	}
	return a, ps.PutPool(p)
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
func DefaultPools() []netip.Prefix {
	var pools []netip.Prefix
	for b := 17; b <= 31; b++ {
		pools = append(pools, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16))
	}
	for b := 0; b < 256; b += 16 {
		pools = append(pools, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(b), 0}), 20))
	}
	return pools
}

// FreeSubnet returns the first default pool that overlaps none of used.
func FreeSubnet(used []netip.Prefix) (netip.Prefix, error) {
	for _, candidate := range DefaultPools() {
		if !slices.ContainsFunc(used, candidate.Overlaps) {
			return candidate, nil
		}
	}
	return netip.Prefix{}, errdefs.Conflict(errors.New("every default address pool overlaps a route or another network: choose a subnet"))
}

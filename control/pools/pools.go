// Package pools chooses the address pools of the host's networks, in the
// store's transactions: a subnet given, checked free of the host's other
// pools, or else the family's first default pool free of routes and
// pools; and it serves the pools and addresses a runtime's IPAM requests
// on their own (Docker's IpamDriver), from the same pools, so that no
// subnet or address is handed out twice. Package ipam keeps the addresses
// of one pool.
package pools

import (
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Config is what Pools work with.
type Config struct {
	Store *store.Store
	// Lock is the engine's lock, which requests are served under.
	Lock sync.Locker
	// Routes lists the destinations of a family (netlink.FAMILY_V4 or
	// FAMILY_V6) routed in the dataplane's namespace.
	Routes func(family int) ([]netip.Prefix, error)
}

// Pools chooses and hands out pools.
type Pools struct{ cfg Config }

// New is pools with cfg.
func New(cfg Config) *Pools { return &Pools{cfg: cfg} }

// Spec is what a request says of one family's pool: a pool requested on
// its own (Request) to take the addresses from, or what a new one should
// be. A new pool without a subnet takes the family's first default pool
// free of routes and other pools.
type Spec struct {
	ID      string
	Subnet  netip.Prefix
	IPRange netip.Prefix
	Gateway netip.Addr
}

// Choose refers n to its pools, made or found from v4 and, when n has
// IPv6, v6 (choose). A pool requested on its own is adopted as it is.
func (ps *Pools) Choose(tx *store.Tx, n *store.Network, v4, v6 Spec) error {
	pool, requested, err := ps.choose(tx, v4, false)
	if err != nil {
		return err
	}
	n.Pool, n.PoolID, n.RequestedPool = pool, pool.ID, requested
	if !n.EnableIPv6 {
		return nil
	}
	pool, requested, err = ps.choose(tx, v6, true)
	if err != nil {
		return err
	}
	if requested != n.RequestedPool {
		// One IPAM hands out both (Docker asks one driver for both).
		return errdefs.Invalidf("pools %s and %s: a network's pools are both requested through IPAM or neither", n.Pool.Subnet, pool.Subnet)
	}
	n.Pool6, n.PoolID6 = pool, pool.ID
	return nil
}

// choose finds the requested pool spec.ID, or makes one from the spec
// for the family (v6 or not); without a subnet it takes the family's first
// default pool free of routes and other pools: Docker's for IPv4, the
// /64s of the host's ULA /48 for IPv6 (ipam.ULABase).
func (ps *Pools) choose(tx *store.Tx, spec Spec, v6 bool) (p ipam.Pool, requested bool, err error) {
	family, defaults := netlink.FAMILY_V4, ipam.DefaultPools()
	if v6 {
		id, err := tx.HostID()
		if err != nil {
			return p, false, err
		}
		family, defaults = netlink.FAMILY_V6, ipam.DefaultPools6(ipam.ULABase(id))
	}
	for _, a := range []netip.Addr{spec.Subnet.Addr(), spec.IPRange.Addr(), spec.Gateway} {
		if a.IsValid() && a.Is6() != v6 {
			return p, false, errdefs.Invalidf("%s is not an address of the %s pool", a, familyName(v6))
		}
	}
	if spec.ID != "" {
		p, err = adoptPool(tx, spec)
		return p, true, err
	}
	subnet := spec.Subnet
	if !subnet.IsValid() {
		if spec.Gateway.IsValid() {
			return p, false, errdefs.Invalidf("gateway %s needs a subnet to lie in", spec.Gateway)
		}
		if spec.IPRange.IsValid() {
			return p, false, errdefs.Invalidf("ip range %s needs a subnet to lie in", spec.IPRange)
		}
		used, err := ps.Used(tx, family)
		if err != nil {
			return p, false, err
		}
		if subnet, err = ipam.FreeSubnet(defaults, used); err != nil {
			return p, false, err
		}
	} else if err := CheckFree(tx, subnet); err != nil {
		return ipam.Pool{}, false, err
	}
	if p, err = ipam.NewPool(subnet, spec.IPRange, spec.Gateway); err != nil {
		return p, false, err
	}
	p.ID = store.NewID()
	return p, false, tx.PutPool(p)
}

// adoptPool finds a pool requested on its own (RequestPool), which no
// network may use yet and whose subnet and gateway the spec repeats.
func adoptPool(tx *store.Tx, spec Spec) (ipam.Pool, error) {
	p, err := tx.Pool(spec.ID)
	if err != nil {
		return p, errdefs.NotFound(err)
	}
	users, err := poolUsers(tx)
	if err != nil {
		return p, err
	}
	if user := users[p.Subnet]; user != requestedPoolUser {
		return p, errdefs.Conflictf("pool %s (%s) is already used by %s", p.ID, p.Subnet, user)
	}
	if spec.Subnet.IsValid() && spec.Subnet != p.Subnet {
		return p, errdefs.Invalidf("subnet %s is not pool %s's subnet %s", spec.Subnet, p.ID, p.Subnet)
	}
	if spec.Gateway.IsValid() && spec.Gateway != p.Gateway {
		return p, errdefs.Invalidf("gateway %s is not pool %s's gateway %s", spec.Gateway, p.ID, p.Gateway)
	}
	return p, nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

const requestedPoolUser = "a pool requested through IPAM"

// Used are what a subnet chosen for a network keeps clear of: the
// destinations routed on the host (of family) and the pools of its
// networks.
func (ps *Pools) Used(tx *store.Tx, family int) ([]netip.Prefix, error) {
	used, err := ps.cfg.Routes(family)
	if err != nil {
		return nil, err
	}
	taken, err := poolUsers(tx)
	for p := range taken {
		used = append(used, p)
	}
	return used, err
}

// CheckFree refuses a subnet that overlaps a pool of the host's.
func CheckFree(tx *store.Tx, subnet netip.Prefix) error {
	taken, err := poolUsers(tx)
	if err != nil {
		return err
	}
	for p, user := range taken {
		if p.Overlaps(subnet) {
			return errdefs.Conflictf("subnet %s overlaps subnet %s of %s", subnet, p, user)
		}
	}
	return nil
}

// poolUsers names, by subnet, who holds every pool: a network, or nobody
// yet for a pool requested on its own.
func poolUsers(tx *store.Tx) (map[netip.Prefix]string, error) {
	pools, err := tx.Pools()
	if err != nil {
		return nil, err
	}
	nets, err := tx.Networks()
	if err != nil {
		return nil, err
	}
	users := map[netip.Prefix]string{}
	for _, p := range pools {
		users[p.Subnet] = requestedPoolUser
		for _, n := range nets {
			if n.PoolID == p.ID || n.PoolID6 == p.ID {
				users[p.Subnet] = "network " + n.Name
			}
		}
	}
	return users, nil
}

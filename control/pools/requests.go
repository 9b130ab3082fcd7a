package pools

import (
	"fmt"
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The IPAM on its own, as Docker's IpamDriver protocol drives it: pools are
// requested before the network that uses them exists, and addresses before
// the endpoints that use them.

// Request reserves a pool of a family (v6 or not): subnet when it is
// valid (ipRange, optional, within it), or else the family's first default
// pool free of routes and other pools. Each request takes a new pool, so a
// frontend that refuses one and asks again gets another.
func (ps *Pools) Request(subnet, ipRange netip.Prefix, v6 bool) (p ipam.Pool, err error) {
	ps.cfg.Lock.Lock()
	defer ps.cfg.Lock.Unlock()
	err = ps.cfg.Store.Update(func(tx *store.Tx) (err error) {
		p, _, err = ps.choose(tx, Spec{Subnet: subnet, IPRange: ipRange}, v6)
		return err
	})
	return p, err
}

// Requested finds the requested pool of subnet that no network uses
// yet: the one a runtime requested for the network it now creates.
func (ps *Pools) Requested(subnet netip.Prefix) (ipam.Pool, error) {
	var found ipam.Pool
	err := ps.cfg.Store.View(func(tx *store.Tx) error {
		users, err := poolUsers(tx)
		if err != nil {
			return err
		}
		pools, err := tx.Pools()
		if err != nil {
			return err
		}
		for _, p := range pools {
			if p.Subnet == subnet && users[p.Subnet] == requestedPoolUser {
				found = p
				return nil
			}
		}
		return errdefs.NotFoundf("no requested pool of subnet %s is free", subnet)
	})
	return found, err
}

// Release gives back a requested pool. One that a network still uses
// goes with the network instead: a runtime may release the pool before it
// deletes the network.
func (ps *Pools) Release(id string) error {
	ps.cfg.Lock.Lock()
	defer ps.cfg.Lock.Unlock()
	return ps.cfg.Store.Update(func(tx *store.Tx) error {
		if _, err := tx.Pool(id); err != nil {
			return errdefs.NotFound(err)
		}
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range nets {
			if n.PoolID == id || n.PoolID6 == id {
				n.RequestedPool = false
				return tx.PutNetwork(n)
			}
		}
		return tx.DeletePool(id)
	})
}

// RequestAddress takes an address of a requested pool: addr when it is
// valid, the next free one otherwise. As the gateway it is the pool's
// gateway, moved to addr when one is asked for.
func (ps *Pools) RequestAddress(poolID string, addr netip.Addr, gateway bool) (netip.Prefix, error) {
	ps.cfg.Lock.Lock()
	defer ps.cfg.Lock.Unlock()
	var got netip.Prefix
	err := ps.cfg.Store.Update(func(tx *store.Tx) error {
		p, err := tx.Pool(poolID)
		if err != nil {
			return errdefs.NotFound(err)
		}
		if gateway {
			if addr.IsValid() {
				if err := p.SetGateway(addr); err != nil {
					return err
				}
			}
			got = netip.PrefixFrom(p.Gateway, p.Subnet.Bits())
			return tx.PutPool(p)
		}
		a, err := ipam.Allocate(tx, poolID, addr)
		if err != nil {
			return fmt.Errorf("pool %s: %w", p.Subnet, err)
		}
		got = netip.PrefixFrom(a, p.Subnet.Bits())
		return nil
	})
	return got, err
}

// ReleaseAddress returns an address to a requested pool; the gateway, and
// an address that is free already, need nothing.
func (ps *Pools) ReleaseAddress(poolID string, addr netip.Addr) error {
	ps.cfg.Lock.Lock()
	defer ps.cfg.Lock.Unlock()
	return ps.cfg.Store.Update(func(tx *store.Tx) error {
		if _, err := tx.Pool(poolID); err != nil {
			return errdefs.NotFound(err)
		}
		return ipam.Release(tx, poolID, addr)
	})
}

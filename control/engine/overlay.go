package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/clustersync"
	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/external"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Overlay networks live in the cluster store; each host keeps a copy of
// every one in its own store (a "mirror"), with a local pool holding the
// addresses of its own endpoints, so that everything a bridge network has
// (sandboxes, names, publishing, the maps) works on it unchanged. The
// cluster is the authority: mirrors follow it (applyCluster), and
// addresses are taken there before they are written here. Package
// clustersync follows the cluster; the engine makes and drops the mirrors
// it asks for, and takes the addresses of its own endpoints.

// errNoCluster is the answer to overlay work on a host outside a cluster.
var errNoCluster = errdefs.Invalidf("overlay networks need a cluster: start the daemon with --cluster-store and --cluster-advertise")

// createOverlay creates an overlay network in the cluster and its mirror
// here; a mirror that cannot be made takes the network out of the
// cluster again. Callers hold e.mu.
func (e *Engine) createOverlay(n store.Network, spec NetworkSpec) (store.Network, error) {
	if e.cluster == nil {
		return n, errNoCluster
	}
	switch {
	case n.EnableIPv6:
		return n, errdefs.Invalidf("overlay network %s: overlay networks are IPv4 only", n.Name)
	case spec.IPv4.IPRange.IsValid():
		return n, errdefs.Invalidf("ip range %s: overlay networks hand out their whole subnet", spec.IPv4.IPRange)
	case spec.IPv4.ID != "" || spec.Frontend != "":
		return n, errdefs.Invalidf("overlay network %s: its addresses are the cluster's, not an IPAM driver's", n.Name)
	}
	// A subnet the cluster chooses keeps clear of this host's routes and
	// networks, as a bridge network's does (pools.Pools.Choose).
	var avoid []netip.Prefix
	err := e.store.View(func(tx *store.Tx) (err error) {
		if _, err := tx.Network(n.Name); err == nil {
			return errdefs.Conflictf("network %s already exists", n.Name)
		}
		avoid, err = e.pools.Used(tx, netlink.FAMILY_V4)
		return err
	})
	if err != nil {
		return n, err
	}
	ctx := context.Background()
	cn, err := e.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: n.ID, Name: n.Name, Subnet: spec.IPv4.Subnet,
		Gateway: spec.IPv4.Gateway, Internal: n.Internal, Attachable: n.Attachable, Labels: n.Labels, Options: n.Options, Avoid: avoid})
	if err != nil {
		return n, err
	}
	mirror, err := e.mirrorOverlay(cn)
	if err != nil {
		return n, errors.Join(err, e.cluster.RemoveNetwork(ctx, cn.ID))
	}
	return mirror, nil
}

// mirrorOverlay makes the local copy of an overlay network: its record,
// its pool, its bridge and VXLAN device, its map entries. Callers hold
// e.mu.
func (e *Engine) mirrorOverlay(cn cluster.Network) (store.Network, error) {
	n := store.Network{ID: cn.ID, Name: cn.Name, Driver: store.DriverOverlay, Created: cn.Created, ICC: true,
		Masquerade: true, Internal: cn.Internal, Attachable: cn.Attachable, Labels: cn.Labels, VNI: cn.VNI, VTEP: e.cluster.Advertise()}
	if err := (overlay.Driver{}).Configure(&n, cn.Options); err != nil {
		return n, fmt.Errorf("overlay network %s: %w", cn.Name, err)
	}
	n.Options = cn.Options
	// Another host chose the subnet, clear of its own routes only: here
	// it could be the underlay's, which the bridge would take over.
	routes, err := e.hostRoutes(netlink.FAMILY_V4)
	if err != nil {
		return n, err
	}
	if i := slices.IndexFunc(routes, cn.Subnet.Overlaps); i >= 0 {
		return n, errdefs.Conflictf("overlay network %s: subnet %s overlaps route %s of this host: it cannot be used here", cn.Name, cn.Subnet, routes[i])
	}
	if n.MTU == 0 { // each host's underlay decides
		err := e.inHost(func() (err error) {
			n.MTU, err = overlay.MTU(n.VTEP)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("overlay network %s: %w", cn.Name, err)
		}
	}
	err = e.update(func(tx *store.Tx, undo *store.Undo) error {
		if other, err := tx.Network(n.Name); err == nil {
			return errdefs.Conflictf("overlay network %s: this host has a network of that name already (%s)", n.Name, other.Driver)
		}
		pool, err := ipam.NewPool(cn.Subnet, netip.Prefix{}, cn.Gateway) // no range: the whole subnet
		if err != nil {
			return fmt.Errorf("overlay network %s: %w", n.Name, err)
		}
		if err := pools.CheckFree(tx, pool.Subnet); err != nil {
			return fmt.Errorf("overlay network %s on this host: %w", n.Name, err)
		}
		pool.ID = store.NewID()
		if err := tx.PutPool(pool); err != nil {
			return err
		}
		n.Pool, n.PoolID = pool, pool.ID
		if err := e.checkDevices(tx, &n); err != nil {
			return err
		}
		if err := e.addNetwork(tx, undo, &n); err != nil {
			return err
		}
		return e.putTunnel(n, undo)
	})
	return n, err
}

// putTunnel registers the network's VXLAN device in the maps as a port
// of the network and as the way to its endpoints on other hosts, and
// attaches from_tunnel to it, so frames between this host's endpoints and
// other hosts' are delivered as a neighbour's are: past the bridge.
func (e *Engine) putTunnel(n store.Network, undo *store.Undo) error {
	var ifindex int
	err := e.inHost(func() error {
		var err error
		ifindex, err = e.wiring.AttachTunnel(n)
		return err
	})
	if err != nil {
		return err
	}
	undo.Add(func() error { return e.inHost(func() error { return e.dp.Detach(overlay.Device(n)) }) })
	if err := e.maps.PutIface(desired.Tunnel(n, ifindex)); err != nil {
		return err
	}
	undo.Add(func() error { return e.maps.DeleteIface(uint32(ifindex)) })
	m := desired.Network(n)
	m.Tunnel = uint32(ifindex)
	return e.maps.PutNetwork(m)
}

// removeOverlay takes an overlay network out of the cluster, which
// refuses while any host has endpoints on it; the caller then removes the
// mirror.
func (e *Engine) removeOverlay(n store.Network) error {
	if e.cluster == nil {
		return errNoCluster
	}
	return e.cluster.RemoveNetwork(context.Background(), n.ID)
}

// takeOverlayAddresses takes in the cluster, before the engine's lock, the
// addresses of a sandbox's endpoints on the overlay networks among refs
// (clustersync.Syncer.TakeAddresses); outside a cluster there are none.
func (e *Engine) takeOverlayAddresses(refs []string, sandbox string, aliases []string, static netip.Addr) (clustersync.Taken, func(), error) {
	if e.clusterSync == nil {
		return nil, func() {}, nil
	}
	return e.clusterSync.TakeAddresses(refs, sandbox, aliases, static)
}

// externalOverlayAddress takes in the cluster, before the engine's lock,
// the address of a runtime's endpoint on network ref when it is an
// overlay (external.Config.ClusterAddress). A runtime names its own
// endpoints: the cluster's record names none.
func (e *Engine) externalOverlayAddress(ref string, static netip.Addr) (external.Allocate, func(), error) {
	taken, done, err := e.takeOverlayAddresses([]string{ref}, "", nil, static)
	if err != nil {
		return nil, nil, err
	}
	return func(tx *store.Tx, undo *store.Undo, n store.Network, sb store.Sandbox, ep *store.Endpoint) error {
		return e.allocateOverlay(tx, undo, n, sb, ep, static, taken)
	}, done, nil
}

// allocateOverlay gives ep its address on an overlay network: the one
// taken for it before the engine's lock, or one taken in the cluster now;
// then the local pool's. undo gives it back.
func (e *Engine) allocateOverlay(tx *store.Tx, undo *store.Undo, n store.Network, sb store.Sandbox, ep *store.Endpoint, static netip.Addr, taken clustersync.Taken) error {
	if e.clusterSync == nil {
		return errNoCluster
	}
	a, release, err := e.clusterSync.Allocate(n, sb, ep, static, taken)
	if err != nil {
		return err
	}
	undo.Add(release)
	if _, err := allocateOn(tx, n, n.PoolID, a); err != nil {
		return err
	}
	ep.Addr, ep.MAC = a, driver.MACFor(a).String()
	return nil
}

// nudgeCluster asks the cluster's follower to bring the cluster in line
// with a local change (addresses of removed endpoints to give back)
// without waiting for it.
func (e *Engine) nudgeCluster() {
	if e.clusterSync != nil {
		e.clusterSync.Nudge()
	}
}

// dropMirror removes the mirror of an overlay network the cluster no
// longer has; one this host still has endpoints on stays, and says so.
// Callers hold e.mu.
func (e *Engine) dropMirror(n store.Network) error {
	var removed bool
	err := e.commit(func(tx *store.Tx) error {
		if users := tx.NetworkUsers(n.ID); len(users) > 0 {
			return errdefs.Conflictf("overlay network %s is gone from the cluster, but sandboxes here are on it: %v", n.Name, users)
		}
		removed = true
		if err := tx.DeletePool(n.PoolID); err != nil {
			return err
		}
		return tx.DeleteNetwork(n.Name)
	})
	if err != nil || !removed {
		return err
	}
	return e.dropNetwork(n)
}

// remoteRecords are the names of other hosts' endpoints on overlay
// network n, for the resolvers. Callers hold e.mu.
func (e *Engine) remoteRecords(n store.Network) []dns.Record {
	if e.clusterSync == nil {
		return nil
	}
	return e.clusterSync.RemoteRecords(n)
}

// leaveCluster stops following the cluster and leaves it.
func (e *Engine) leaveCluster() error {
	if e.cluster == nil {
		return nil
	}
	if e.clusterSync != nil {
		e.clusterSync.Stop()
	}
	return e.cluster.Close()
}

package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Names of the predefined networks, as Docker names them.
const (
	NetworkBridge = "bridge"
	NetworkHost   = "host"
	NetworkNone   = "none"
)

// ensurePredefined creates bridge, host and none on the first start. The
// default bridge takes the first default pool that overlaps no route.
func (e *Engine) ensurePredefined() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.update(func(tx *store.Tx, undo *rollback) error {
		for _, p := range []struct{ name, driver string }{
			{NetworkBridge, store.DriverBridge}, {NetworkHost, store.DriverHost}, {NetworkNone, store.DriverNull},
		} {
			if _, err := tx.Network(p.name); err == nil {
				continue
			}
			n := store.Network{ID: newID(), Name: p.name, Driver: p.driver, Created: time.Now().UTC(), Predefined: true, ICC: true, Masquerade: true}
			if p.driver == store.DriverBridge {
				n.Bridge = DefaultBridge
				if err := e.choosePool(tx, &n, NetworkSpec{}); err != nil {
					return fmt.Errorf("create default network: %w", err)
				}
			}
			if err := e.addNetwork(tx, undo, &n); err != nil {
				return err
			}
		}
		return nil
	})
}

// hostRoutes lists the IPv4 destinations routed in the dataplane namespace.
func (e *Engine) hostRoutes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := e.inHost(func() error {
		routes, err := driver.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, 0)
		})
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if p, err := netip.ParsePrefix(r.Dst.String()); err == nil && p.Bits() > 0 {
				out = append(out, p)
			}
		}
		return nil
	})
	return out, err
}

// choosePool refers n to its pool: the requested pool spec.PoolID, or a
// new one made from the spec; without a subnet that takes the first default
// pool free of routes and other pools.
func (e *Engine) choosePool(tx *store.Tx, n *store.Network, spec NetworkSpec) error {
	if spec.PoolID != "" {
		return adoptPool(tx, n, spec)
	}
	subnet := spec.Subnet
	taken, err := poolUsers(tx)
	if err != nil {
		return err
	}
	if !subnet.IsValid() {
		if spec.Gateway.IsValid() {
			return errdefs.Invalidf("gateway %s needs a subnet to lie in", spec.Gateway)
		}
		if spec.IPRange.IsValid() {
			return errdefs.Invalidf("ip range %s needs a subnet to lie in", spec.IPRange)
		}
		used, err := e.hostRoutes()
		if err != nil {
			return err
		}
		for p := range taken {
			used = append(used, p)
		}
		if subnet, err = ipam.FreeSubnet(used); err != nil {
			return err
		}
	} else {
		for p, user := range taken {
			if p.Overlaps(subnet) {
				return errdefs.Conflictf("subnet %s overlaps subnet %s of %s", subnet, p, user)
			}
		}
	}
	if n.Pool, err = ipam.NewPool(subnet, spec.IPRange, spec.Gateway); err != nil {
		return err
	}
	n.Pool.ID = newID()
	n.PoolID = n.Pool.ID
	return tx.PutPool(n.Pool)
}

// adoptPool refers n to a pool requested on its own (RequestPool), which
// no other network may use and whose subnet and gateway the spec repeats.
func adoptPool(tx *store.Tx, n *store.Network, spec NetworkSpec) error {
	p, err := tx.Pool(spec.PoolID)
	if err != nil {
		return errdefs.NotFound(err)
	}
	users, err := poolUsers(tx)
	if err != nil {
		return err
	}
	if user := users[p.Subnet]; user != requestedPoolUser {
		return errdefs.Conflictf("pool %s (%s) is already used by %s", p.ID, p.Subnet, user)
	}
	if spec.Subnet.IsValid() && spec.Subnet != p.Subnet {
		return errdefs.Invalidf("subnet %s is not pool %s's subnet %s", spec.Subnet, p.ID, p.Subnet)
	}
	if spec.Gateway.IsValid() && spec.Gateway != p.Gateway {
		return errdefs.Invalidf("gateway %s is not pool %s's gateway %s", spec.Gateway, p.ID, p.Gateway)
	}
	n.Pool, n.PoolID, n.RequestedPool = p, p.ID, true
	return nil
}

const requestedPoolUser = "a pool requested through IPAM"

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
			if n.PoolID == p.ID {
				users[p.Subnet] = "network " + n.Name
			}
		}
	}
	return users, nil
}

// CreateNetwork creates a bridge or macvlan network.
func (e *Engine) CreateNetwork(spec NetworkSpec) (store.Network, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := checkName("network", spec.Name); err != nil {
		return store.Network{}, err
	}
	n := store.Network{ID: spec.ID, Name: spec.Name, Driver: spec.Driver, Created: time.Now().UTC(),
		ICC: true, Masquerade: true, Internal: spec.Internal, Labels: spec.Labels, DNS: spec.DNS, Frontend: spec.Frontend}
	if n.ID == "" {
		n.ID = newID()
	}
	if n.Driver == "" {
		n.Driver = store.DriverBridge
	}
	if _, ok := e.drivers(n.Driver); !ok {
		if n.Driver == store.DriverHost || n.Driver == store.DriverNull || n.Driver == NetworkNone {
			return store.Network{}, errdefs.Conflictf("only one instance of the %q network is allowed, and it exists already", n.Driver)
		}
		return store.Network{}, errdefs.Invalidf("unknown driver %q (want bridge or macvlan)", spec.Driver)
	}
	if err := applyOptions(&n, spec.Options); err != nil {
		return store.Network{}, err
	}
	if !n.HostOnNetwork() && spec.Gateway.IsValid() {
		return store.Network{}, errdefs.Invalidf("gateway %s: a network in gateway mode %s has no gateway", spec.Gateway, n.GatewayMode)
	}
	err := e.update(func(tx *store.Tx, undo *rollback) error {
		if _, err := tx.Network(spec.Name); err == nil {
			return errdefs.Conflictf("network %s already exists", spec.Name)
		}
		if _, err := tx.Network(n.ID); err == nil {
			return errdefs.Conflictf("a network with ID %s already exists", n.ID)
		}
		if err := e.choosePool(tx, &n, spec); err != nil {
			return err
		}
		if err := e.checkDevices(tx, &n); err != nil {
			return err
		}
		return e.addNetwork(tx, undo, &n)
	})
	return n, err
}

// checkDevices rejects a bridge name or a macvlan parent that another
// network (or, for a bridge, any interface) already uses.
func (e *Engine) checkDevices(tx *store.Tx, n *store.Network) error {
	others, err := tx.Networks()
	if err != nil {
		return err
	}
	for _, o := range others {
		if n.Bridge != "" && o.Bridge == n.Bridge {
			return errdefs.Conflictf("bridge %s is already used by network %s", n.Bridge, o.Name)
		}
		if n.Parent != "" && o.Parent == n.Parent {
			return errdefs.Conflictf("parent interface %s is already used by macvlan network %s", n.Parent, o.Name)
		}
	}
	d, _ := e.drivers(n.Driver)
	return e.inHost(func() error { return d.Validate(*n) })
}

// addNetwork stores n and builds its kernel side and map entries,
// registering how to undo them.
func (e *Engine) addNetwork(tx *store.Tx, undo *rollback, n *store.Network) error {
	var err error
	if n.Index, err = tx.NextNetworkIndex(); err != nil {
		return err
	}
	if err := tx.PutNetwork(*n); err != nil {
		return err
	}
	if err := e.setupNetwork(n); err != nil {
		e.teardownNetwork(*n)
		return err
	}
	undo.add(func() error { return e.teardownNetwork(*n) })
	if servedByDatapath(*n) {
		if err := e.maps.PutNetwork(networkMaps(*n)); err != nil {
			return err
		}
		undo.add(func() error { return e.maps.DeleteNetwork(networkMaps(*n)) })
	}
	return nil
}

// RemoveNetwork removes a user-defined network without endpoints; a
// network a runtime's frontend created is that frontend's to remove.
func (e *Engine) RemoveNetwork(ref string) error { return e.RemoveFrontendNetwork("", ref) }

// RemoveFrontendNetwork removes a network that frontend created ("" for
// ebpfnet's own), without endpoints.
func (e *Engine) RemoveFrontendNetwork(frontend, ref string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var removed store.Network
	err := e.commit(func(tx *store.Tx) error {
		n, err := tx.Network(ref)
		if err != nil {
			return err
		}
		if n.Frontend != frontend {
			return errdefs.Conflictf("network %s belongs to %s: remove it with %s", n.Name, n.Frontend, n.Frontend)
		}
		if n.Predefined {
			return errdefs.Invalidf("%s is a pre-defined network and cannot be removed", n.Name)
		}
		if users, err := networkUsers(tx, n.ID); err != nil {
			return err
		} else if len(users) > 0 {
			return errdefs.Conflictf("network %s has active endpoints (%s): disconnect or remove them first", n.Name, strings.Join(users, ", "))
		}
		removed = n
		if n.PoolID != "" && !n.RequestedPool { // a requested pool waits for its release
			if err := tx.DeletePool(n.PoolID); err != nil {
				return err
			}
		}
		return tx.DeleteNetwork(n.Name)
	})
	if err != nil {
		return err
	}
	// The record is gone; what is left in the kernel the reconciler would
	// remove, so a failure here is reported but not rolled back.
	return errors.Join(e.teardownNetwork(removed), e.maps.DeleteNetwork(networkMaps(removed)))
}

// networkUsers names the sandboxes with an endpoint on network id.
func networkUsers(tx *store.Tx, id string) ([]string, error) {
	sbs, err := tx.Sandboxes()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			if ep.NetworkID == id {
				users = append(users, sb.Name)
			}
		}
	}
	return users, nil
}

// PruneNetworks removes every user-defined network without endpoints but
// those runtimes' frontends created.
func (e *Engine) PruneNetworks() ([]string, error) {
	var candidates []string
	err := e.store.View(func(tx *store.Tx) error {
		nets, err := tx.Networks()
		for _, n := range nets {
			if users, _ := networkUsers(tx, n.ID); !n.Predefined && n.Frontend == "" && len(users) == 0 {
				candidates = append(candidates, n.Name)
			}
		}
		return err
	})
	var removed []string
	var errs []error
	for _, name := range candidates {
		if err := e.RemoveNetwork(name); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(append(errs, err)...)
}

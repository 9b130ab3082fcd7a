package engine

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Names of the predefined networks.
const (
	NetworkBridge = api.NetworkBridge
	NetworkHost   = api.NetworkHost
	NetworkNone   = api.NetworkNone
)

// ensurePredefined creates bridge, host and none on the first start. The
// default bridge takes the first default pool that overlaps no route, and
// with Config.DefaultIPv6 an IPv6 one too.
func (e *Engine) ensurePredefined() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.update(func(tx *store.Tx, undo *store.Undo) error {
		for _, p := range []struct{ name, driver string }{
			{NetworkBridge, store.DriverBridge}, {NetworkHost, store.DriverHost}, {NetworkNone, store.DriverNull},
		} {
			if n, err := tx.Network(p.name); err == nil {
				if p.name == NetworkBridge && n.EnableIPv6 != e.cfg.DefaultIPv6 {
					// Made by an earlier start: its endpoints' addresses
					// stand, so it stays as it was made.
					e.log.Warn("the default network keeps the IPv6 setting it was made with: remove the state (ebpfnet reset) to change it",
						"network", p.name, "enableIPv6", n.EnableIPv6, "default-ipv6", e.cfg.DefaultIPv6)
				}
				continue
			}
			n := store.Network{ID: store.NewID(), Name: p.name, Driver: p.driver, Created: time.Now().UTC(), Predefined: true, ICC: true, Masquerade: true}
			if p.name == NetworkBridge {
				n.Bridge, n.EnableIPv6 = DefaultBridge, e.cfg.DefaultIPv6
				if err := e.pools.Choose(tx, &n, pools.Spec{}, pools.Spec{}); err != nil {
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

// hostRoutes lists the destinations of a family (netlink.FAMILY_V4 or
// FAMILY_V6) routed in the dataplane namespace.
func (e *Engine) hostRoutes(family int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := e.inHost(func() error {
		routes, err := driver.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(family, &netlink.Route{Table: 0}, 0)
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

// CreateNetwork creates a bridge, macvlan or overlay network.
func (e *Engine) CreateNetwork(spec NetworkSpec) (store.Network, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := store.CheckName("network", spec.Name); err != nil {
		return store.Network{}, err
	}
	n := store.Network{ID: spec.ID, Name: spec.Name, Driver: spec.Driver, Created: time.Now().UTC(),
		ICC: true, Masquerade: true, Internal: spec.Internal, Attachable: spec.Attachable, Labels: spec.Labels, DNS: spec.DNS, Frontend: spec.Frontend}
	if n.ID == "" {
		n.ID = store.NewID()
	}
	if n.Driver == "" {
		n.Driver = store.DriverBridge
	}
	if _, ok := e.drivers(n.Driver); !ok {
		if singleInstance(n.Driver) {
			return store.Network{}, errdefs.Conflictf("only one instance of the %q network is allowed, and it exists already", n.Driver)
		}
		return store.Network{}, errdefs.Invalidf("unknown driver %q (want bridge, macvlan or overlay)", spec.Driver)
	}
	if err := applyOptions(&n, spec.Options); err != nil {
		return store.Network{}, err
	}
	if spec.Frontend != "" {
		if err := n.EgressAllow.CheckPrefixesOnly(spec.Frontend + " containers"); err != nil {
			return store.Network{}, err
		}
	}
	if spec.EnableIPv6 != nil {
		// As with Docker, the flag wins over the option, which then goes:
		// inspect would show a setting the network does not have.
		n.EnableIPv6 = *spec.EnableIPv6
		if _, ok := n.Options[OptEnableIPv6]; ok {
			n.Options = maps.Clone(n.Options)
			delete(n.Options, OptEnableIPv6)
		}
	}
	if err := checkFamilies(n, spec); err != nil {
		return store.Network{}, err
	}
	if drivers.TraitsOf(n).Global {
		return e.createOverlay(n, spec)
	}
	err := e.update(func(tx *store.Tx, undo *store.Undo) error {
		if _, err := tx.Network(spec.Name); err == nil {
			return errdefs.Conflictf("network %s already exists", spec.Name)
		}
		if _, err := tx.Network(n.ID); err == nil {
			return errdefs.Conflictf("a network with ID %s already exists", n.ID)
		}
		if err := e.pools.Choose(tx, &n, spec.IPv4, spec.IPv6); err != nil {
			return err
		}
		if err := e.checkDevices(tx, &n); err != nil {
			return err
		}
		return e.addNetwork(tx, undo, &n)
	})
	return n, err
}

// checkFamilies refuses what a network's families cannot have: IPv6
// settings on an IPv4-only network, and a gateway in gateway mode
// isolated.
func checkFamilies(n store.Network, spec NetworkSpec) error {
	if !n.EnableIPv6 {
		// Docker drops the IPv6 subnet of a network without IPv6 silently
		// (moby#47202); a network without the subnet asked for is a
		// surprise, so ebpfnet refuses it.
		bad, v6 := "", spec.IPv6
		switch {
		case v6.Subnet.IsValid():
			bad = "subnet " + v6.Subnet.String()
		case v6.IPRange.IsValid():
			bad = "ip-range " + v6.IPRange.String()
		case v6.Gateway.IsValid():
			bad = "gateway " + v6.Gateway.String()
		case v6.ID != "":
			bad = "IPv6 pool " + v6.ID
		}
		if bad != "" {
			return errdefs.Invalidf("%s: the network has no IPv6 (add --ipv6, or option %s=true)", bad, OptEnableIPv6)
		}
	}
	for _, f := range []struct {
		gateway netip.Addr
		host    bool
		mode    string
	}{{spec.IPv4.Gateway, n.HostOnNetwork(), n.GatewayMode}, {spec.IPv6.Gateway, n.IPv6GatewayMode() != store.GatewayIsolated, n.GatewayMode6}} {
		if !f.host && f.gateway.IsValid() {
			return errdefs.Invalidf("--gateway %s: a network in gateway mode %s has no gateway", f.gateway, f.mode)
		}
	}
	return nil
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

// addChained stores a chained network, n, with a pool of subnet and
// gateway, and builds its kernel side (external.Config.AddNetwork).
func (e *Engine) addChained(tx *store.Tx, undo *store.Undo, n *store.Network, subnet netip.Prefix, gateway netip.Addr) error {
	if err := e.pools.Choose(tx, n, pools.Spec{Subnet: subnet, Gateway: gateway}, pools.Spec{}); err != nil {
		return err
	}
	return e.addNetwork(tx, undo, n)
}

// addNetwork stores n and builds its kernel side and map entries,
// registering how to undo them.
func (e *Engine) addNetwork(tx *store.Tx, undo *store.Undo, n *store.Network) error {
	var err error
	if n.Index, err = tx.NextNetworkIndex(); err != nil {
		return err
	}
	if err := tx.PutNetwork(*n); err != nil {
		return err
	}
	if err := e.wiring.SetupNetwork(n); err != nil {
		e.wiring.TeardownNetwork(*n)
		return err
	}
	undo.Add(func() error { return e.wiring.TeardownNetwork(*n) })
	if servedByDatapath(*n) {
		if err := e.maps.PutNetwork(desired.Network(*n)); err != nil {
			return err
		}
		undo.Add(func() error { return e.maps.DeleteNetwork(desired.Network(*n)) })
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
		if users := tx.NetworkUsers(n.ID); len(users) > 0 {
			return errdefs.Conflictf("network %s has active endpoints (%s): disconnect or remove them first", n.Name, strings.Join(users, ", "))
		}
		if drivers.TraitsOf(n).Global {
			if err := e.removeOverlay(n); err != nil {
				return err
			}
		}
		removed = n
		for _, id := range []string{n.PoolID, n.PoolID6} {
			if id != "" && !n.RequestedPool { // a requested pool waits for its release
				if err := tx.DeletePool(id); err != nil {
					return err
				}
			}
		}
		return tx.DeleteNetwork(n.Name)
	})
	if err != nil {
		return err
	}
	// An overlay network it kept from being mirrored (its subnet) may be
	// now.
	e.nudgeCluster()
	// The record is gone; what is left in the kernel the reconciler would
	// remove, so a failure here is reported but not rolled back.
	return e.dropNetwork(removed)
}

// dropNetwork takes a removed network out of the kernel and the maps: its
// devices, its entries and its subnets', and its tunnel device's entry,
// looked up before the device goes.
func (e *Engine) dropNetwork(n store.Network) error {
	var errs []error
	if dev, ok := drivers.Tunnel(n); ok {
		errs = append(errs, e.inHost(func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return nil // gone already, and with it what pointed at it
			}
			return e.maps.DeleteIface(uint32(l.Attrs().Index))
		}))
	}
	return errors.Join(append(errs, e.wiring.TeardownNetwork(n), e.maps.DeleteNetwork(desired.Network(n)))...)
}

// PruneNetworks removes every user-defined network without endpoints but
// those runtimes' frontends created.
func (e *Engine) PruneNetworks() ([]string, error) {
	var candidates []string
	err := e.store.View(func(tx *store.Tx) error {
		nets, err := tx.Networks()
		for _, n := range nets {
			if users := tx.NetworkUsers(n.ID); !n.Predefined && n.Frontend == "" && len(users) == 0 {
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

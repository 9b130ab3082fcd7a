package engine

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/bridge"
	"github.com/ebpfnet/ebpfnet/control/driver/chained"
	"github.com/ebpfnet/ebpfnet/control/driver/macvlan"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// driverFor is the driver of networks of a driver name; host and none
// (store.DriverHost, store.DriverNull) have none.
func driverFor(name string) (driver.Driver, bool) {
	switch name {
	case store.DriverBridge:
		return bridge.Driver{}, true
	case store.DriverMacvlan:
		return macvlan.Driver{}, true
	case store.DriverChained:
		return chained.Driver{}, true
	}
	return nil, false
}

// servedByDatapath reports whether the datapath serves n (driver.datapath).
func servedByDatapath(n store.Network) bool {
	d, ok := driverFor(n.Driver)
	return ok && d.Datapath()
}

// setupNetwork makes the network's host side exist (idempotent).
func (e *Engine) setupNetwork(n *store.Network) error {
	d, ok := e.drivers(n.Driver)
	if !ok {
		return nil // host and none: nothing of their own
	}
	return e.inHost(func() error { return d.Setup(n) })
}

// teardownNetwork removes the network's host side; a missing one is fine.
func (e *Engine) teardownNetwork(n store.Network) error {
	d, ok := e.drivers(n.Driver)
	if !ok {
		return nil
	}
	return e.inHost(func() error { return d.Teardown(n) })
}

// attachEndpoint creates an endpoint's interfaces with its network's
// driver, names its host side in ep, attaches the endpoint programs there
// and registers it in the maps, and configures the sandbox side. A
// runtime that moves and configures the sandbox side itself (HandOver)
// finds it in the dataplane's namespace, named ep.Interface. On failure
// it removes what it made.
func (e *Engine) attachEndpoint(n store.Network, sb store.Sandbox, ep *store.Endpoint) (err error) {
	defer func() {
		if err != nil {
			e.detachEndpoint(n, sb.NetNS, *ep)
		}
	}()
	d, ok := e.drivers(n.Driver)
	if !ok {
		return errdefs.Invalidf("driver %s has no endpoints", n.Driver)
	}
	peerNS := sb.NetNS
	if sb.HandOver {
		peerNS = e.cfg.NetNS
	}
	fd, err := unix.Open(peerNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open sandbox namespace %s: %w", peerNS, err)
	}
	defer unix.Close(fd)
	err = e.inHost(func() error {
		ifindex, err := d.Attach(n, ep, netlink.NsFd(fd))
		if err != nil || ep.HostSide == "" {
			return err
		}
		return e.attachDatapath(n, *ep, ifindex)
	})
	if err != nil || sb.HandOver {
		return err
	}
	return namespace.Do(sb.NetNS, func() error { return configureInside(n, *ep, !sb.External()) })
}

// attachDatapath puts the endpoint programs on an endpoint's host side
// (ifindex) and registers it in the maps; it runs in the dataplane's
// namespace.
func (e *Engine) attachDatapath(n store.Network, ep store.Endpoint, ifindex int) error {
	if _, err := e.dp.AttachEndpoint(ep.HostSide, ifindex); err != nil {
		return err
	}
	if err := e.maps.PutIface(ifaceMaps(n, ep, ifindex)); err != nil {
		return err
	}
	for _, m := range endpointMaps(n, ep, ifindex) {
		if err := e.maps.PutEndpoint(m); err != nil {
			return err
		}
	}
	return nil
}

// configureInside runs in the sandbox: IPv6 off, address, link up, and a
// default route through the network's gateway when the sandbox has none
// yet. IPv6 goes off in the whole namespace when it is ebpfnet's own, and
// on the endpoint's interface alone in a runtime's (CNI), whose other
// interfaces are not ebpfnet's to change.
func configureInside(n store.Network, ep store.Endpoint, ownNamespace bool) error {
	// Again here, not only when the namespace is made: a sandbox made by
	// an ebpfnet that left IPv6 on loses it when the reconciler refreshes
	// its endpoints. Before the link comes up, so it never has an address.
	err := namespace.DisableIPv6On(ep.Interface)
	if ownNamespace {
		err = namespace.DisableIPv6()
	}
	if err != nil {
		return err
	}
	l, err := netlink.LinkByName(ep.Interface)
	if err != nil {
		return fmt.Errorf("look up %s in sandbox: %w", ep.Interface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ep.Addr.AsSlice(), Mask: net.CIDRMask(n.Pool.Subnet.Bits(), 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", ep.Addr, ep.Interface, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", ep.Interface, err)
	}
	if n.Internal {
		return nil // an internal network leads nowhere
	}
	routes, err := driver.Dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list routes in sandbox: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			return nil // one default route is enough; the first network keeps it
		}
	}
	gw := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: n.Pool.Gateway.AsSlice()}
	if err := netlink.RouteReplace(gw); err != nil {
		return fmt.Errorf("add default route via %s: %w", n.Pool.Gateway, err)
	}
	return nil
}

// detachEndpoint removes an endpoint's interfaces and map entries, best
// effort: it keeps going and joins its errors. The programs leave the host
// side here; the driver removes what it made, the host side included.
func (e *Engine) detachEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) error {
	var errs []error
	if ep.HostSide != "" {
		errs = append(errs, e.inHost(func() error { return e.detachHostSide(ep.HostSide) }))
		for _, a := range endpointAddrs(ep) {
			errs = append(errs, e.maps.DeleteEndpoint(a))
		}
	}
	if d, ok := e.drivers(n.Driver); ok {
		errs = append(errs, e.inHost(func() error { return d.Detach(n, sandboxNS, ep) }))
	}
	return errors.Join(errs...)
}

// detachHostSide detaches programs from a host side and forgets it in the
// maps.
func (e *Engine) detachHostSide(name string) error {
	var errs []error
	if l, err := netlink.LinkByName(name); err == nil {
		errs = append(errs, e.maps.DeleteIface(uint32(l.Attrs().Index)))
	}
	return errors.Join(append(errs, e.dp.Detach(name))...)
}

// ensureDefaultRoute gives a sandbox a default route through the first of
// its networks that offers one, if it has lost its own (after a disconnect).
func ensureDefaultRoute(sandboxNS string, eps []store.Endpoint, networks map[string]store.Network) error {
	return namespace.Do(sandboxNS, func() error {
		for _, ep := range eps {
			n := networks[ep.NetworkID]
			if n.Internal {
				continue
			}
			return configureInside(n, ep, true)
		}
		return nil
	})
}

// ownedLinks lists the dataplane namespace's interfaces that carry an
// ebpfnet alias, by alias.
func (e *Engine) ownedLinks() (map[string]string, error) {
	owned := map[string]string{}
	err := e.inHost(func() error {
		links, err := driver.Dump(netlink.LinkList)
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			if a := l.Attrs().Alias; strings.HasPrefix(a, driver.AliasPrefix) {
				owned[a] = l.Attrs().Name
			}
		}
		return nil
	})
	return owned, err
}

package engine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// servedByDatapath reports whether the datapath serves n.
func servedByDatapath(n store.Network) bool { return drivers.TraitsOf(n).Datapath }

// singleInstance reports whether a driver's network is the one of its
// kind the engine makes (host and none): one more is refused.
func singleInstance(driverName string) bool {
	return driverName == store.DriverHost || driverName == store.DriverNull || driverName == NetworkNone
}

// tunnelDevice is the name of the device that carries a network's frames
// to its endpoints on other hosts, if it has one: an overlay's VXLAN device.
func tunnelDevice(n store.Network) (string, bool) {
	if d, ok := drivers.For(n.Driver); ok {
		return d.Tunnel(n)
	}
	return "", false
}

// setupNetwork makes the network's host side exist (idempotent).
func (e *Engine) setupNetwork(n *store.Network) error {
	d, ok := e.drivers(n.Driver)
	if !ok {
		return nil // host and none: nothing of their own
	}
	return e.inHost(func() error { return d.Setup(n) })
}

// teardownNetwork removes the network's host side, its tunnel's programs
// included; a missing one is fine.
func (e *Engine) teardownNetwork(n store.Network) error {
	d, ok := e.drivers(n.Driver)
	if !ok {
		return nil
	}
	return e.inHost(func() error {
		var errs []error
		if dev, ok := tunnelDevice(n); ok {
			errs = append(errs, e.dp.Detach(dev))
		}
		return errors.Join(append(errs, d.Teardown(n))...)
	})
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
		return e.attachDatapath(n, sb, *ep, ifindex)
	})
	if err != nil || sb.HandOver {
		return err
	}
	lo6 := ep.Addr6.IsValid() || hasIPv6(sb.Endpoints)
	return namespace.Do(sb.NetNS, func() error { return configureInside(n, *ep, !sb.External(), lo6) })
}

// hasIPv6 reports whether any of a sandbox's endpoints has an IPv6
// address: then its loopback has IPv6 (::1) too.
func hasIPv6(eps []store.Endpoint) bool {
	return slices.ContainsFunc(eps, func(ep store.Endpoint) bool { return ep.Addr6.IsValid() })
}

// attachPrograms puts the endpoint programs on a host side (ifindex), in
// the dataplane's namespace, and lets the datapath route IPv6 from it:
// the kernel's FIB lookup for BPF answers only for an input interface that
// forwards, and the replies of IPv6 clients of IPv4-only sandboxes are
// routed from there.
func (e *Engine) attachPrograms(hostSide string, ifindex int) error {
	if _, err := e.dp.AttachEndpoint(hostSide, ifindex); err != nil {
		return err
	}
	return namespace.ForwardIPv6On(hostSide)
}

// attachDatapath puts the endpoint programs on an endpoint's host side
// (ifindex) and registers it in the maps; it runs in the dataplane's
// namespace.
func (e *Engine) attachDatapath(n store.Network, sb store.Sandbox, ep store.Endpoint, ifindex int) error {
	e.awaitFlush(endpointAddrs(ep))
	if err := e.attachPrograms(ep.HostSide, ifindex); err != nil {
		return err
	}
	if err := e.maps.PutIface(ifaceMaps(n, sb, ep, ifindex)); err != nil {
		return err
	}
	for _, m := range endpointMaps(n, ep, ifindex) {
		if err := e.maps.PutEndpoint(m); err != nil {
			return err
		}
	}
	return nil
}

// configureInside runs in the sandbox: IPv6 on the endpoint's interface
// on a dual-stack network and off on any other, the addresses, link up,
// and a default route per family through the network's gateway when the
// sandbox has none yet. In ebpfnet's own namespace it also keeps IPv6 off
// on interfaces still to come and sets it on lo as lo6 says; in a
// runtime's (CNI) it changes the endpoint's interface alone, the others
// being not ebpfnet's to change.
func configureInside(n store.Network, ep store.Endpoint, ownNamespace, lo6 bool) error {
	// Again here, not only when the namespace is made: a sandbox made by
	// an ebpfnet that left IPv6 on loses it when the reconciler refreshes
	// its endpoints. Before the link comes up, so that an interface of an
	// IPv4-only network never has an IPv6 address, not even a link-local
	// one: a path the datapath would not fence.
	err := setIPv6(ep.Addr6.IsValid(), ep.Interface)
	if ownNamespace && err == nil {
		err = errors.Join(namespace.DisableIPv6On("default"), setIPv6(lo6, "lo"))
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
	if ep.Addr6.IsValid() {
		// No duplicate address detection: IPAM made the address unique,
		// and a tentative one could not be used for a second or so.
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ep.Addr6.AsSlice(), Mask: net.CIDRMask(n.Pool6.Subnet.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("set address %s on %s: %w", ep.Addr6, ep.Interface, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", ep.Interface, err)
	}
	if err := readyForXDP(n, ep.Interface); err != nil {
		return err
	}
	for _, gw := range []netip.Addr{n.DefaultGateway(false), n.DefaultGateway(true)} {
		if gw.IsValid() && (gw.Is4() || ep.Addr6.IsValid()) {
			if err := defaultRoute(l, gw); err != nil {
				return err
			}
		}
	}
	return nil
}

// readyForXDP turns GRO on on a bridge endpoint's sandbox side (ifname,
// in the calling thread's namespace), once it is up. A veth takes the
// frames XDP redirects to its peer only in NAPI mode, which GRO turns on
// without running an XDP program on every packet it receives, but only
// when turned on while the interface is up (Linux 6.18 keeps NAPI off for
// GRO set before). The uplinks' fast path delivers only to endpoints made
// so (maps.Iface.XDPTarget). GRO is on whatever the uplink mode, so that a
// daemon started in another mode finds every endpoint ready.
func readyForXDP(n store.Network, ifname string) error {
	if !drivers.TraitsOf(n).XDPTarget {
		return nil
	}
	return driver.TurnGROOn(ifname)
}

// setIPv6 turns IPv6 on or off on an interface of the calling thread's
// namespace.
func setIPv6(on bool, ifname string) error {
	if on {
		return namespace.EnableIPv6On(ifname)
	}
	return namespace.DisableIPv6On(ifname)
}

// defaultRoute routes gw's family by default through gw on l, unless the
// namespace has a default route of that family already: the first network
// keeps it.
func defaultRoute(l netlink.Link, gw netip.Addr) error {
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := driver.Dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, family) })
	if err != nil {
		return fmt.Errorf("list routes in sandbox: %w", err)
	}
	if slices.ContainsFunc(routes, isDefault) {
		return nil
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// isDefault reports whether r is a default route (0.0.0.0/0 or ::/0).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// removeEndpoint removes an endpoint for good (a sandbox removed, a
// network disconnected, a runtime's Leave or DEL): detachEndpoint, and its
// flows' conntrack entries go too, so that the next endpoint on its
// addresses starts with none. A repair detaches without it: the endpoint's
// flows move to its new veth (ct_owner).
func (e *Engine) removeEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) error {
	err := e.detachEndpoint(n, sandboxNS, ep)
	e.flushConntrack(endpointAddrs(ep))
	return err
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

// ensureDefaultRoute gives a sandbox a default route per family through
// the first of its networks that offers one, if it has lost its own, and
// IPv6 on lo only while an endpoint has it (after a disconnect).
func ensureDefaultRoute(sandboxNS string, eps []store.Endpoint, networks map[string]store.Network) error {
	return namespace.Do(sandboxNS, func() error {
		lo6 := hasIPv6(eps)
		errs := []error{setIPv6(lo6, "lo")}
		for _, ep := range eps {
			errs = append(errs, configureInside(networks[ep.NetworkID], ep, true, lo6))
		}
		return errors.Join(errs...)
	})
}

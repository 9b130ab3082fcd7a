package wiring

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
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// HasIPv6 reports whether any of a sandbox's endpoints has an IPv6
// address: then its loopback has IPv6 (::1) too.
func HasIPv6(eps []store.Endpoint) bool {
	return slices.ContainsFunc(eps, func(ep store.Endpoint) bool { return ep.Addr6.IsValid() })
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
	if slices.ContainsFunc(routes, IsDefaultRoute) {
		return nil
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// IsDefaultRoute reports whether r is a default route (0.0.0.0/0 or ::/0).
func IsDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
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
	if err := knowGateways(n, ep, l); err != nil {
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

// knowGateways gives the sandbox side of an endpoint on a network whose
// gateways are ebpfnet's bridge a permanent neighbour entry for each:
// the bridge's MAC is fixed (driver.GatewayMAC), so the entry never goes
// stale, and a permanent entry is outside the kernel's neighbour garbage
// collection, whose thresholds (gc_thresh3: 1,024 by default) every
// namespace of the host shares. Learnt by ARP, a thousand sandboxes'
// gateways filled them, and the kernel evicted and refused entries.
func knowGateways(n store.Network, ep store.Endpoint, l netlink.Link) error {
	if traits := drivers.TraitsOf(n); !traits.Datapath || traits.StackRoutes {
		return nil // the gateway is another's (a router's, another plugin's)
	}
	for _, gw := range []netip.Addr{n.Gateway(false), n.Gateway(true)} {
		if !gw.IsValid() || gw.Is6() && !ep.Addr6.IsValid() {
			continue
		}
		family := netlink.FAMILY_V4
		if gw.Is6() {
			family = netlink.FAMILY_V6
		}
		neigh := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: driver.GatewayMAC(n)}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("set gateway %s's MAC on %s: %w", gw, ep.Interface, err)
		}
	}
	return nil
}

// EnsureDefaultRoute gives a sandbox a default route per family through
// the first of its networks that offers one, if it has lost its own, and
// IPv6 on lo only while an endpoint has it (after a disconnect).
func EnsureDefaultRoute(sandboxNS string, eps []store.Endpoint, networks map[string]store.Network) error {
	return namespace.Do(sandboxNS, func() error {
		lo6 := HasIPv6(eps)
		errs := []error{setIPv6(lo6, "lo")}
		for _, ep := range eps {
			errs = append(errs, configureInside(networks[ep.NetworkID], ep, true, lo6))
		}
		return errors.Join(errs...)
	})
}

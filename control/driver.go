package control

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Aliases mark kernel objects as ebpfnet's, naming the record they belong to.
const (
	aliasPrefix   = "ebpfnet:"
	aliasNetwork  = aliasPrefix + "network:"
	aliasEndpoint = aliasPrefix + "endpoint:"
)

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// macFor derives a MAC from an IPv4 address as Docker does: 02:42 + the address.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// setupNetwork makes the network's host side exist (idempotent); it runs in
// the dataplane's namespace.
func (e *Engine) setupNetwork(n *store.Network) error {
	switch n.Driver {
	case store.DriverBridge:
		return e.inHost(func() error { return setupBridge(n) })
	case store.DriverMacvlan:
		return e.inHost(func() error { return checkParent(n.Parent) })
	}
	return nil
}

func setupBridge(n *store.Network) error {
	l, err := netlink.LinkByName(n.Bridge)
	if isNotFound(err) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = n.Bridge
		attrs.MTU = n.MTU
		// A fixed MAC: a bridge would otherwise take its ports' lowest, and
		// the datapath sources the frames it delivers from this one.
		attrs.HardwareAddr = macFor(n.Pool.Gateway)
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		if l, err = netlink.LinkByName(n.Bridge); err == nil {
			err = netlink.LinkSetAlias(l, aliasNetwork+n.ID)
		}
		if err != nil {
			netlink.LinkDel(&netlink.Bridge{LinkAttrs: attrs})
			return fmt.Errorf("label bridge %s: %w", n.Bridge, err)
		}
	} else if err != nil {
		return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	} else if alias := l.Attrs().Alias; alias != aliasNetwork+n.ID {
		if strings.HasPrefix(alias, aliasPrefix) {
			return errdefs.Conflictf("interface %s was left by an ebpfnet state that is gone: delete it (ip link del %s)", n.Bridge, n.Bridge)
		}
		return errdefs.Conflictf("interface %s exists and is not this network's bridge", n.Bridge)
	}
	if err := setBridgeAddress(n, l); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", n.Bridge, err)
	}
	// Routing between networks and to the outside needs forwarding, as with
	// Docker; isolation is the endpoint programs' job, not the stack's.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// setBridgeAddress gives the bridge the gateway address, or, in gateway
// mode isolated, takes every IPv4 address away: without one the host has
// no route to the sandboxes and answers none of their packets.
func setBridgeAddress(n *store.Network, l netlink.Link) error {
	if n.HostOnNetwork() {
		gw := &netlink.Addr{IPNet: &net.IPNet{IP: n.Pool.Gateway.AsSlice(), Mask: net.CIDRMask(n.Pool.Subnet.Bits(), 32)}}
		if err := netlink.AddrReplace(l, gw); err != nil {
			return fmt.Errorf("set address %s on bridge %s: %w", n.Pool.Gateway, n.Bridge, err)
		}
		return nil
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of bridge %s: %w", n.Bridge, err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove address %s from isolated bridge %s: %w", a.IPNet, n.Bridge, err)
		}
	}
	return nil
}

func checkParent(parent string) error {
	if _, err := netlink.LinkByName(parent); err != nil {
		if isNotFound(err) {
			return errdefs.Invalidf("parent interface %s does not exist", parent)
		}
		return fmt.Errorf("look up parent interface %s: %w", parent, err)
	}
	return nil
}

// teardownNetwork removes the network's host side; a missing one is fine.
func (e *Engine) teardownNetwork(n store.Network) error {
	if n.Driver != store.DriverBridge {
		return nil
	}
	return e.inHost(func() error { return deleteLink(n.Bridge) })
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}

// networkMaps is what the datapath knows of a bridge network.
func networkMaps(n store.Network) maps.Network {
	m := maps.Network{Index: n.Index, Subnet: n.Pool.Subnet, Gateway: n.Pool.Gateway, GatewayMAC: macFor(n.Pool.Gateway),
		ICCDisabled: !n.ICC, Internal: n.Internal, Masquerade: n.Masquerade}
	switch n.IPv4GatewayMode() {
	case store.GatewayNATUnprotected:
		m.Direct = maps.DirectAll
	case store.GatewayRouted:
		m.Direct = maps.DirectPublished
	case store.GatewayIsolated:
		// No host address on the network: the datapath must not treat the
		// pool's reserved gateway address as the host (icc=false lets
		// sandboxes reach the gateway).
		m.Gateway = netip.IPv4Unspecified()
	}
	return m
}

// endpointMaps is where the datapath delivers packets for a bridge endpoint
// whose host side has ifindex.
func endpointMaps(n store.Network, ep store.Endpoint, ifindex int) maps.Endpoint {
	return maps.Endpoint{Addr: ep.Addr, Ifindex: uint32(ifindex), Network: n.Index, MAC: macFor(ep.Addr)}
}

// attachEndpoint creates an endpoint's interfaces, configures the sandbox
// side and, for bridge endpoints, attaches the endpoint programs and
// registers the host side in the maps. On failure it removes what it made.
func (e *Engine) attachEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) (err error) {
	defer func() {
		if err != nil {
			e.detachEndpoint(n, sandboxNS, ep)
		}
	}()
	fd, err := unix.Open(sandboxNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open sandbox namespace %s: %w", sandboxNS, err)
	}
	defer unix.Close(fd)
	mac := macFor(ep.Addr)
	err = e.inHost(func() error {
		switch n.Driver {
		case store.DriverBridge:
			return e.createVeth(n, ep, mac, fd)
		case store.DriverMacvlan:
			return createMacvlan(n, ep, mac, fd)
		}
		return fmt.Errorf("driver %s has no endpoints", n.Driver)
	})
	if err != nil {
		return err
	}
	return namespace.Do(sandboxNS, func() error { return configureInside(n, ep) })
}

func (e *Engine) createVeth(n store.Network, ep store.Endpoint, mac net.HardwareAddr, sandboxFD int) error {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %s of network %s: %w", n.Bridge, n.Name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostSide
	attrs.MTU = n.MTU
	attrs.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: ep.Interface, PeerHardwareAddr: mac,
		PeerNamespace: netlink.NsFd(sandboxFD), PeerMTU: uint32(n.MTU)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s for %s: %w", ep.HostSide, ep.Interface, err)
	}
	host, err := netlink.LinkByName(ep.HostSide)
	if err != nil {
		return fmt.Errorf("look up veth %s: %w", ep.HostSide, err)
	}
	if err := netlink.LinkSetAlias(host, aliasEndpoint+ep.ID); err != nil {
		return fmt.Errorf("label veth %s: %w", ep.HostSide, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring veth %s up: %w", ep.HostSide, err)
	}
	ifindex := host.Attrs().Index
	if _, err := e.dp.AttachEndpoint(ep.HostSide, ifindex); err != nil {
		return err
	}
	if err := e.maps.PutIface(maps.Iface{Ifindex: uint32(ifindex), Network: n.Index, Addr: ep.Addr}); err != nil {
		return err
	}
	return e.maps.PutEndpoint(endpointMaps(n, ep, ifindex))
}

func createMacvlan(n store.Network, ep store.Endpoint, mac net.HardwareAddr, sandboxFD int) error {
	parent, err := netlink.LinkByName(n.Parent)
	if err != nil {
		return fmt.Errorf("look up parent interface %s of network %s: %w", n.Parent, n.Name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.Interface
	attrs.MTU = n.MTU
	attrs.ParentIndex = parent.Attrs().Index
	attrs.HardwareAddr = mac
	attrs.Namespace = netlink.NsFd(sandboxFD)
	if err := netlink.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		return fmt.Errorf("create macvlan %s on %s: %w", ep.Interface, n.Parent, err)
	}
	return nil
}

// configureInside runs in the sandbox: IPv6 off, address, link up, and a
// default route through the network's gateway when the sandbox has none yet.
func configureInside(n store.Network, ep store.Endpoint) error {
	// Again here, not only when the namespace is made: a sandbox made by
	// an ebpfnet that left IPv6 on loses it when the reconciler refreshes
	// its endpoints.
	if err := disableIPv6(); err != nil {
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
	routes, err := dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
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

// disableIPv6 turns IPv6 off in the calling thread's namespace (which
// /proc/sys/net follows), as Docker does for a container on IPv4-only
// networks. Left on, every interface takes a link-local fe80:: address: a
// path to the neighbours and the bridge that the IPv4 datapath neither
// sees nor fences (icc=false, internal and isolated networks). "all" turns
// it off on the interfaces there are, "default" on those still to come.
func disableIPv6() error {
	for _, conf := range []string{"default", "all"} {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0o644)
		if errors.Is(err, os.ErrNotExist) {
			return nil // a kernel without IPv6: nothing to turn off
		}
		if err != nil {
			return fmt.Errorf("disable IPv6: %w", err) // the error names the file
		}
	}
	return nil
}

// detachEndpoint removes an endpoint's interfaces and map entries, best
// effort: it keeps going and joins its errors.
func (e *Engine) detachEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) error {
	var errs []error
	if n.Driver == store.DriverBridge || ep.HostSide != "" {
		errs = append(errs, e.inHost(func() error { return e.removeHostSide(ep.HostSide) }), e.maps.DeleteEndpoint(ep.Addr))
	}
	if n.Driver == store.DriverMacvlan && namespace.IsNamespace(sandboxNS) {
		errs = append(errs, namespace.Do(sandboxNS, func() error { return deleteLink(ep.Interface) }))
	}
	return errors.Join(errs...)
}

// removeHostSide detaches programs from a host-side veth, forgets it in the
// maps and deletes it (its peer in the sandbox goes with it).
func (e *Engine) removeHostSide(name string) error {
	var errs []error
	if l, err := netlink.LinkByName(name); err == nil {
		errs = append(errs, e.maps.DeleteIface(uint32(l.Attrs().Index)))
	}
	errs = append(errs, e.dp.Detach(name), deleteLink(name))
	return errors.Join(errs...)
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
			return configureInside(n, ep)
		}
		return nil
	})
}

// ownedLinks lists the dataplane namespace's interfaces that carry an
// ebpfnet alias, by alias.
func (e *Engine) ownedLinks() (map[string]string, error) {
	owned := map[string]string{}
	err := e.inHost(func() error {
		links, err := dump(netlink.LinkList)
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			if a := l.Attrs().Alias; strings.HasPrefix(a, aliasPrefix) {
				owned[a] = l.Attrs().Name
			}
		}
		return nil
	})
	return owned, err
}

// dump runs a netlink list, again when the kernel interrupted it because
// the list changed meanwhile (netlink.ErrDumpInterrupted).
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for try := 1; ; try++ {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 5 {
			return out, err
		}
	}
}

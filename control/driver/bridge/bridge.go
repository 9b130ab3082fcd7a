package bridge

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver makes a network a Linux bridge holding the gateway address,
// and an endpoint a veth pair from the bridge into the sandbox. The
// Datapath serves it: the endpoint programs sit on each veth's host side.
type Driver struct{}

// options are the bridge driver's, named as Docker's bridge driver names
// them, and the source lists of its published ports.
var options = append([]driver.Option{
	{Key: driver.OptBridgeName, Set: func(n *store.Network, v string) error {
		n.Bridge = v
		return driver.CheckIfname(v)
	}},
	{Key: driver.OptEnableICC, Set: func(n *store.Network, v string) (err error) {
		n.ICC, err = driver.ParseBool(v)
		return err
	}},
	{Key: driver.OptMasquerade, Set: func(n *store.Network, v string) (err error) {
		n.Masquerade, err = driver.ParseBool(v)
		return err
	}},
	gatewayMode(driver.OptGatewayMode, func(n *store.Network) *string { return &n.GatewayMode }),
	gatewayMode(driver.OptGatewayMode6, func(n *store.Network) *string { return &n.GatewayMode6 }),
	driver.EnableIPv6,
	driver.MTU,
	driver.Egress,
}, driver.PublishSources...)

// gatewayMode is the option of one family's gateway mode, kept in the
// field mode finds.
func gatewayMode(key string, mode func(*store.Network) *string) driver.Option {
	return driver.Option{Key: key, Set: func(n *store.Network, v string) error {
		modes := []string{store.GatewayNAT, store.GatewayNATUnprotected, store.GatewayRouted, store.GatewayIsolated}
		if !slices.Contains(modes, v) {
			return fmt.Errorf("unknown gateway mode %q (valid: %s)", v, strings.Join(modes, ", "))
		}
		*mode(n) = v
		return nil
	}}
}

// Configure names the bridge after the network unless an option did.
func (Driver) Configure(n *store.Network, opts map[string]string) error {
	if err := driver.ApplyOptions(n, opts, options); err != nil {
		return err
	}
	if err := checkGatewayMode(n, opts); err != nil {
		return err
	}
	if n.Bridge == "" {
		n.Bridge = "eb-" + n.ID[:min(12, len(n.ID))]
	}
	return nil
}

// checkGatewayMode applies what the gateway modes imply for the other
// settings, once every option is read (map order is random). It is the
// one place that refuses an isolated network that is not internal: every
// way a bridge network is made configures it here.
func checkGatewayMode(n *store.Network, opts map[string]string) error {
	for _, m := range []struct{ key, mode string }{{driver.OptGatewayMode, n.GatewayMode}, {driver.OptGatewayMode6, n.GatewayMode6}} {
		if m.mode == store.GatewayIsolated && !n.Internal {
			return errdefs.Invalidf("option %s=%s needs --internal: an isolated network has no gateway, so it leads nowhere", m.key, m.mode)
		}
		// Routed means the outside sees sandboxes by their own addresses:
		// masquerading them would undo the mode, so asking for both is a
		// mistake rather than a preference.
		if m.mode == store.GatewayRouted && n.Masquerade && opts[driver.OptMasquerade] != "" {
			return errdefs.Invalidf("option %s=%s conflicts with %s=%s: a routed network is not masqueraded",
				driver.OptMasquerade, opts[driver.OptMasquerade], m.key, m.mode)
		}
	}
	// Its published ports are reached at the sandboxes' own addresses too,
	// which source lists do not guard.
	if !n.PublishSources.Empty() && (n.GatewayMode == store.GatewayRouted || n.GatewayMode6 == store.GatewayRouted) {
		return errdefs.Invalidf("options %s and %s conflict with gateway mode %s: its published ports are also reached at the sandboxes' own addresses, which the lists do not guard",
			driver.OptPublishAllow, driver.OptPublishDeny, store.GatewayRouted)
	}
	// Masquerade is IPv4's; IPv6's follows from the option and the IPv6
	// gateway mode (driver.MasqueradeIPv6).
	if n.GatewayMode == store.GatewayRouted {
		n.Masquerade = false
	}
	return nil
}

func (Driver) Validate(n store.Network) error {
	if _, err := netlink.LinkByName(n.Bridge); err == nil {
		return errdefs.Conflictf("interface %s already exists: choose another %s", n.Bridge, driver.OptBridgeName)
	}
	return nil
}

func (Driver) Traits() driver.Traits {
	return driver.Traits{Datapath: true, XDPTarget: true, OwnMAC: true, OwnAddresses: true}
}

func (Driver) Tunnel(store.Network) (string, bool) { return "", false }

// Inspect shows the bridge options Docker's inspect shows.
func (Driver) Inspect(n store.Network, options map[string]string) {
	options[driver.OptBridgeName] = n.Bridge
	options[driver.OptEnableICC] = fmt.Sprint(n.ICC)
	// Docker lists the mode only when it was chosen, nat included.
	if n.GatewayMode != "" {
		options[driver.OptGatewayMode] = n.GatewayMode
	}
	if n.GatewayMode6 != "" {
		options[driver.OptGatewayMode6] = n.GatewayMode6
	}
}

func (Driver) Setup(n *store.Network) error {
	l, err := netlink.LinkByName(n.Bridge)
	if driver.IsNotFound(err) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = n.Bridge
		attrs.MTU = n.MTU
		// A fixed MAC: a bridge would otherwise take its ports' lowest, and
		// the datapath sources the frames it delivers from this one.
		attrs.HardwareAddr = driver.GatewayMAC(*n)
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		if l, err = netlink.LinkByName(n.Bridge); err == nil {
			err = netlink.LinkSetAlias(l, driver.AliasNetwork+n.ID)
		}
		if err != nil {
			netlink.LinkDel(&netlink.Bridge{LinkAttrs: attrs})
			return fmt.Errorf("label bridge %s: %w", n.Bridge, err)
		}
	} else if err != nil {
		return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	} else if alias := l.Attrs().Alias; alias != driver.AliasNetwork+n.ID {
		if strings.HasPrefix(alias, driver.AliasPrefix) {
			return errdefs.Conflictf("interface %s was left by an ebpfnet state that is gone: delete it (ip link del %s)", n.Bridge, n.Bridge)
		}
		return errdefs.Conflictf("interface %s exists and is not this network's bridge", n.Bridge)
	}
	if err := setBridgeAddress(n, l); err != nil {
		return err
	}
	if err := setBridgeIPv6(n, l); err != nil {
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
	addrs, err := driver.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
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

// setBridgeIPv6 gives the bridge of a dual-stack network IPv6 and the IPv6
// gateway address, and takes IPv6 away from every other bridge (IPv4-only,
// or in IPv6 gateway mode isolated), as Docker does for isolated: there a
// link-local address alone would be a path to the host that nothing
// fences.
func setBridgeIPv6(n *store.Network, l netlink.Link) error {
	if !n.HostOnNetwork6() {
		return namespace.DisableIPv6On(n.Bridge)
	}
	if err := namespace.EnableIPv6On(n.Bridge); err != nil {
		return err
	}
	// No duplicate address detection: the subnet is the network's own, and
	// a tentative gateway would drop the sandboxes' first packets.
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: n.Pool6.Gateway.AsSlice(), Mask: net.CIDRMask(n.Pool6.Subnet.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(l, gw); err != nil {
		return fmt.Errorf("set address %s on bridge %s: %w", n.Pool6.Gateway, n.Bridge, err)
	}
	// As ip_forward for IPv4 (Docker does the same): the datapath's FIB
	// lookups answer only where forwarding is on.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv6 forwarding: %w", err)
	}
	return nil
}

func (Driver) Teardown(n store.Network) error { return driver.DeleteLink(n.Bridge) }

// Attach creates the veth pair on the bridge, its peer in the sandbox.
func (Driver) Attach(n store.Network, ep *store.Endpoint, sandbox netlink.NsFd) (int, error) {
	ep.HostSide = driver.HostSidePrefix + ep.ID[:12]
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return 0, fmt.Errorf("look up bridge %s of network %s: %w", n.Bridge, n.Name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostSide
	attrs.MTU = n.MTU
	attrs.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: ep.Interface, PeerHardwareAddr: driver.EndpointMAC(*ep),
		PeerNamespace: sandbox, PeerMTU: uint32(n.MTU)}
	if err := netlink.LinkAdd(veth); err != nil {
		return 0, fmt.Errorf("create veth %s for %s: %w", ep.HostSide, ep.Interface, err)
	}
	host, err := netlink.LinkByName(ep.HostSide)
	if err != nil {
		return 0, fmt.Errorf("look up veth %s: %w", ep.HostSide, err)
	}
	if err := netlink.LinkSetAlias(host, driver.AliasEndpoint+ep.ID); err != nil {
		return 0, fmt.Errorf("label veth %s: %w", ep.HostSide, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return 0, fmt.Errorf("bring veth %s up: %w", ep.HostSide, err)
	}
	return host.Attrs().Index, nil
}

// Detach deletes the host side; the peer in the sandbox goes with it.
func (Driver) Detach(_ store.Network, _ string, ep store.Endpoint) error {
	return driver.DeleteLink(ep.HostSide)
}

// Check fails when the host side is gone or hangs off another bridge.
func (Driver) Check(n store.Network, ep store.Endpoint) error {
	_, err := driver.HostSideOnBridge(ep.HostSide, n.Bridge)
	return err
}

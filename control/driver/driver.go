package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver options, named as Docker names them so existing scripts carry over.
const (
	OptBridgeName   = "com.docker.network.bridge.name"
	OptEnableICC    = "com.docker.network.bridge.enable_icc"
	OptMasquerade   = "com.docker.network.bridge.enable_ip_masquerade"
	OptMTU          = "com.docker.network.driver.mtu"
	OptGatewayMode  = api.OptGatewayMode
	OptGatewayMode6 = api.OptGatewayMode6
	// OptEnableIPv6 is Docker's option form of --ipv6, which
	// default-network-opts can set for every network of a driver.
	OptEnableIPv6  = "com.docker.network.enable_ipv6"
	OptParent      = "parent"
	OptMacvlanMode = "macvlan_mode"
	// OptPublishAllow and OptPublishDeny are ebpfnet's: the source lists
	// of the ports published on the network.
	OptPublishAllow = api.OptPublishAllow
	OptPublishDeny  = api.OptPublishDeny
	OptBalance      = api.OptBalance
	OptEgressAllow  = api.OptEgressAllow
)

// A Driver builds one kind of network in the kernel: the network's host
// side and its endpoints' links. It does netlink work only; the engine
// puts the datapath's programs on an endpoint's host side and writes the
// maps. Methods that touch the kernel run in the dataplane's namespace
// (the engine enters it) and enter a sandbox's themselves.
type Driver interface {
	// Configure records a new network's driver options (Opt…) on it,
	// refusing those the driver does not own, and completes and checks
	// its settings, without looking at the kernel.
	Configure(n *store.Network, opts map[string]string) error
	// Validate refuses a new network whose devices the kernel cannot give
	// it, before anything is set up.
	Validate(n store.Network) error
	// Traits are what sets the driver's networks apart from others'.
	Traits() Traits
	// Tunnel names the device that carries the network's frames to its
	// endpoints on other hosts, if it has one.
	Tunnel(n store.Network) (string, bool)
	// Inspect adds the network's driver settings to options, as Docker's
	// network inspect shows them.
	Inspect(n store.Network, options map[string]string)
	// Setup makes the network's host side exist, idempotently.
	Setup(n *store.Network) error
	// Teardown removes the network's host side; a missing one is fine.
	Teardown(n store.Network) error
	// Attach creates an endpoint's links, its sandbox end in sandbox, and
	// returns the ifindex of its host side, which it names in ep.HostSide
	// (none: "").
	Attach(n store.Network, ep *store.Endpoint, sandbox netlink.NsFd) (int, error)
	// Detach removes what attach made, the host side included, best
	// effort; the engine has taken the programs off the host side.
	Detach(n store.Network, sandboxNS string, ep store.Endpoint) error
	// Check fails when an endpoint's links outside the sandbox are damaged.
	Check(n store.Network, ep store.Endpoint) error
}

// Traits are what sets one kind of network apart from the others, for
// the engine and the datapath to ask of a network's driver instead of
// comparing its name.
type Traits struct {
	// Datapath: ebpfnet's datapath serves the network: the maps hold it,
	// its endpoints have host sides with the endpoint programs, and ports
	// publish to them.
	Datapath bool
	// Global: the network is the cluster's, on every host that joins it
	// (Docker's scope "global"), and is made, removed and addressed
	// through the cluster's store.
	Global bool
	// XDPTarget: an endpoint is a veth on a bridge whose sandbox side
	// ebpfnet brings up itself, with GRO on, so that the uplinks' XDP
	// path may deliver to it (a veth takes redirected frames only in NAPI
	// mode).
	XDPTarget bool
	// OwnMAC: ebpfnet gives each endpoint's sandbox side its MAC, so the
	// datapath drops frames from any other; a runtime's veth keeps its
	// own.
	OwnMAC bool
	// StackRoutes: another plugin routes the network and masquerades it,
	// so the datapath hands its traffic to the kernel's stack.
	StackRoutes bool
	// Implicit: the network exists for its endpoints alone, made with the
	// first and removed with the last.
	Implicit bool
	// OwnAddresses: ebpfnet's IPAM hands out the network's addresses from
	// its pools.
	OwnAddresses bool
	// RuntimeAddresses: the runtime's IPAM hands them out, and the store
	// does not track them.
	RuntimeAddresses bool
}

// Aliases mark kernel objects as ebpfnet's, naming the record they belong to.
const (
	AliasPrefix   = "ebpfnet:"
	AliasNetwork  = AliasPrefix + "network:"
	AliasEndpoint = AliasPrefix + "endpoint:"
)

// HostSidePrefix begins the name of the host side of a sandbox's veth:
// the one mark such an interface has from its first event on, before its
// alias is set.
const HostSidePrefix = "ebv"

// IsNotFound reports whether a netlink lookup found no such link.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// EndpointMAC is an endpoint's MAC: the one it was given, else MACFor its
// address.
func EndpointMAC(ep store.Endpoint) net.HardwareAddr {
	if mac, err := net.ParseMAC(ep.MAC); err == nil && len(mac) == 6 {
		return mac
	}
	return MACFor(ep.Addr)
}

// GatewayMAC is the MAC of a network's bridge, which holds its gateways:
// fixed, so that the datapath can source the frames it delivers from it
// and sandboxes can know it without asking.
func GatewayMAC(n store.Network) net.HardwareAddr { return MACFor(n.Pool.Gateway) }

// MACFor derives a MAC from an IPv4 address as Docker does: 02:42 + the address.
func MACFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// HostSideOnBridge finds an endpoint's host side, and fails unless it is
// a port of bridge.
func HostSideOnBridge(hostSide, bridge string) (netlink.Link, error) {
	host, err := netlink.LinkByName(hostSide)
	if err != nil {
		return nil, fmt.Errorf("host side %s: %w", hostSide, err)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return nil, errdefs.Invalidf("host side %s is not on bridge %s", hostSide, bridge)
	}
	return host, nil
}

// DeleteLink deletes an interface; a missing one is fine.
func DeleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if IsNotFound(err) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}

// Dump runs a netlink list, again when the kernel interrupted it because
// the list changed meanwhile (netlink.ErrDumpInterrupted).
func Dump[T any](list func() ([]T, error)) ([]T, error) {
	for try := 1; ; try++ {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 5 {
			return out, err
		}
	}
}

package store

import (
	"net/netip"
	"slices"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Drivers.
const (
	DriverBridge  = api.DriverBridge
	DriverMacvlan = api.DriverMacvlan
	// DriverOverlay networks span the hosts of a cluster: the cluster
	// store (etcd) holds them, and each host keeps a copy here while it
	// is in the cluster.
	DriverOverlay = api.DriverOverlay
	DriverHost    = "host"
	DriverNull    = "null" // the "none" network, named after Docker's driver
	// DriverChained serves a bridge another CNI plugin made, ebpfnet
	// chained after it: its devices and addresses are that plugin's.
	DriverChained = "chained"
)

// Network is a named L2/L3 domain.
type Network struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Index   uint32    `json:"index"` // the network's key in the BPF maps
	Driver  string    `json:"driver"`
	Created time.Time `json:"created"`
	// Predefined networks (bridge, host, none) exist from the first start
	// and cannot be removed.
	Predefined bool   `json:"predefined,omitempty"`
	PoolID     string `json:"poolId,omitempty"` // its addresses' pool (every driver but host and none)
	// EnableIPv6 gives the network an IPv6 subnet beside its IPv4 one:
	// PoolID6 names that pool, and every endpoint gets an address from
	// each. A network without it has no IPv6 at all.
	EnableIPv6 bool   `json:"enableIPv6,omitempty"`
	PoolID6    string `json:"poolId6,omitempty"`
	// Pool is the pool PoolID names, filled in when the network is read:
	// for its subnet and gateway. Addresses are allocated and released by
	// pool ID (ipam.Allocate), never by writing this copy back, which
	// PutNetwork ignores.
	Pool       ipam.Pool         `json:"-"`
	Pool6      ipam.Pool         `json:"-"`                // the pool PoolID6 names, filled in likewise
	Bridge     string            `json:"bridge,omitempty"` // bridge device (bridge, overlay and chained drivers)
	Parent     string            `json:"parent,omitempty"` // parent interface (macvlan driver)
	MTU        int               `json:"mtu,omitempty"`
	ICC        bool              `json:"icc"`
	Masquerade bool              `json:"masquerade"` // flows to the outside leave from the uplink's address
	Internal   bool              `json:"internal,omitempty"`
	Attachable bool              `json:"attachable,omitempty"` // Docker's flag, kept for inspect
	Options    map[string]string `json:"options,omitempty"`
	// PublishSources are the source lists of the ports published on the
	// network without lists of their own (its driver's options).
	PublishSources ports.Sources `json:"publishSources,omitzero"`
	// PublishBalance makes every port published on the network balanced
	// (Publication.Balance), shared by the sandboxes that publish it.
	PublishBalance bool `json:"publishBalance,omitempty"`
	// EgressAllow is the egress list of its sandboxes that have none of
	// their own (its driver's options).
	EgressAllow egress.List       `json:"egressAllow,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	DNS         []netip.Addr      `json:"dns,omitempty"` // upstream servers of its sandboxes' resolvers

	// Frontend names the frontend that created the network for a container
	// runtime of its own ("docker"), "" for ebpfnet's own networks.
	Frontend string `json:"frontend,omitempty"`
	// RequestedPool is set when the pool was requested on its own, through
	// an IPAM protocol (Docker's IpamDriver): addresses are then requested
	// and released on their own too, and the pool outlives the network
	// until it is released. Otherwise endpoints take and return addresses,
	// and the pool goes with the network.
	RequestedPool bool `json:"requestedPool,omitempty"`

	// GatewayMode is Docker's gateway_mode_ipv4 (bridge driver). Empty
	// means nat: the default, and what networks stored before it had.
	GatewayMode string `json:"gatewayModeIPv4,omitempty"`
	// GatewayMode6 is Docker's gateway_mode_ipv6, with the same values.
	GatewayMode6 string `json:"gatewayModeIPv6,omitempty"`

	// VNI is an overlay network's VXLAN network identifier, the same on
	// every host; VTEP is this host's tunnel address (--cluster-advertise).
	VNI  uint32     `json:"vni,omitempty"`
	VTEP netip.Addr `json:"vtep,omitzero"`
}

// Gateway modes of a bridge network, one per family (GatewayMode,
// GatewayMode6).
const (
	GatewayNAT            = api.GatewayNAT
	GatewayNATUnprotected = api.GatewayNATUnprotected
	GatewayRouted         = api.GatewayRouted
	GatewayIsolated       = api.GatewayIsolated
)

// IPv4GatewayMode is the network's gateway mode, nat when none was chosen.
func (n *Network) IPv4GatewayMode() string { return orNAT(n.GatewayMode) }

// IPv6GatewayMode is the network's IPv6 gateway mode, nat when none was chosen.
func (n *Network) IPv6GatewayMode() string { return orNAT(n.GatewayMode6) }

func orNAT(mode string) string {
	if mode == "" {
		return GatewayNAT
	}
	return mode
}

// HostOnNetwork reports whether the host holds the gateway address on the
// network, as everywhere but in gateway mode isolated.
func (n *Network) HostOnNetwork() bool {
	return n.IPv4GatewayMode() != GatewayIsolated
}

// HostOnNetwork6 is HostOnNetwork for IPv6: false on an IPv4-only network.
func (n *Network) HostOnNetwork6() bool {
	return n.EnableIPv6 && n.IPv6GatewayMode() != GatewayIsolated
}

// Gateway is the network's gateway in one family: the address the host
// holds on it, which inspect shows. There is none where the host holds
// none (HostOnNetwork, HostOnNetwork6).
func (n *Network) Gateway(ipv6 bool) netip.Addr {
	switch {
	case ipv6 && n.HostOnNetwork6():
		return n.Pool6.Gateway
	case !ipv6 && n.HostOnNetwork():
		return n.Pool.Gateway
	}
	return netip.Addr{}
}

// DefaultGateway is where the network's sandboxes route to leave it, in
// one family: its Gateway, except on an internal network, which leads
// nowhere. That is the one difference between the two: an internal
// network has a gateway all the same, the host's address on it, which
// inspect shows as Docker's shows the gateway of its internal networks.
func (n *Network) DefaultGateway(ipv6 bool) netip.Addr {
	if n.Internal {
		return netip.Addr{}
	}
	return n.Gateway(ipv6)
}

// Sandbox modes.
const (
	ModeNetworks  = "networks"  // its own namespace, attached to bridge, macvlan or overlay networks (or none)
	ModeHost      = "host"      // the dataplane's own namespace
	ModeContainer = "container" // another sandbox's namespace
)

// Sandbox is a network namespace and its endpoints.
type Sandbox struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Mode    string    `json:"mode"`
	// NetNS is the path of the sandbox's network namespace, chosen by the
	// frontend that owns it; the engine only enters it.
	NetNS string `json:"netns,omitempty"`
	// Frontend names the container runtime's frontend ("docker") of a
	// sandbox that is one attachment of that runtime's namespace: the
	// runtime owns the namespace and configures the interface the engine
	// hands over. "" is a sandbox of ebpfnet's own (engine.Runtime).
	Frontend string `json:"frontend,omitempty"`
	// HandOver is set when the runtime moves the sandbox end of an
	// endpoint's veth into its namespace and configures it (Docker); the
	// engine then leaves it in the dataplane's namespace.
	HandOver bool `json:"handOver,omitempty"`
	// Group is the frontend's own grouping of its attachments: the CNI
	// network (configuration list) one was made through.
	Group string `json:"group,omitempty"`
	// Shares names the sandbox whose namespace a container-mode sandbox uses.
	Shares    string       `json:"shares,omitempty"`
	Endpoints []Endpoint   `json:"endpoints,omitempty"`
	DNS       []netip.Addr `json:"dns,omitempty"`   // upstream servers, before its networks'
	Links     []Link       `json:"links,omitempty"` // legacy --link entries in its hosts file
	// EgressAllow is where the sandbox may send (none: anywhere, or its
	// networks' lists).
	EgressAllow egress.List `json:"egressAllow,omitempty"`
	// Bandwidth is the limits the datapath holds each endpoint to.
	Bandwidth api.Bandwidth `json:"bandwidth,omitzero"`
}

// EgressOn is the egress list of the sandbox's endpoint on n: its own,
// else n's; none lets it send anywhere.
func (sb *Sandbox) EgressOn(n Network) egress.List {
	if len(sb.EgressAllow) > 0 {
		return sb.EgressAllow
	}
	return n.EgressAllow
}

// External reports whether a container runtime owns the sandbox's
// namespace and configures its interface (Frontend).
func (sb *Sandbox) External() bool { return sb.Frontend != "" }

// Link is a legacy --link: another sandbox's address in this one's hosts
// file, under the other's name and an alias.
type Link struct {
	Sandbox string `json:"sandbox"`
	Alias   string `json:"alias"`
}

// ByID indexes networks by ID.
func ByID(nets []Network) map[string]Network {
	m := make(map[string]Network, len(nets))
	for _, n := range nets {
		m[n.ID] = n
	}
	return m
}

// NetworkMode names how a sandbox is networked, as docker inspect's
// HostConfig.NetworkMode does: host, none, container:NAME, or its first
// network (networkName turns a network ID into its name).
func NetworkMode(sb Sandbox, networkName func(id string) string) string {
	switch {
	case sb.Mode == ModeHost:
		return "host"
	case sb.Mode == ModeContainer:
		return "container:" + sb.Shares
	case len(sb.Endpoints) == 0:
		return "none"
	}
	return networkName(sb.Endpoints[0].NetworkID)
}

// Publication is a published port of a sandbox; the store keeps them
// apart from the sandbox's record (Tx.Publications).
type Publication struct {
	HostIP     netip.Addr     `json:"hostIp,omitzero"` // zero: every address of the host
	HostPort   uint16         `json:"hostPort"`
	Proto      ports.Protocol `json:"proto"`
	Port       uint16         `json:"port"`       // in the sandbox
	EndpointID string         `json:"endpointId"` // the sandbox's endpoint the port leads to (Sandbox.Endpoint)
	// Sources are who may open flows to it: its own lists, or its
	// network's when it was published; none lets everyone in, or the
	// daemon's default lists.
	Sources ports.Sources `json:"sources,omitzero"`
	// Balance shares the host port with the other sandboxes that publish
	// it with Balance: one publication, each of them a backend.
	Balance bool `json:"balance,omitempty"`
}

// HostAddress is the host address a publication listens on, 0.0.0.0 for
// every address.
func (p Publication) HostAddress() string {
	if p.HostIP.IsValid() {
		return p.HostIP.String()
	}
	return "0.0.0.0"
}

// Endpoint is the sandbox's endpoint with ID id, false when it has none.
// A publication leads to the endpoint its EndpointID names.
func (sb *Sandbox) Endpoint(id string) (Endpoint, bool) {
	i := slices.IndexFunc(sb.Endpoints, func(ep Endpoint) bool { return ep.ID == id })
	if id == "" || i < 0 {
		return Endpoint{}, false
	}
	return sb.Endpoints[i], true
}

// Endpoint attaches a sandbox to a network.
type Endpoint struct {
	ID        string     `json:"id"`
	NetworkID string     `json:"networkId"`
	Interface string     `json:"interface"`          // inside the sandbox: eth0, eth1…
	HostSide  string     `json:"hostSide,omitempty"` // host end of the veth (bridge driver)
	Addr      netip.Addr `json:"addr"`
	Addr6     netip.Addr `json:"addr6,omitzero"` // on a network with EnableIPv6
	MAC       string     `json:"mac"`
	Aliases   []string   `json:"aliases,omitempty"`
}

// Addrs are the endpoint's addresses, one per family it has.
func (ep Endpoint) Addrs() []netip.Addr {
	if ep.Addr6.IsValid() {
		return []netip.Addr{ep.Addr, ep.Addr6}
	}
	return []netip.Addr{ep.Addr}
}

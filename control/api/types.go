package api

import (
	"context"
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/control/ports"
)

// NetworkCreate asks for a network, with flags as `docker network create` has them.
type NetworkCreate struct {
	Name   string `json:"Name"`
	Driver string `json:"Driver,omitempty"`
	// EnableIPv6 gives the network an IPv6 subnet beside its IPv4 one;
	// unset, the driver option com.docker.network.enable_ipv6 decides.
	EnableIPv6 *bool `json:"EnableIPv6,omitempty"`
	// At most one subnet per family; each ip range and gateway goes with
	// the subnet of its family.
	Subnets  []netip.Prefix `json:"Subnets,omitempty"`
	IPRanges []netip.Prefix `json:"IPRanges,omitempty"`
	Gateways []netip.Addr   `json:"Gateways,omitempty"`
	Internal bool           `json:"Internal,omitempty"`
	// Attachable is Docker's flag for overlays any container may join:
	// every ebpfnet network is, and the flag is kept for inspect.
	Attachable bool              `json:"Attachable,omitempty"`
	Options    map[string]string `json:"Options,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
	DNS        []netip.Addr      `json:"DNS,omitempty"`
	// Set by a runtime frontend creating a network for its runtime
	// (RuntimeEngine.CreateFrontendNetwork; the API refuses them): the
	// runtime's ID for it, the pools it requested (RequestPool) and the
	// frontend's name.
	ID       string `json:"Id,omitempty"`
	PoolID   string `json:"PoolID,omitempty"`
	PoolID6  string `json:"PoolID6,omitempty"`
	Frontend string `json:"Frontend,omitempty"`
}

// SandboxCreate asks for a sandbox.
type SandboxCreate struct {
	Name     string        `json:"Name"`
	Networks []string      `json:"Networks,omitempty"`
	IP       netip.Addr    `json:"IP,omitzero"`
	IP6      netip.Addr    `json:"IP6,omitzero"`
	Aliases  []string      `json:"Aliases,omitempty"`
	Publish  []PortMapping `json:"Publish,omitempty"`
	// PublishSources are who may open flows to Publish (none: the
	// network's lists, or everyone).
	PublishSources Sources `json:"PublishSources,omitzero"`
	// PublishBalance shares Publish's host ports (Ports.Balance).
	PublishBalance bool         `json:"PublishBalance,omitempty"`
	DNS            []netip.Addr `json:"DNS,omitempty"`
	Links          []string     `json:"Links,omitempty"` // NAME[:ALIAS]
	// EgressAllow is where it may send: prefixes, DNS names and
	// wildcards (*.example.com); none lets it send anywhere, or as its
	// networks' lists say.
	EgressAllow []string `json:"EgressAllow,omitempty"`
	// Bandwidth is the limits of each direction (none: unlimited).
	Bandwidth Bandwidth `json:"Bandwidth,omitzero"`
}

// SandboxUpdate changes a running sandbox's settings live; a field left
// out is left as it is.
type SandboxUpdate struct {
	// EgressAllow replaces its egress list (SandboxCreate.EgressAllow);
	// an empty list clears it.
	EgressAllow *[]string `json:"EgressAllow,omitempty"`
	// Bandwidth replaces its limits, all of them: a rate of 0 lifts one.
	Bandwidth *Bandwidth `json:"Bandwidth,omitempty"`
}

// Ports publishes ports of a sandbox, open to Sources, or unpublishes
// those that match.
type Ports struct {
	Mappings []PortMapping `json:"Mappings"`
	// Sources are who may open flows to the ports published (none: the
	// network's lists, or everyone); a port the sandbox publishes
	// already, exactly so, gets them instead. Unpublishing takes none.
	Sources Sources `json:"Sources,omitzero"`
	// Balance shares each host port with the other sandboxes that
	// publish it with Balance: one publication with several backends.
	Balance bool `json:"Balance,omitempty"`
}

// Sources are source-address lists: the most specific prefix decides;
// with Allow, an address no prefix holds is refused.
type Sources = ports.Sources

// PortMapping is one published range of ports; as a filter of what to
// unpublish, its zero fields match anything.
type PortMapping = ports.Mapping

// PortBinding is one published host address and port, as docker inspect
// shows it under NetworkSettings.Ports["80/tcp"].
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
	// Allow and Deny are who may open flows to it (ebpfnet's; none:
	// everyone, or the daemon's default lists).
	Allow []netip.Prefix `json:"Allow,omitempty"`
	Deny  []netip.Prefix `json:"Deny,omitempty"`
	// Balanced says the host port is shared (Ports.Balance); Backends
	// are then the sandboxes that share it, each as SANDBOX:PORT.
	Balanced bool     `json:"Balanced,omitempty"`
	Backends []string `json:"Backends,omitempty"`
}

// Connect attaches a sandbox to a network.
type Connect struct {
	Sandbox string     `json:"Sandbox"`
	IP      netip.Addr `json:"IP,omitzero"`
	IP6     netip.Addr `json:"IP6,omitzero"`
	Aliases []string   `json:"Aliases,omitempty"`
}

// Disconnect detaches a sandbox from a network.
type Disconnect struct {
	Sandbox string `json:"Sandbox"`
}

// Network is shaped like `docker network inspect`.
type Network struct {
	Name       string                      `json:"Name"`
	ID         string                      `json:"Id"`
	Created    time.Time                   `json:"Created"`
	Scope      string                      `json:"Scope"`
	Driver     string                      `json:"Driver"`
	EnableIPv6 bool                        `json:"EnableIPv6"`
	IPAM       IPAM                        `json:"IPAM"`
	Internal   bool                        `json:"Internal"`
	Attachable bool                        `json:"Attachable"`
	Containers map[string]NetworkContainer `json:"Containers"`
	Options    map[string]string           `json:"Options"`
	Labels     map[string]string           `json:"Labels"`
}

// IPAM is a network's address configuration.
type IPAM struct {
	Driver string       `json:"Driver"`
	Config []IPAMConfig `json:"Config"`
}

// IPAMConfig is one subnet: a network has one per family.
type IPAMConfig struct {
	Subnet  string `json:"Subnet,omitempty"`
	IPRange string `json:"IPRange,omitempty"`
	Gateway string `json:"Gateway,omitempty"`
}

// NetworkContainer is a sandbox's endpoint as a network lists it.
type NetworkContainer struct {
	Name        string `json:"Name"`
	EndpointID  string `json:"EndpointID"`
	MacAddress  string `json:"MacAddress"`
	IPv4Address string `json:"IPv4Address"`
	IPv6Address string `json:"IPv6Address"`
}

// Sandbox is shaped like the network parts of `docker inspect`.
type Sandbox struct {
	ID              string          `json:"Id"`
	Name            string          `json:"Name"`
	Created         time.Time       `json:"Created"`
	HostConfig      HostConfig      `json:"HostConfig"`
	NetworkSettings NetworkSettings `json:"NetworkSettings"`
	// Egress is where it may send, when a list says (ebpfnet's).
	Egress *Egress `json:"Egress,omitempty"`
}

// Egress is a sandbox's egress list and what it may reach by name now.
type Egress struct {
	Allow []string `json:"Allow"`
	// From is whose list it is: "sandbox", or "network NAME" for a
	// sandbox without a list of its own.
	From []string `json:"From"`
	// Answers are the addresses its resolver answered for allowed names,
	// which it may reach until their TTL runs out.
	Answers []EgressAnswer `json:"Answers,omitempty"`
}

// EgressAnswer is an address a sandbox may reach by name.
type EgressAnswer struct {
	Name    string `json:"Name,omitempty"` // "" when answered before the daemon's restart
	Address string `json:"Address"`
	Source  string `json:"Source"` // the sandbox's address that may reach it
	TTL     int    `json:"TTL"`    // seconds left
}

// HostConfig holds the network mode.
type HostConfig struct {
	NetworkMode string    `json:"NetworkMode"`
	Bandwidth   Bandwidth `json:"Bandwidth,omitzero"`
}

// NetworkSettings holds the namespace and the endpoints by network name.
type NetworkSettings struct {
	SandboxKey string                      `json:"SandboxKey"`
	Ports      map[string][]PortBinding    `json:"Ports"`
	EtcDir     string                      `json:"EtcDir,omitempty"`
	Networks   map[string]EndpointSettings `json:"Networks"`
}

// EndpointSettings is one endpoint of a sandbox.
type EndpointSettings struct {
	NetworkID     string   `json:"NetworkID"`
	EndpointID    string   `json:"EndpointID"`
	Gateway       string   `json:"Gateway"`
	IPAddress     string   `json:"IPAddress"`
	IPPrefixLen   int      `json:"IPPrefixLen"`
	MacAddress    string   `json:"MacAddress"`
	Aliases       []string `json:"Aliases"`
	Interface     string   `json:"Interface"`
	HostInterface string   `json:"HostInterface,omitempty"`
	// IPv6, as Docker shows it: empty on a network without IPv6.
	IPv6Gateway         string `json:"IPv6Gateway"`
	GlobalIPv6Address   string `json:"GlobalIPv6Address"`
	GlobalIPv6PrefixLen int    `json:"GlobalIPv6PrefixLen"`
}

// Pruned lists the networks a prune removed.
type Pruned struct {
	NetworksDeleted []string `json:"NetworksDeleted"`
}

// Drift is how far the kernel and the maps are from the state: what a
// reconcile would repair now.
type Drift struct {
	// MapEntries are the map entries that differ from the state.
	MapEntries int `json:"MapEntries"`
	// Leftovers are the interfaces ebpfnet made that no record names.
	Leftovers []string `json:"Leftovers"`
	// StrayPins are the interfaces whose programs' pins no record names.
	StrayPins []string `json:"StrayPins"`
}

// Clean reports whether a reconcile would repair nothing.
func (d Drift) Clean() bool {
	return d.MapEntries == 0 && len(d.Leftovers) == 0 && len(d.StrayPins) == 0
}

// Status is what the datapath is doing right now.
type Status struct {
	Counters    []Counter       `json:"counters"`
	Maps        []Fill          `json:"maps"`
	Endpoints   []AttachedIface `json:"endpoints"`
	Uplinks     []AttachedIface `json:"uplinks"`
	SocketHooks []string        `json:"socketHooks"`
	// HeldPorts is how many host ports (port and protocol) publications
	// hold: no process of the namespace may bind them while the bind4
	// hook is attached, whether or not the daemon runs.
	HeldPorts int `json:"heldPorts"`
	// Monitoring is which datapath events are written for `ebpfnet
	// monitor` clients: drop, trace or all; empty when none listens.
	Monitoring string `json:"monitoring,omitempty"`
	// Cluster is the cluster this host is a member of, if any.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// Host is the daemon's namespace's netfilter and routing settings.
	Host HostSettings `json:"host"`
	// BackendFlows are the new flows each backend of balanced
	// publications took, with the sandbox it is in.
	BackendFlows []BackendFlows `json:"backendFlows,omitempty"`
}

// HostSettings are the settings of the daemon's namespace that decide
// whether packets forwarded through the kernel's stack get through.
// ebpfnet's datapath depends on none of them: it delivers every packet it
// accepts by redirect, never through the host's netfilter.
type HostSettings struct {
	BridgeNetfilter BridgeNetfilter `json:"bridgeNetfilter"`
	Forward         ForwardPolicy   `json:"forward"`
	Conntrack       HostConntrack   `json:"conntrack"`
	RPFilter        RPFilter        `json:"rpFilter"`
	// Unread says which settings could not be read, and why.
	Unread []string `json:"unread,omitempty"`
}

// BridgeNetfilter is br_netfilter in the namespace: with it active and a
// call sysctl on, frames a bridge forwards go through that family's
// netfilter FORWARD chains.
type BridgeNetfilter struct {
	Active        bool `json:"active"`        // its sysctls exist in the namespace
	CallIPTables  bool `json:"callIptables"`  // net.bridge.bridge-nf-call-iptables
	CallIP6Tables bool `json:"callIp6tables"` // net.bridge.bridge-nf-call-ip6tables
	CallARPTables bool `json:"callArptables"` // net.bridge.bridge-nf-call-arptables
}

// The policies of netfilter's forward hook.
const (
	PolicyAccept = "accept"
	PolicyDrop   = "drop"
	PolicyNone   = "none" // no chain on the hook
)

// ForwardPolicy is what netfilter's forward hook does with a packet no
// rule takes, by family: drop when a chain on it drops, accept when its
// chains accept, none when it has no chain.
type ForwardPolicy struct {
	IPv4   string         `json:"ipv4"`
	IPv6   string         `json:"ipv6"`
	Chains []ForwardChain `json:"chains,omitempty"`
}

// ForwardChain is a base chain on the forward hook: iptables' FORWARD is
// one, in table filter of family ip (ip6 for ip6tables'); an inet chain
// sees both families.
type ForwardChain struct {
	Family string `json:"family"` // ip, ip6, inet, bridge…
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	Policy string `json:"policy"` // accept or drop
	Via    string `json:"via"`    // nftables (iptables-nft's included) or iptables-legacy
}

// HostConntrack is netfilter's conntrack in the namespace.
type HostConntrack struct {
	Active bool `json:"active"` // its sysctls exist in the namespace
	Count  int  `json:"count"`  // net.netfilter.nf_conntrack_count
	Max    int  `json:"max"`    // net.netfilter.nf_conntrack_max
}

// RPFilter is reverse-path filtering, net.ipv4.conf.{all,default}.rp_filter:
// 0 off, 1 strict, 2 loose (an interface takes the highest of all and its own).
type RPFilter struct {
	All     int `json:"all"`
	Default int `json:"default"`
}

// ClusterStatus is this host's membership of a cluster.
type ClusterStatus struct {
	Store     []string   `json:"store"` // etcd's endpoints
	Advertise netip.Addr `json:"advertise"`
	Lease     string     `json:"lease"`    // this host's, in hex as etcdctl shows it
	LeaseTTL  int64      `json:"leaseTTL"` // seconds it has left
	Hosts     []PeerHost `json:"hosts"`
	Error     string     `json:"error,omitempty"` // why the store could not be read
	// Conflicts are what this host cannot bring in line with the cluster
	// until something changes here or there (an address another host
	// took while this host's lease had lapsed, a network it cannot
	// mirror); they are tried again at each change.
	Conflicts []string `json:"conflicts,omitempty"`
}

// PeerHost is a host of the cluster: its VTEP address and its name.
type PeerHost struct {
	Advertise netip.Addr `json:"advertise"`
	Hostname  string     `json:"hostname"`
}

// Metrics is what the daemon's Prometheus metrics read besides the
// verdict counters.
type Metrics struct {
	Conntrack []ConntrackEntries `json:"conntrack"`
	NATPorts  []NATPortsInUse    `json:"natPorts"`
	// Reclaimed counts the expired conntrack entries the daemon removed
	// since it started.
	Reclaimed uint64   `json:"reclaimed"`
	DNS       DNSStats `json:"dns"`
	// BackendFlows are the new flows each backend of balanced
	// publications took.
	BackendFlows []BackendFlows `json:"backendFlows,omitempty"`
}

// BackendFlows is how many new flows a backend (ADDR:PORT, in its
// sandbox) of balanced publications took, of a protocol.
type BackendFlows struct {
	Backend string `json:"backend"`
	// Sandbox holds the backend's address; empty in metrics, which
	// label by the address alone.
	Sandbox string `json:"sandbox,omitempty"`
	Proto   string `json:"proto"`
	Flows   uint64 `json:"flows"`
}

// ConntrackEntries is how many live conntrack entries (one per direction
// of a flow) are in a state, of a protocol, in one of the two tables.
type ConntrackEntries struct {
	State   string `json:"state"`
	Proto   string `json:"proto"`
	Assured bool   `json:"assured"` // in ct, proven real; else ct_new
	Entries int    `json:"entries"`
}

// NATPortsInUse is how many masqueraded flows leave from an uplink's
// address, each holding one of its NAT ports.
type NATPortsInUse struct {
	Uplink string `json:"uplink"`
	Addr   string `json:"addr"`
	Ports  int    `json:"ports"`
}

// DNSStats counts what the embedded DNS answered, by outcome (the first
// seven add up to all queries), and its cache of forwarded answers.
type DNSStats struct {
	Local, CacheHit, Forwarded, ServFail, Dropped, Refused, Malformed uint64
	NXDomain, CacheMisses, Coalesced                                  uint64
	CacheEntries                                                      int
}

// Counter is the packets and bytes one program gave one verdict.
type Counter struct {
	Program string `json:"program"`
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Fill is how full a map is.
type Fill struct {
	Map     string `json:"map"`
	Entries int    `json:"entries"`
	Max     uint32 `json:"max"`
}

// AttachedIface is one endpoint's host-side interface, or an uplink, and
// how the programs sit on it.
type AttachedIface struct {
	Interface string `json:"interface"`
	Sandbox   string `json:"sandbox,omitempty"`
	Network   string `json:"network,omitempty"`
	Attach    string `json:"attach"`        // tcx or clsact; empty when not attached
	XDP       bool   `json:"xdp,omitempty"` // an uplink's XDP fast path is attached
	// Mode is an uplink's datapath, tc or xdp (what runs: XDP says the
	// same), and ModeReason why: "asked for", "the default", or auto's
	// reason ("auto: veth loses TSO under XDP").
	Mode       string `json:"mode,omitempty"`
	ModeReason string `json:"modeReason,omitempty"`
	// Others are the programs that share ebpfnet's hooks on the
	// interface; one running before ebpfnet's can bypass it.
	Others []OtherProgram `json:"otherPrograms,omitempty"`
}

// OtherProgram is a program of someone else's on one of ebpfnet's hooks.
type OtherProgram struct {
	Direction string `json:"direction"` // ingress or egress
	Before    bool   `json:"before"`    // it runs before ebpfnet's program
	Hook      string `json:"hook"`      // tcx, or clsact for a tc filter
	ID        uint32 `json:"id,omitempty"`
	Name      string `json:"name"` // the program's name, or a filter's kind
}

// Error is the body of every failed request.
type Error struct {
	Message string `json:"message"`
}

// Pool is an address pool requested on its own, as Docker's IPAM protocol
// requests them.
type Pool struct {
	ID     string `json:"PoolID"`
	Subnet string `json:"Pool"`
}

// EndpointCreate asks for an endpoint of a container runtime that owns its
// namespace (RuntimeEngine).
type EndpointCreate struct {
	Frontend string     `json:"Frontend"` // "docker"
	ID       string     `json:"EndpointID"`
	Network  string     `json:"NetworkID"`
	Address  netip.Addr `json:"Address,omitzero"` // requested already on a requested pool
	// AddressIPv6 likewise, on a network with IPv6.
	AddressIPv6 netip.Addr `json:"AddressIPv6,omitzero"`
	MAC         string     `json:"MacAddress,omitempty"`
}

// Endpoint is a runtime endpoint: its address (CIDR) and MAC, and once
// joined, the interface for the runtime to move into its namespace and
// the gateway ("" on an internal network).
type Endpoint struct {
	ID          string `json:"EndpointID"`
	Address     string `json:"Address"`
	AddressIPv6 string `json:"AddressIPv6,omitempty"` // CIDR, on a network with IPv6
	MacAddress  string `json:"MacAddress"`
	Interface   string `json:"Interface,omitempty"`
	Gateway     string `json:"Gateway,omitempty"`
	GatewayIPv6 string `json:"GatewayIPv6,omitempty"`
}

// AttachmentCreate attaches a runtime's namespace to a network in one step
// (CNI's ADD). CNI knows an attachment by its container ID and interface
// name.
type AttachmentCreate struct {
	Frontend    string     `json:"Frontend"` // "cni"
	ContainerID string     `json:"ContainerID"`
	IfName      string     `json:"IfName"`
	NetNS       string     `json:"NetNS"`
	Network     string     `json:"Network"`
	IP          netip.Addr `json:"IP,omitzero"`          // a static address, from CNI's ips capability
	IP6         netip.Addr `json:"IP6,omitzero"`         // a static IPv6 address likewise, on a network with IPv6
	MAC         string     `json:"MacAddress,omitempty"` // from CNI's mac capability
	Aliases     []string   `json:"Aliases,omitempty"`    // from CNI's aliases capability
	// Group is the runtime's own name for what the attachment was made
	// through (the CNI network: its configuration list's name), which
	// collecting attachments goes by.
	Group   string        `json:"Group,omitempty"`
	Publish []PortMapping `json:"Publish,omitempty"`
	// PublishSources are who may open flows to Publish (none: the
	// network's lists, or everyone).
	PublishSources Sources `json:"PublishSources,omitzero"`
	// PublishBalance shares Publish's host ports (Ports.Balance).
	PublishBalance bool `json:"PublishBalance,omitempty"`
	// EgressAllow is where it may send: prefixes (none: anywhere, or as
	// the network's list says).
	EgressAllow []string `json:"EgressAllow,omitempty"`
	// Bandwidth is the sandbox's limits (CNI's bandwidth capability).
	Bandwidth Bandwidth `json:"Bandwidth,omitzero"`
	// Chained, when set, attaches what a plugin chained before ebpfnet
	// made, on the network of that plugin named Network (made on first use).
	Chained *ChainedAttachment `json:"Chained,omitempty"`
}

// ChainedAttachment is what a plugin before ebpfnet made: the container's
// interface on a bridge, its address (CIDR), gateway and MAC, and the host
// side of its veth.
type ChainedAttachment struct {
	Bridge        string       `json:"Bridge"`
	HostInterface string       `json:"HostInterface"`
	Address       netip.Prefix `json:"Address"`
	Gateway       netip.Addr   `json:"Gateway,omitzero"`
	MacAddress    string       `json:"MacAddress,omitempty"`
}

// Attachment is an attachment as CNI reports it.
type Attachment struct {
	Sandbox       string `json:"Sandbox"` // its sandbox's name: CONTAINERID:IFNAME
	Interface     string `json:"Interface"`
	HostInterface string `json:"HostInterface"`
	MacAddress    string `json:"MacAddress"`
	Mtu           int    `json:"Mtu,omitempty"`
	Address       string `json:"Address"` // CIDR
	Gateway       string `json:"Gateway,omitempty"`
	// The IPv6 address (CIDR) and gateway on a network with IPv6.
	AddressIPv6 string                   `json:"AddressIPv6,omitempty"`
	GatewayIPv6 string                   `json:"GatewayIPv6,omitempty"`
	Ports       map[string][]PortBinding `json:"Ports"`
}

// AttachmentRef names an attachment as CNI does.
type AttachmentRef struct {
	ContainerID string `json:"ContainerID"`
	IfName      string `json:"IfName"`
}

// AttachmentsCollect asks to remove a frontend's attachments on a network
// but those it names (CNI's GC).
type AttachmentsCollect struct {
	Frontend string          `json:"Frontend"`
	Network  string          `json:"Network"`
	Group    string          `json:"Group"`
	Keep     []AttachmentRef `json:"Keep"`
}

// EventStream is one monitor client's stream of datapath events.
type EventStream interface {
	// Next waits for the next event, or for ctx to end (its error).
	Next(ctx context.Context) (Event, error)
	Close()
}

// EventFilter picks the datapath events a monitor streams.
type EventFilter struct {
	Type    string // drop, trace or all ("": all)
	Sandbox string // events of this sandbox, at either end (name, ID or ID prefix)
	Network string // events of this network, at either end
}

// Event is what a datapath program did to one packet, as `ebpfnet
// monitor` shows it. Sandbox and Network are the endpoint the program ran
// for (the one whose interface it is, else the one the packet comes from
// or goes to); Peer the endpoint at the packet's other end, when it is one.
type Event struct {
	Time      time.Time `json:"time"`
	Program   string    `json:"program"`
	Interface string    `json:"interface"`
	Ifindex   uint32    `json:"ifindex"`
	Type      string    `json:"type"` // drop or trace
	Verdict   string    `json:"verdict"`
	Proto     string    `json:"proto"`
	Len       uint32    `json:"len"`
	Before    EventFlow `json:"before"`
	// DstName is the name the sandbox's resolver answered the
	// destination for, where it did (egress lists).
	DstName string `json:"dstName,omitempty"`
	// After is the flow the packet was translated to, when it was.
	After       *EventFlow `json:"after,omitempty"`
	Sandbox     string     `json:"sandbox,omitempty"`
	Network     string     `json:"network,omitempty"`
	PeerSandbox string     `json:"peerSandbox,omitempty"`
	PeerNetwork string     `json:"peerNetwork,omitempty"`
}

// EventFlow is a packet's source and destination, address:port (for
// ICMP echo the identifier stands in for the port).
type EventFlow struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

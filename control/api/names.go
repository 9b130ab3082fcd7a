package api

import "strings"

// The names below are values that requests carry, as Docker names them.
// They are declared here, where a client finds them without the daemon's
// packages; the engine, the store and the drivers declare theirs from
// these.

// Networks every daemon has from its first start. A sandbox may name host
// or none, or another sandbox's namespace (container:NAME), in place of
// its networks: a network mode.
const (
	NetworkBridge   = "bridge"
	NetworkHost     = "host"
	NetworkNone     = "none"
	ContainerPrefix = "container:" // followed by the other sandbox's name
)

// IsNetworkMode reports whether a sandbox's first network names a network
// mode (host, none or container:NAME) rather than a network: a sandbox in
// such a mode has no endpoint of its own, so no address, alias or
// published port.
func IsNetworkMode(network string) bool {
	return network == NetworkHost || network == NetworkNone || strings.HasPrefix(network, ContainerPrefix)
}

// Drivers a network request may name (NetworkCreate.Driver; none is
// bridge).
const (
	DriverBridge  = "bridge"
	DriverMacvlan = "macvlan"
	DriverOverlay = "overlay"
)

// Options of a bridge network's gateway mode, one per family.
const (
	OptGatewayMode  = "com.docker.network.bridge.gateway_mode_ipv4"
	OptGatewayMode6 = "com.docker.network.bridge.gateway_mode_ipv6"
	// OptPublishAllow and OptPublishDeny are the source lists of every
	// port published on a network (comma-separated prefixes) whose
	// publisher gave none.
	OptPublishAllow = "ebpfnet.publish.allow"
	OptPublishDeny  = "ebpfnet.publish.deny"
	// OptBalance (true or false) shares the host ports published on a
	// network between its sandboxes that publish the same one, as
	// publish --balance does: docker compose's --scale.
	OptBalance = "ebpfnet.balance"
	// OptEgressAllow is the egress list (comma-separated prefixes, DNS
	// names and wildcards) of the network's sandboxes that have none of
	// their own.
	OptEgressAllow = "ebpfnet.egress.allow"
)

// Gateway modes of a bridge network, named as Docker 28 names them.
const (
	GatewayNAT            = "nat"             // masqueraded; from outside, published host ports only
	GatewayNATUnprotected = "nat-unprotected" // masqueraded; every sandbox port routable from outside
	GatewayRouted         = "routed"          // not masqueraded; published sandbox ports routable from outside
	GatewayIsolated       = "isolated"        // internal, and the host holds no address on the network
)

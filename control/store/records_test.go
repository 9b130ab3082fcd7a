package store

import (
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/ipam"
)

// A network's gateway is the host's address on it, which inspect shows;
// its sandboxes route through it unless the network is internal.
func TestGateways(t *testing.T) {
	pool := ipam.Pool{Gateway: netip.MustParseAddr("172.19.0.1")}
	pool6 := ipam.Pool{Gateway: netip.MustParseAddr("fd00:19::1")}
	none := netip.Addr{}
	for _, c := range []struct {
		name                string
		n                   Network
		gw, gw6, route, rt6 netip.Addr
	}{
		{"nat", Network{Pool: pool}, pool.Gateway, none, pool.Gateway, none},
		{"dual-stack", Network{Pool: pool, Pool6: pool6, EnableIPv6: true}, pool.Gateway, pool6.Gateway, pool.Gateway, pool6.Gateway},
		{"internal", Network{Pool: pool, Pool6: pool6, EnableIPv6: true, Internal: true}, pool.Gateway, pool6.Gateway, none, none},
		{"isolated", Network{Pool: pool, Pool6: pool6, EnableIPv6: true, Internal: true, GatewayMode: GatewayIsolated}, none, pool6.Gateway, none, none},
		{"IPv6 isolated", Network{Pool: pool, Pool6: pool6, EnableIPv6: true, Internal: true, GatewayMode6: GatewayIsolated}, pool.Gateway, none, none, none},
		{"routed", Network{Pool: pool, Pool6: pool6, EnableIPv6: true, GatewayMode: GatewayRouted}, pool.Gateway, pool6.Gateway, pool.Gateway, pool6.Gateway},
	} {
		if gw, gw6 := c.n.Gateway(false), c.n.Gateway(true); gw != c.gw || gw6 != c.gw6 {
			t.Errorf("%s: gateways %v and %v, want %v and %v", c.name, gw, gw6, c.gw, c.gw6)
		}
		if rt, rt6 := c.n.DefaultGateway(false), c.n.DefaultGateway(true); rt != c.route || rt6 != c.rt6 {
			t.Errorf("%s: default gateways %v and %v, want %v and %v", c.name, rt, rt6, c.route, c.rt6)
		}
	}
}

package engine

import (
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// This file is the one place where store records become the map entries
// the datapath should hold: the operations write these entries as they
// go, and reconcile rewrites the maps with all of them (desiredMaps).
// Package maps encodes them.

// desiredMaps is every entry the store's records call for. hostIfindex
// finds the ifindex an endpoint's host side has now; endpoints whose host
// side is missing are left out (reconcile repairs them first).
func desiredMaps(nets []store.Network, sbs []store.Sandbox, pubs map[string][]store.Publication,
	hostIfindex func(name string) (int, bool)) maps.Desired {
	var want maps.Desired
	byID := store.ByID(nets)
	for _, n := range nets {
		if servedByDatapath(n) {
			want.Networks = append(want.Networks, networkMaps(n))
		}
	}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			if ep.HostSide == "" {
				continue
			}
			ifindex, ok := hostIfindex(ep.HostSide)
			if !ok {
				continue
			}
			n := byID[ep.NetworkID]
			want.Ifaces = append(want.Ifaces, ifaceMaps(n, ep, ifindex))
			want.Endpoints = append(want.Endpoints, endpointMaps(n, ep, ifindex))
		}
		want.Publications = append(want.Publications, publicationMaps(sb, pubs[sb.Name])...)
	}
	return want
}

// networkMaps is what the datapath knows of a bridge network.
func networkMaps(n store.Network) maps.Network {
	m := maps.Network{Index: n.Index, Subnet: n.Pool.Subnet, Gateway: n.Pool.Gateway, GatewayMAC: driver.MACFor(n.Pool.Gateway),
		ICCDisabled: !n.ICC, Internal: n.Internal, Masquerade: n.Masquerade, StackRoutes: n.Driver == store.DriverChained}
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
	return maps.Endpoint{Addr: ep.Addr, Ifindex: uint32(ifindex), Network: n.Index, MAC: driver.EndpointMAC(ep)}
}

// ifaceMaps is what the datapath knows of an endpoint's host side, by
// its ifindex: which network and address may send from it.
func ifaceMaps(n store.Network, ep store.Endpoint, ifindex int) maps.Iface {
	return maps.Iface{Ifindex: uint32(ifindex), Network: n.Index, Addr: ep.Addr}
}

// pubMaps is a publication as the datapath has it.
func pubMaps(p store.Publication, ep store.Endpoint) maps.Publication {
	return maps.Publication{HostAddr: p.HostIP, HostPort: p.HostPort, Proto: ports.Protocol(p.Proto).Number(), Addr: ep.Addr, Port: p.Port}
}

// publicationMaps is how the datapath has a sandbox's publications, each
// leading to the endpoint it names.
func publicationMaps(sb store.Sandbox, pubs []store.Publication) []maps.Publication {
	var out []maps.Publication
	for _, p := range pubs {
		if ep, ok := sb.Endpoint(p.EndpointID); ok {
			out = append(out, pubMaps(p, ep))
		}
	}
	return out
}

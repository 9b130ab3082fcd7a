// Package desired is the one place where store records become the entries
// the BPF maps should hold: the engine's operations write these entries as
// they go, and reconcile rewrites the maps with all of them (Maps).
// Package maps encodes them.
package desired

import (
	stdmaps "maps"
	"net/netip"
	"slices"
	"time"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Maps is every entry the store's records call for. hostIfindex
// finds the ifindex an endpoint's host side has now; endpoints whose host
// side is missing are left out (reconcile repairs them first).
func Maps(nets []store.Network, sbs []store.Sandbox, pubs map[string][]store.Publication,
	hostIfindex func(name string) (int, bool)) maps.Desired {
	want := ForNetworks(nets, hostIfindex)
	want.Add(ForSandboxes(store.ByID(nets), sbs, pubs, hostIfindex))
	return want
}

// ForNetworks is what the maps hold for nets: the bridge networks
// the datapath serves, and the overlay networks' tunnel devices.
func ForNetworks(nets []store.Network, hostIfindex func(name string) (int, bool)) maps.Desired {
	var want maps.Desired
	for _, n := range nets {
		var tunnel int
		if dev, ok := drivers.Tunnel(n); ok {
			tunnel, _ = hostIfindex(dev)
		}
		if drivers.TraitsOf(n).Datapath {
			m := Network(n)
			m.Tunnel = uint32(tunnel)
			want.Networks = append(want.Networks, m)
		}
		if tunnel != 0 {
			want.Ifaces = append(want.Ifaces, Tunnel(n, tunnel))
		}
	}
	return want
}

// ForSandboxes is what the maps hold for sbs, on the networks of
// byID: their endpoints' host sides and addresses, and their publications.
func ForSandboxes(byID map[string]store.Network, sbs []store.Sandbox, pubs map[string][]store.Publication,
	hostIfindex func(name string) (int, bool)) maps.Desired {
	var want maps.Desired
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
			want.Ifaces = append(want.Ifaces, Iface(n, sb, ep, ifindex))
			if e, ok := Egress(n, sb, ep); ok {
				want.Egress = append(want.Egress, e)
			}
			want.Endpoints = append(want.Endpoints, Endpoints(n, ep, ifindex)...)
		}
		want.Publications = append(want.Publications, Publications(sb, pubs[sb.Name])...)
	}
	return want
}

// Network is what the datapath knows of a bridge network.
func Network(n store.Network) maps.Network {
	m := maps.Network{Index: n.Index, Subnet: n.Pool.Subnet, Gateway: n.Pool.Gateway, GatewayMAC: driver.GatewayMAC(n),
		ICCDisabled: !n.ICC, Internal: n.Internal, Masquerade: n.Masquerade, StackRoutes: drivers.TraitsOf(n).StackRoutes}
	m.Direct = directAccess(n.IPv4GatewayMode())
	if n.IPv4GatewayMode() == store.GatewayIsolated {
		// No host address on the network: the datapath must not treat the
		// pool's reserved gateway address as the host (icc=false lets
		// sandboxes reach the gateway).
		m.Gateway = netip.IPv4Unspecified()
	}
	if n.EnableIPv6 && n.Pool6.Subnet.IsValid() {
		mode := n.IPv6GatewayMode()
		m.Subnet6, m.Gateway6 = n.Pool6.Subnet, n.Pool6.Gateway
		m.Masquerade6 = driver.MasqueradeIPv6(n)
		m.Direct6 = directAccess(mode)
		if mode == store.GatewayIsolated {
			m.Gateway6 = netip.IPv6Unspecified()
		}
	}
	return m
}

// directAccess is who outside the host a gateway mode lets reach sandbox
// ports by their addresses.
func directAccess(mode string) maps.DirectAccess {
	switch mode {
	case store.GatewayNATUnprotected:
		return maps.DirectAll
	case store.GatewayRouted:
		return maps.DirectPublished
	}
	return maps.DirectNone
}

// Endpoints is where the datapath delivers packets for each address of
// a bridge endpoint whose host side has ifindex.
func Endpoints(n store.Network, ep store.Endpoint, ifindex int) []maps.Endpoint {
	var out []maps.Endpoint
	for _, a := range ep.Addrs() {
		out = append(out, maps.Endpoint{Addr: a, Ifindex: uint32(ifindex), Network: n.Index, MAC: driver.EndpointMAC(ep)})
	}
	return out
}

// Iface is what the datapath knows of an endpoint's host side, by
// its ifindex: which network, addresses and MAC may send from it (the
// MAC where ebpfnet made the veth, giving the sandbox side that MAC; a
// chained plugin's veth is its own), and whether
// the uplinks' XDP path may deliver to it: a bridge endpoint's veth whose
// sandbox side ebpfnet configures (the engine turns GRO on there). A runtime that takes the
// sandbox side over (Docker) brings it up itself, after anything ebpfnet
// could set.
func Iface(n store.Network, sb store.Sandbox, ep store.Endpoint, ifindex int) maps.Iface {
	i := maps.Iface{Ifindex: uint32(ifindex), Network: n.Index, Addr: ep.Addr, Addr6: ep.Addr6,
		XDPTarget: drivers.TraitsOf(n).XDPTarget && !sb.HandOver}
	if drivers.TraitsOf(n).OwnMAC {
		i.MAC = driver.EndpointMAC(ep)
	}
	i.Egress = Rate(sb.Bandwidth.EgressRate, sb.Bandwidth.EgressBurst)
	i.Ingress = Rate(sb.Bandwidth.IngressRate, sb.Bandwidth.IngressBurst)
	return i
}

// Egress is the egress list of a bridge endpoint's addresses (its
// sandbox's, else its network's); ok is false when it has none.
func Egress(n store.Network, sb store.Sandbox, ep store.Endpoint) (e maps.Egress, ok bool) {
	l := sb.EgressOn(n)
	if len(l) == 0 {
		return e, false
	}
	return maps.Egress{Sources: ep.Addrs(), Allow: l.Prefixes()}, true
}

// Rate is the datapath's limit of bits per second and a burst of bytes
// (none: DefaultBurst's).
func Rate(bits, burst uint64) maps.Rate {
	if bits == 0 {
		return maps.Rate{}
	}
	r := maps.Rate{BytesPerSecond: max(bits/8, 1), Burst: burst}
	if burst == 0 {
		r.Burst = DefaultBurst(r.BytesPerSecond)
	}
	return r
}

// DefaultBurst is the burst a limit of bytesPerSecond gets when none was
// asked for: what the rate sends in BurstTime, and never less than
// MinBurst.
func DefaultBurst(bytesPerSecond uint64) uint64 {
	return max(bytesPerSecond*uint64(BurstTime/time.Microsecond)/1e6, MinBurst)
}

// The default burst. A policer has no queue to slow a TCP flow down
// with: between sandboxes and hosts, whose round trips are tens of
// microseconds, no window is small enough to keep a flow under a limit,
// so a flow sends its window at once, loses what is over, then its
// retransmissions too (the bucket is empty), and waits for its
// retransmission timeout (200 ms at the least). A bucket that holds less
// than the rate's worth of that wait wastes what it cannot hold: 128 KiB
// (20 ms of 50 Mbit/s) gave one iperf3 stream 5 Mbit/s of 50. 250 ms of
// the rate gives it 98-100% (TestBandwidthLimit), 200 ms 91-98%.
const (
	BurstTime = 250 * time.Millisecond
	MinBurst  = 128 << 10
)

// Tunnel is what the datapath knows of an overlay network's VXLAN
// device: a port of the network, with no address of its own, whose frames
// the sending host's endpoint programs checked.
func Tunnel(n store.Network, ifindex int) maps.Iface {
	return maps.Iface{Ifindex: uint32(ifindex), Network: n.Index}
}

// publication is a publication as the datapath has it: on every address of
// the host (no host address given), an entry per family, as Docker
// publishes on 0.0.0.0 and [::].
// An IPv6 host address leads to the endpoint's IPv6 address, or to its
// IPv4 one when it has none: host processes then reach it through the
// socket hooks, v4-mapped, as Docker's proxy relays [::] to an IPv4
// container.
func Publication(p store.Publication, ep store.Endpoint) []maps.Publication {
	proto := p.Proto.Number()
	to6 := ep.Addr
	if ep.Addr6.IsValid() {
		to6 = ep.Addr6
	}
	entry := func(host, to netip.Addr) maps.Publication {
		m := maps.Publication{HostAddr: host, HostPort: p.HostPort, Proto: proto, Addr: to, Port: p.Port, Sources: maps.Sources(p.Sources)}
		if p.Balance {
			m.Backends = []maps.Backend{{Addr: to, Port: p.Port}} // maps.Merge joins the others'
		}
		return m
	}
	switch {
	case !p.HostIP.IsValid():
		return []maps.Publication{entry(netip.IPv4Unspecified(), ep.Addr), entry(netip.IPv6Unspecified(), to6)}
	case p.HostIP.Is4(): // 0.0.0.0 included: IPv4 alone, as Docker has it
		return []maps.Publication{entry(p.HostIP, ep.Addr)}
	}
	return []maps.Publication{entry(p.HostIP, to6)}
}

// Publications is how the datapath has a sandbox's publications, each
// leading to the endpoint it names.
func Publications(sb store.Sandbox, pubs []store.Publication) []maps.Publication {
	var out []maps.Publication
	for _, p := range pubs {
		if ep, ok := sb.Endpoint(p.EndpointID); ok {
			out = append(out, Publication(p, ep)...)
		}
	}
	return out
}

// Balanced is the entries of the balanced host ports that keys (entries
// of some records) have, as every record in tx makes them (maps.Merge): a
// port no record publishes any more has none.
func Balanced(tx *store.Tx, keys []maps.Publication) ([]maps.Publication, error) {
	type portKey struct {
		addr  netip.Addr
		port  uint16
		proto uint8
	}
	want := map[portKey]bool{}
	for _, k := range keys {
		if k.Balanced() {
			want[portKey{k.HostAddr, k.HostPort, k.Proto}] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	all, err := tx.AllPublications()
	if err != nil {
		return nil, err
	}
	var ms []maps.Publication
	for _, name := range slices.Sorted(stdmaps.Keys(all)) {
		pubs := slices.DeleteFunc(slices.Clone(all[name]), func(p store.Publication) bool { return !p.Balance })
		if len(pubs) == 0 {
			continue
		}
		sb, ok, err := tx.SandboxNamed(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, m := range Publications(sb, pubs) {
			if want[portKey{m.HostAddr, m.HostPort, m.Proto}] {
				ms = append(ms, m)
			}
		}
	}
	return maps.Merge(ms), nil
}

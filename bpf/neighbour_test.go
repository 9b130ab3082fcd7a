package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/maps"
)

// The neighbour of the testbed's sender on appnet, on the host side
// neighbourIfindex, with the hardware address the test frames are sent to.
const neighbourIfindex = 3

var neighbourMAC = net.HardwareAddr{2, 0x42, 0, 0, 0, 1}

// addNeighbour registers the sender's neighbour 172.19.5.3 (fd00:19::5:3)
// on network, with mac.
func (tb *testbed) addNeighbour(t *testing.T, network uint32, mac net.HardwareAddr) {
	t.Helper()
	for _, a := range []string{"172.19.5.3", "fd00:19::5:3"} {
		must(t, tb.maps.PutEndpoint(maps.Endpoint{Addr: netip.MustParseAddr(a), Ifindex: neighbourIfindex, Network: network, MAC: mac}))
	}
}

// Packets between endpoints of one network are delivered into the
// receiver's namespace by the sender's program, never bridged: the bridge
// would hand them to the host's netfilter (br_netfilter), whose FORWARD
// policy drops them on Docker, ufw and firewalld hosts. Everything that
// is not a neighbour's, or not allowed, is judged as before.
func TestToNeighbour(t *testing.T) {
	const udp, tcp, icmp, icmp6 = 17, 6, 1, 58
	me6 := "fd00:19::5:2"
	otherMAC := net.HardwareAddr{2, 0x42, 0, 0, 0, 9}
	tests := []struct {
		name             string
		iccOff, internal bool
		stackRoutes      bool
		network          uint32 // the neighbour's
		mac              net.HardwareAddr
		pkt              []byte
		verdict          uint32
		counter          string
	}{
		{"udp", false, false, false, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", udp), tcActRedirect, "to_neighbour"},
		{"tcp", false, false, false, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActRedirect, "to_neighbour"},
		{"icmp", false, false, false, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", icmp), tcActRedirect, "to_neighbour"},
		{"ipv6 tcp", false, false, false, 1, neighbourMAC, ipv6Packet(me6, "fd00:19::5:3", tcp, 0), tcActRedirect, "to_neighbour"},
		{"ipv6 echo", false, false, false, 1, neighbourMAC, ipv6Packet(me6, "fd00:19::5:3", icmp6, 128), tcActRedirect, "to_neighbour"},
		{"internal network", false, true, false, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", udp), tcActRedirect, "to_neighbour"},
		// What the checks before refused, they still refuse.
		{"icc off", true, false, false, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActShot, "drop_icc"},
		{"ipv6, icc off", true, false, false, 1, neighbourMAC, ipv6Packet(me6, "fd00:19::5:3", tcp, 0), tcActShot, "drop_icc"},
		{"forged source", false, false, false, 1, neighbourMAC, ipv4Packet("172.19.5.9", "172.19.5.3", tcp), tcActShot, "drop_spoofed"},
		// A frame to another hardware address (the gateway's, routing
		// through the host) is not the neighbour's to take.
		{"addressed to another mac", false, false, false, 1, otherMAC, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActUnspec, "pass"},
		// An endpoint registered on another network is not a neighbour,
		// even at an address of the sender's subnet.
		{"endpoint of another network", false, false, false, 2, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActUnspec, "pass"},
		// A chained network's plugin connects its neighbours.
		{"chained network", false, false, true, 1, neighbourMAC, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActUnspec, "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) {
				n.ICCDisabled, n.Internal, n.StackRoutes = tt.iccOff, tt.internal, tt.stackRoutes
			})
			tb.addNeighbour(t, tt.network, tt.mac)
			tb.run(t, tb.dp.Endpoint.FromContainer, tt.pkt, tt.verdict, "from_container/"+tt.counter)
		})
	}
}

// A packet to the sender's own address comes back through its own stack,
// not its veth: the program never sends it back where it came from.
func TestToNeighbourNeverToItself(t *testing.T) {
	tb := newTestbed6(t, func(*maps.Network) {})
	must(t, tb.maps.PutEndpoint(maps.Endpoint{Addr: netip.MustParseAddr("172.19.5.3"), Ifindex: endpointIfindex, Network: 1, MAC: neighbourMAC}))
	tb.run(t, tb.dp.Endpoint.FromContainer, ipv4Packet("172.19.5.2", "172.19.5.3", 6), tcActUnspec, "from_container/pass")
}

// neighbourSolicitation is a solicitation from src (hardware address
// 02:00:00:00:00:02) to dst for target, with hop limit hops and the
// source link-layer address option.
func neighbourSolicitation(src, dst, target string, hops uint8) []byte {
	l4 := make([]byte, 32)
	l4[0] = 135
	t := netip.MustParseAddr(target).As16()
	copy(l4[8:], t[:])
	l4[24], l4[25] = 1, 1
	copy(l4[26:], []byte{2, 0, 0, 0, 0, 2})
	frame := ipv6Frame(58, netip.MustParseAddr(src), netip.MustParseAddr(dst), l4, false)
	frame[14+7] = hops
	return frame
}

// runOut runs prog on pkt and returns the verdict and the packet as the
// program left it.
func (tb *testbed) runOut(t *testing.T, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbContext{IngressIfindex: tb.ingress}}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("run %s: %v", prog, err)
	}
	return ret, opts.DataOut
}

// A sandbox's solicitation for a neighbour's address is answered in the
// neighbour's name and sent back into the sandbox: neighbour discovery
// between sandboxes would otherwise cross the bridge, and ip6tables'
// FORWARD with it.
func TestSolicitationAnswered(t *testing.T) {
	const me = "fd00:19::5:2"
	for _, src := range []string{me, "fe80::42:acff:fe13:502"} {
		for _, dst := range []string{"ff02::1:ff05:3", "fd00:19::5:3"} { // multicast, and a unicast probe
			t.Run(src+" to "+dst, func(t *testing.T) {
				tb := newTestbed6(t, func(*maps.Network) {})
				tb.addNeighbour(t, 1, neighbourMAC)
				before := tb.counters(t)
				ret, out := tb.runOut(t, tb.dp.Endpoint.FromContainer, neighbourSolicitation(src, dst, "fd00:19::5:3", 255))
				if ret != tcActRedirect {
					t.Fatalf("verdict = %#x, want a redirect back into the sandbox", ret)
				}
				if n := tb.counters(t)["from_container/neighbour_answered"] - before["from_container/neighbour_answered"]; n != 1 {
					t.Errorf("neighbour_answered moved by %d, want 1", n)
				}
				checkAdvertisement(t, out, src)
			})
		}
	}
}

// checkAdvertisement checks a neighbour advertisement of fd00:19::5:3 at
// neighbourMAC, sent to the soliciting sandbox at dst.
func checkAdvertisement(t *testing.T, out []byte, dst string) {
	t.Helper()
	if len(out) != 14+40+32 {
		t.Fatalf("advertisement of %d bytes, want 86: %x", len(out), out)
	}
	if !bytes.Equal(out[0:6], []byte{2, 0, 0, 0, 0, 2}) || !bytes.Equal(out[6:12], neighbourMAC) {
		t.Errorf("frame from %x to %x, want from the neighbour %s to the sandbox 02:00:00:00:00:02",
			out[6:12], out[0:6], neighbourMAC)
	}
	ip, l4 := out[14:54], out[54:]
	src, _ := netip.AddrFromSlice(ip[8:24])
	d, _ := netip.AddrFromSlice(ip[24:40])
	if src != netip.MustParseAddr("fd00:19::5:3") || d != netip.MustParseAddr(dst) || ip[7] != 255 || ip[6] != 58 ||
		binary.BigEndian.Uint16(ip[4:]) != 32 {
		t.Errorf("IPv6 header %x: want from fd00:19::5:3 to %s, hop limit 255, 32 bytes of ICMPv6", ip, dst)
	}
	target, _ := netip.AddrFromSlice(l4[8:24])
	if l4[0] != 136 || l4[1] != 0 || l4[4] != 0x60 || target != netip.MustParseAddr("fd00:19::5:3") {
		t.Errorf("advertisement %x: want type 136, solicited and override, target fd00:19::5:3", l4)
	}
	if l4[24] != 2 || l4[25] != 1 || !bytes.Equal(l4[26:32], neighbourMAC) {
		t.Errorf("option %x: want the target's link-layer address %s", l4[24:], neighbourMAC)
	}
	if sum := checksum(l4, pseudo6(ip, len(l4))); sum != 0 {
		t.Errorf("ICMPv6 checksum does not verify (%#x)", sum)
	}
}

// Solicitations that are not for a neighbour, or not to be answered, go
// on as before.
func TestSolicitationsNotAnswered(t *testing.T) {
	const me = "fd00:19::5:2"
	tests := []struct {
		name        string
		stackRoutes bool
		pkt         []byte
	}{
		// Duplicate address detection: an answer would claim a conflict.
		{"from the unspecified address", false, neighbourSolicitation("::", "ff02::1:ff05:3", "fd00:19::5:3", 255)},
		// RFC 4861 7.1.1: routers on the way would have lowered it.
		{"hop limit below 255", false, neighbourSolicitation(me, "ff02::1:ff05:3", "fd00:19::5:3", 64)},
		{"for the gateway", false, neighbourSolicitation(me, "ff02::1:ff00:1", "fd00:19::1", 255)},
		{"for an address no endpoint has", false, neighbourSolicitation(me, "ff02::1:ff05:7", "fd00:19::5:7", 255)},
		{"on a chained network", true, neighbourSolicitation(me, "ff02::1:ff05:3", "fd00:19::5:3", 255)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.StackRoutes = tt.stackRoutes })
			tb.addNeighbour(t, 1, neighbourMAC)
			tb.run(t, tb.dp.Endpoint.FromContainer, tt.pkt, tcActUnspec, "from_container/pass")
		})
	}
	// The neighbour's address on another network is none of the sender's.
	tb := newTestbed6(t, func(*maps.Network) {})
	tb.addNeighbour(t, 2, neighbourMAC)
	tb.run(t, tb.dp.Endpoint.FromContainer, neighbourSolicitation(me, "ff02::1:ff05:3", "fd00:19::5:3", 255), tcActUnspec, "from_container/pass")
}

// On an overlay network, a frame for an address no endpoint here has is
// for an endpoint on another host: it leaves by the network's VXLAN
// device, not through the bridge; what goes to the gateway or to a group
// is the bridge's as before.
func TestToNeighbourOnAnotherHost(t *testing.T) {
	const tunnelIfindex = 42
	gatewayMAC := net.HardwareAddr{2, 0x42, 0, 0, 0, 1} // the test frames' destination
	tests := []struct {
		name      string
		tunnel    uint32
		gatewayTo bool // the frame goes to the gateway's hardware address
		verdict   uint32
		counter   string
	}{
		{"overlay", tunnelIfindex, false, tcActRedirect, "to_neighbour"},
		{"overlay, to the gateway's mac", tunnelIfindex, true, tcActUnspec, "pass"},
		{"a network of this host alone", 0, false, tcActUnspec, "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) {
				n.Tunnel = tt.tunnel
				n.GatewayMAC = net.HardwareAddr{2, 0x42, 0, 0, 0, 0xfe}
				if tt.gatewayTo {
					n.GatewayMAC = gatewayMAC
				}
			})
			tb.run(t, tb.dp.Endpoint.FromContainer, ipv4Packet("172.19.5.2", "172.19.5.7", 6), tt.verdict, "from_container/"+tt.counter)
		})
	}
}

// What an overlay's VXLAN device decapsulates for an endpoint here goes
// straight into its namespace; the rest goes on to the bridge.
func TestFromTunnel(t *testing.T) {
	tests := []struct {
		name    string
		network uint32 // the neighbour's
		pkt     []byte
		verdict uint32
		counter string
	}{
		{"to an endpoint here", 1, ipv4Packet("172.19.9.9", "172.19.5.3", 6), tcActRedirect, "to_neighbour"},
		{"ipv6, to an endpoint here", 1, ipv6Packet("fd00:19::9:9", "fd00:19::5:3", 17, 0), tcActRedirect, "to_neighbour"},
		{"to an endpoint of another network", 2, ipv4Packet("172.19.9.9", "172.19.5.3", 6), tcActUnspec, "pass"},
		{"arp", 1, arpPacket(), tcActUnspec, "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(*maps.Network) {})
			// The programs run on ifindex 1: here the network's VXLAN device.
			must(t, tb.maps.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1}))
			tb.addNeighbour(t, tt.network, neighbourMAC)
			tb.run(t, tb.dp.Endpoint.FromTunnel, tt.pkt, tt.verdict, "from_tunnel/"+tt.counter)
		})
	}
}

// A hairpin's replies go from the publishing sandbox to the client
// sandbox's own address, a neighbour's: they must still be translated
// back to the published address the client connected to, while a flow
// between the two that no publication leads to goes untranslated, past
// conntrack.
func TestHairpinReplyToANeighbourIsTranslated(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	client := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	published := ap(hostAddr, 8080)

	ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(client.addr, 40000), published, syn, 100, 0), client.ifindex)
	if got := verify(t, out); ret != tcActRedirect || got.dst != ap(webAddr, 80) {
		t.Fatalf("the client sandbox's SYN to %s: verdict %d, to %s; want it published to %s", published, ret, got.dst, ap(webAddr, 80))
	}
	ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 80), ap(client.addr, 40000), syn|ack, 5000, 101))
	if got := verify(t, out); ret != tcActRedirect || got.src != published || got.dst != ap(client.addr, 40000) {
		t.Errorf("web's SYN-ACK to the client sandbox: verdict %d, %s -> %s; want it from %s, the address the client connected to", ret, got.src, got.dst, published)
	}

	// web's own connection to the client, from a port no publication leads to.
	ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 5000), ap(client.addr, 6000), syn, 1, 0))
	if got := verify(t, out); ret == tcActShot || got.src != ap(webAddr, 5000) || got.dst != ap(client.addr, 6000) {
		t.Errorf("web's SYN to the client sandbox: verdict %d, %s -> %s; want it untranslated", ret, got.src, got.dst)
	}
}

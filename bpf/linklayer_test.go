package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/maps"
)

// runVerdict runs prog on pkt and returns its verdict and how much the
// counter named moved.
func (tb *testbed) runVerdict(t *testing.T, prog *ebpf.Program, pkt []byte, counter string) (uint32, uint64) {
	t.Helper()
	before := tb.counters(t)
	ret, _ := tb.runOut(t, prog, pkt)
	return ret, tb.counters(t)[counter] - before[counter]
}

// vlanTagged inserts an 802.1Q (or 802.1ad) tag of VLAN 0 after the
// hardware addresses of frame.
func vlanTagged(frame []byte, tpid uint16) []byte {
	out := append([]byte{}, frame[:12]...)
	out = append(out, byte(tpid>>8), byte(tpid), 0, 0)
	return append(out, frame[12:]...)
}

// A sandbox (with CAP_NET_RAW, which Docker grants) that sends a frame
// with two VLAN-0 tags would carry IP past every check: the veth's
// receive path moves the outer tag into the skb, the program sees the
// inner tag's EtherType, the bridge forwards it by MAC and the receiver's
// kernel strips both tags. No sandbox has a VLAN: tagged frames from
// sandboxes are dropped (drop_vlan_tagged). BPF_PROG_RUN does not move a
// tag out of the frame, so one tag here stands for what the program sees
// of a double-tagged frame.
func TestVLANTaggedFramesFromSandboxesDropped(t *testing.T) {
	const tcp = 6
	me6 := "fd00:19::5:2"
	for _, tt := range []struct {
		name   string
		iccOff bool
		pkt    []byte
	}{
		{"icc off, to a neighbour", true, ipv4Packet("172.19.5.2", "172.19.5.3", tcp)},
		{"forged source, to a neighbour", false, ipv4Packet("172.19.5.9", "172.19.5.3", tcp)},
		{"forged source, to the gateway", false, ipv4Packet("172.20.0.5", "172.19.0.1", tcp)},
		{"ipv6, icc off, to a neighbour", true, ipv6Packet(me6, "fd00:19::5:3", tcp, 0)},
		{"ipv6, forged source", false, ipv6Packet("fd00:19::5:9", "fd00:19::5:3", tcp, 0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.ICCDisabled = tt.iccOff })
			tb.addNeighbour(t, 1, neighbourMAC)
			// Untagged, the same packet is refused.
			if ret, _ := tb.runVerdict(t, tb.dp.Endpoint.FromContainer, tt.pkt, ""); ret != tcActShot {
				t.Fatalf("untagged: verdict %#x, want the drop the tagged frame should get too", ret)
			}
			for _, tpid := range []uint16{0x8100, 0x88a8} {
				ret, n := tb.runVerdict(t, tb.dp.Endpoint.FromContainer, vlanTagged(tt.pkt, tpid), "from_container/drop_vlan_tagged")
				if ret != tcActShot || n != 1 {
					t.Errorf("tagged %#04x: verdict %#x, drop_vlan_tagged moved by %d; want it dropped as drop_vlan_tagged", tpid, ret, n)
				}
			}
		})
	}
}

// A peer host puts on the overlay what its own stack routes there too
// (the overlay's subnet is a connected route on every host's bridge): a
// client outside that reaches a peer host that forwards would reach this
// host's sandboxes past the gateway mode and --internal, which no
// endpoint program asked. Peers' endpoints send from the network's
// subnet; from_tunnel drops any other source.
func TestFromTunnelRefusesSourcesOutsideTheNetwork(t *testing.T) {
	const tcp = 6
	for _, tt := range []struct {
		name     string
		internal bool
		pkt      []byte
	}{
		{"client outside, nat gateway mode", false, ipv4Packet("10.0.0.9", "172.19.5.3", tcp)},
		{"another network's address", false, ipv4Packet("172.20.0.5", "172.19.5.3", tcp)},
		{"ipv6 client outside", false, ipv6Packet("2001:db8::9", "fd00:19::5:3", tcp, 0)},
		{"client outside, internal network", true, ipv4Packet("10.0.0.9", "172.19.5.3", tcp)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.Internal = tt.internal })
			// The programs run on ifindex 1: here the network's VXLAN device.
			must(t, tb.maps.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1}))
			tb.addNeighbour(t, 1, neighbourMAC)
			ret, n := tb.runVerdict(t, tb.dp.Endpoint.FromTunnel, tt.pkt, "from_tunnel/to_neighbour")
			if ret != tcActShot {
				t.Errorf("verdict %#x (to_neighbour moved by %d), want TC_ACT_SHOT: an outside source reaches an unpublished sandbox port through a peer host", ret, n)
			}
		})
	}
}

// A sandbox sends from its own MAC (and, in ARP, names it as the
// sender's): a frame from a neighbour's MAC would teach the bridge that
// the neighbour lives behind the sender's port, and the host's frames to
// the neighbour would reach the sender. And a unicast packet for another
// endpoint (one the bridge flooded, its MAC not yet learnt) never reaches
// a sandbox that could read it with a raw socket (drop_misdelivered).
func TestSourceMACValidated(t *testing.T) {
	const udp = 17
	senderMAC := []byte{2, 0x42, 172, 19, 5, 2}
	fromNeighbourMAC := func(frame []byte) []byte {
		out := append([]byte{}, frame...)
		copy(out[6:12], neighbourMAC)
		return out
	}
	arp := arpPacket()
	copy(arp[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1}) // Ethernet/IPv4 request
	copy(arp[22:], neighbourMAC)                   // sender hardware address
	copy(arp[28:], []byte{172, 19, 5, 2})          // from the sender's own IP
	copy(arp[38:], []byte{172, 19, 0, 1})          // for the gateway
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"arp request from its own IP", fromNeighbourMAC(arp)},
		{"udp to the gateway", fromNeighbourMAC(ipv4Packet("172.19.5.2", "172.19.0.1", udp))},
		{"ipv6 udp to the gateway", fromNeighbourMAC(ipv6Packet("fd00:19::5:2", "fd00:19::1", udp, 0))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(*maps.Network) {})
			tb.addNeighbour(t, 1, neighbourMAC)
			for _, a := range []string{"172.19.5.2", "fd00:19::5:2"} {
				must(t, tb.maps.PutEndpoint(maps.Endpoint{Addr: netip.MustParseAddr(a), Ifindex: endpointIfindex, Network: 1, MAC: senderMAC}))
			}
			must(t, tb.maps.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1, Addr: netip.MustParseAddr("172.19.5.2"),
				Addr6: netip.MustParseAddr("fd00:19::5:2"), MAC: senderMAC}))
			if ret, n := tb.runVerdict(t, tb.dp.Endpoint.FromContainer, tt.pkt, "from_container/drop_spoofed"); ret != tcActShot || n != 1 {
				t.Errorf("verdict %#x, drop_spoofed moved by %d; want it dropped as drop_spoofed: a frame from a neighbour's hardware address teaches the bridge that the neighbour is here", ret, n)
			}
			// From its own MAC, the same frame is judged as ever.
			own := append([]byte{}, tt.pkt...)
			copy(own[6:12], senderMAC)
			if tt.name == "arp request from its own IP" {
				copy(own[22:], senderMAC)
			}
			if ret, _ := tb.runVerdict(t, tb.dp.Endpoint.FromContainer, own, ""); ret == tcActShot {
				t.Errorf("from its own MAC: verdict %#x, want it passed", ret)
			}
		})
	}
	// A unicast packet of the host's for the neighbour, at the sender's veth.
	t.Run("host's packet for the neighbour at the sender's veth", func(t *testing.T) {
		tb := newTestbed6(t, func(*maps.Network) {})
		tb.addNeighbour(t, 1, neighbourMAC)
		if ret, _ := tb.runVerdict(t, tb.dp.Endpoint.ToContainer, ipv4Packet("172.19.0.1", "172.19.5.3", udp), ""); ret != tcActShot {
			t.Errorf("verdict %#x, want TC_ACT_SHOT: the endpoint at 172.19.5.2 receives a unicast packet for 172.19.5.3", ret)
		}
	})
}

// The NDP responder never answers for a v4-mapped target: the endpoints
// map keys IPv4 addresses so, and no endpoint has such an IPv6 address.
func TestSolicitationForV4MappedTargetUnanswered(t *testing.T) {
	const me = "fd00:19::5:2"
	tb := newTestbed6(t, func(*maps.Network) {})
	tb.addNeighbour(t, 1, neighbourMAC)
	for _, dst := range []string{"ff02::1:ff13:503", "fd00:19::5:3"} {
		ret, n := tb.runVerdict(t, tb.dp.Endpoint.FromContainer,
			neighbourSolicitation(me, dst, "::ffff:172.19.5.3", 255), "from_container/neighbour_answered")
		// Sent to the neighbour itself, it is delivered to it, as any
		// packet to a neighbour is; it is never answered in its name.
		if n != 0 {
			t.Errorf("to %s: verdict %#x, neighbour_answered moved by %d: a solicitation for a v4-mapped target is answered", dst, ret, n)
		}
	}
}

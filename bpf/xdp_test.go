package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

// xdpContext is the kernel's struct xdp_md for BPF_PROG_RUN: the frame
// spans data to data_end, and it came in on ingress_ifindex.
type xdpContext struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runXDP runs the uplink's XDP program on pkt as if it came in on the
// bed's uplink.
func (nb *natbed) runXDP(t testing.TB, pkt []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)),
		Context: xdpContext{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(nb.uplink)}}
	var ret uint32
	must(t, namespace.Do(nb.ns, func() (err error) {
		ret, err = nb.dp.UplinkXDP.UplinkXdp.Run(opts)
		return err
	}))
	return ret, opts.DataOut
}

// xdpTargets makes the bed's first endpoint (on loopback) one XDP may
// deliver to, IPv6 address included when the bed has one.
func (nb *natbed) xdpTargets(t testing.TB, addr6 netip.Addr) {
	t.Helper()
	must(t, namespace.Do(nb.ns, func() error {
		return nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr, Addr6: addr6, XDPTarget: true})
	}))
}

// withPayload adds n bytes to a TCP or UDP frame built by segment and
// fixes its lengths and checksums.
func withPayload(pkt []byte, n int) []byte {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i*7 + 3)
	}
	pkt = append(bytes.Clone(pkt), payload...)
	v6 := binary.BigEndian.Uint16(pkt[12:]) == 0x86dd
	l3 := 20
	if v6 {
		l3 = 40
	}
	ip, l4 := pkt[14:14+l3], pkt[14+l3:]
	proto := ip[9]
	if v6 {
		proto = ip[6]
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		fixIPCsum(pkt)
	}
	if proto == 17 {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	off := csumOffset(proto)
	binary.BigEndian.PutUint16(l4[off:], 0)
	sum := pseudo(ip, len(l4))
	if v6 {
		sum = pseudo6(ip, len(l4))
	}
	binary.BigEndian.PutUint16(l4[off:], checksum(l4, sum))
	return pkt
}

// A published flow's packets go from XDP straight to the endpoint,
// translated as TC translates them (same conntrack entries, TTL, MACs,
// checksums), and the sandbox's replies are translated back on TC from
// the entries XDP made.
func TestXDPPublishedFlow(t *testing.T) {
	for _, c := range []struct {
		name         string
		proto        uint8
		client, host netip.Addr
		web          netip.Addr
	}{
		{"tcp", 6, clientAddr, hostAddr, webAddr},
		{"udp", 17, clientAddr, hostAddr, webAddr},
		{"tcp over ipv6", 6, clientAddr6, hostAddr6, webAddr6},
		{"udp over ipv6", 17, clientAddr6, hostAddr6, webAddr6},
	} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed6(t)
			nb.xdpTargets(t, webAddr6)
			hostAll := netip.IPv4Unspecified()
			if c.host.Is6() {
				hostAll = netip.IPv6Unspecified()
			}
			must(t, nb.maps.PutPublication(maps.Publication{HostAddr: hostAll, HostPort: 8080, Proto: c.proto, Addr: c.web, Port: 80}))
			for i, size := range []int{0, 1, 511, 512, 513, 1025, 1400} {
				in := withPayload(segment(c.proto, ap(c.client, uint16(40000+i)), ap(c.host, 8080), false), size)
				ret, out := nb.runXDP(t, in)
				if ret != xdpRedirect {
					t.Fatalf("%d bytes: verdict %d, want XDP_REDIRECT", size, ret)
				}
				got := verify(t, out)
				if got.src != ap(c.client, uint16(40000+i)) || got.dst != ap(c.web, 80) {
					t.Errorf("%d bytes: rewritten to %s -> %s, want the client's own address to %s", size, got.src, got.dst, ap(c.web, 80))
				}
				if hops := out[14+8]; (c.client.Is6() && out[14+7] != 63) || (c.client.Is4() && hops != 63) {
					t.Errorf("%d bytes: TTL or hop limit not taken down to 63", size)
				}
				if !bytes.Equal(got.ethDst, net.HardwareAddr{2, 0x42, 172, 17, 0, 2}) || !bytes.Equal(got.ethSrc, bridgeNet.GatewayMAC) {
					t.Errorf("%d bytes: frame %s -> %s, want from the bridge to the endpoint", size, got.ethSrc, got.ethDst)
				}
			}
			if _, _, ok := nb.ct(t, flowOf(c.proto, ap(c.client, 40000), ap(c.host, 8080))); !ok {
				t.Fatal("no conntrack entry for the flow XDP took")
			}
			// A later packet of the flow is tracked on XDP too.
			if ret, _ := nb.runXDP(t, withPayload(segment(c.proto, ap(c.client, 40000), ap(c.host, 8080), false), 10)); ret != xdpRedirect {
				t.Fatalf("later packet: verdict %d, want XDP_REDIRECT", ret)
			}
			if n := nb.counter(t, "uplink_xdp", "dnat"); n != 7 {
				t.Errorf("uplink_xdp/dnat counted %d, want 7", n)
			}
			if n := nb.counter(t, "uplink_xdp", "tracked"); n != 1 {
				t.Errorf("uplink_xdp/tracked counted %d, want 1", n)
			}
			reply := segment(c.proto, ap(c.web, 80), ap(c.client, 40000), false)
			if c.proto == 6 {
				reply = tcpSegment(ap(c.web, 80), ap(c.client, 40000), syn|ack, 5000, 12346)
			}
			ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, reply)
			if ret != tcActRedirect {
				t.Fatalf("reply verdict %d, want TC_ACT_REDIRECT", ret)
			}
			if got := verify(t, out); got.src != ap(c.host, 8080) || got.dst != ap(c.client, 40000) {
				t.Errorf("reply rewritten to %s -> %s, want from %s", got.src, got.dst, ap(c.host, 8080))
			}
		})
	}
}

// The replies to a masqueraded flow come back through XDP.
func TestXDPMasqueradeReply(t *testing.T) {
	nb := newNATBed(t)
	nb.xdpTargets(t, netip.Addr{})
	web, client := ap(webAddr, 33000), ap(clientAddr, 80)
	out := nb.mustVerdict(t, "SYN", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, syn, 100, 0), 0, tcActRedirect)
	ret, pkt := nb.runXDP(t, tcpSegment(client, out.src, syn|ack, 5000, 101))
	if ret != xdpRedirect {
		t.Fatalf("SYN-ACK verdict %d, want XDP_REDIRECT", ret)
	}
	if got := verify(t, pkt); got.src != client || got.dst != web {
		t.Errorf("SYN-ACK rewritten to %s -> %s, want %s -> %s", got.src, got.dst, client, web)
	}
	nb.mustVerdict(t, "ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 101, 5001), 0, tcActRedirect)
	if st, assured := nb.state(t, flowOf(6, web, client)); !assured || st != bpf.DatapathCtStateCT_TCP_ESTABLISHED {
		t.Errorf("after a handshake across XDP and TC: state %v, assured %v", st, assured)
	}
}

// What XDP cannot finish on its own passes to TC untouched, and TC
// finishes it from the same conntrack: a flow may start on one path and
// go on on the other.
func TestXDPLeavesTheRestToTC(t *testing.T) {
	publish := func(nb *natbed, proto uint8) {
		must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: proto, Addr: webAddr, Port: 80}))
	}
	syn := func(port uint16) []byte { return segment(6, ap(clientAddr, port), ap(hostAddr, 8080), false) }
	for _, c := range []struct {
		name   string
		target bool
		pkt    []byte
		// tc says TC delivers what XDP passed.
		tc bool
	}{
		{"endpoint not ready for redirected frames", false, syn(40001), true},
		{"checksum left to offload", true, func() []byte {
			pkt := syn(40002)
			// What a local stack sends with offload: the pseudo-header's sum alone.
			binary.BigEndian.PutUint16(pkt[34+16:], ^checksum(nil, pseudo(pkt[14:34], len(pkt)-34)))
			return pkt
		}(), false},
		{"TTL running out", true, func() []byte {
			pkt := syn(40003)
			pkt[14+8] = 1
			return fixIPCsum(pkt)
		}(), true},
		{"ICMP echo", true, segment(1, ap(clientAddr, 7), ap(hostAddr, 0), false), false},
		{"first fragment", true, func() []byte {
			pkt := syn(40004)
			pkt[14+6] = 0x20 // more fragments
			return fixIPCsum(pkt)
		}(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed(t)
			publish(nb, 6)
			if c.target {
				nb.xdpTargets(t, netip.Addr{})
			}
			ret, out := nb.runXDP(t, c.pkt)
			if ret != xdpPass {
				t.Fatalf("verdict %d, want XDP_PASS", ret)
			}
			if !bytes.Equal(out, c.pkt) {
				t.Errorf("XDP changed a packet it passed on: %x", out)
			}
			if nb.counter(t, "uplink_xdp", "pass") != 1 {
				t.Error("uplink_xdp/pass did not count")
			}
			if !c.tc {
				return
			}
			ret, _ = nb.run(t, nb.dp.Uplink.UplinkIngress, c.pkt)
			// Delivered, or for a TTL that runs out answered with an ICMP
			// error: a redirect either way.
			if ret != tcActRedirect {
				t.Fatalf("TC verdict %d on what XDP passed, want TC_ACT_REDIRECT", ret)
			}
		})
	}
}

// XDP drops, before an skb exists, what cannot be valid: malformed IP,
// TCP and UDP headers, and packets to a published port from addresses no
// neighbour sends from. TC drops the latter too.
func TestXDPEarlyDrop(t *testing.T) {
	nb := newNATBed6(t)
	nb.xdpTargets(t, webAddr6)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr6, Port: 80}))
	good := func() []byte { return segment(6, ap(clientAddr, 40000), ap(hostAddr, 8080), false) }
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"IPv4 header length under 20", func() []byte { p := good(); p[14] = 0x44; return fixIPCsum(p) }()},
		{"IPv4 total length past the frame", func() []byte {
			p := good()
			binary.BigEndian.PutUint16(p[16:], 1500)
			return fixIPCsum(p)
		}()},
		{"IPv4 total length under its header", func() []byte {
			p := good()
			binary.BigEndian.PutUint16(p[16:], 12)
			return fixIPCsum(p)
		}()},
		{"version 6 in an IPv4 frame", func() []byte { p := good(); p[14] = 0x65; return fixIPCsum(p) }()},
		{"TCP data offset under 5", func() []byte { p := good(); p[34+12] = 4 << 4; return p }()},
		{"TCP header cut short", func() []byte {
			p := good()[:34+12]
			binary.BigEndian.PutUint16(p[16:], 20+12)
			return fixIPCsum(p)
		}()},
		{"UDP length past the datagram", func() []byte {
			p := segment(17, ap(clientAddr, 40000), ap(hostAddr, 53), false)
			binary.BigEndian.PutUint16(p[34+4:], 200)
			return p
		}()},
		{"IPv6 payload length past the frame", func() []byte {
			p := segment(6, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false)
			binary.BigEndian.PutUint16(p[14+4:], 900)
			return p
		}()},
	} {
		ret, _ := nb.runXDP(t, c.pkt)
		if ret != xdpDrop {
			t.Errorf("%s: verdict %d, want XDP_DROP", c.name, ret)
		}
	}
	if n := nb.counter(t, "uplink_xdp", "drop_malformed"); n != 8 {
		t.Errorf("uplink_xdp/drop_malformed counted %d, want 8", n)
	}
	martians := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("0.1.2.3"),
		netip.MustParseAddr("224.0.0.1"), netip.MustParseAddr("255.255.255.255"), hostAddr,
		netip.MustParseAddr("::1"), netip.MustParseAddr("::"), netip.MustParseAddr("ff02::1"), hostAddr6}
	for i, src := range martians {
		dst := hostAddr
		if src.Is6() {
			dst = hostAddr6
		}
		pkt := segment(6, ap(src, uint16(40000+i)), ap(dst, 8080), false)
		if ret, _ := nb.runXDP(t, pkt); ret != xdpDrop {
			t.Errorf("XDP: from %s to a published port: verdict %d, want XDP_DROP", src, ret)
		}
		if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, pkt, nb.uplink); ret != tcActShot {
			t.Errorf("TC: from %s to a published port: verdict %d, want TC_ACT_SHOT", src, ret)
		}
		// Not to a publication: the host's business.
		if ret, _ := nb.runXDP(t, segment(6, ap(src, uint16(40000+i)), ap(dst, 22), false)); ret != xdpPass {
			t.Errorf("XDP: from %s to an unpublished port: verdict %d, want XDP_PASS", src, ret)
		}
	}
	if n := nb.counter(t, "uplink_xdp", "drop_martian_source"); n != uint64(len(martians)) {
		t.Errorf("uplink_xdp/drop_martian_source counted %d, want %d", n, len(martians))
	}
	if n := nb.counter(t, "uplink", "drop_martian_source"); n != uint64(len(martians)) {
		t.Errorf("uplink/drop_martian_source counted %d, want %d", n, len(martians))
	}
	// The packet they were forged from gets in, and so does one from
	// class E, unicast to Linux.
	if ret, _ := nb.runXDP(t, good()); ret != xdpRedirect {
		t.Errorf("a valid packet: verdict %d, want XDP_REDIRECT", ret)
	}
	if ret, _ := nb.runXDP(t, segment(6, ap(netip.MustParseAddr("240.0.0.1"), 40000), ap(hostAddr, 8080), false)); ret != xdpRedirect {
		t.Errorf("from 240.0.0.1: verdict %d, want XDP_REDIRECT", ret)
	}
}

// The first fragment of a UDP datagram carries the UDP header of the
// whole datagram: its length field is the datagram's, longer than the
// fragment's payload. XDP must leave it to TC (fragments are TC's) and
// never drop it as malformed: not to a publication (TC translates every
// fragment), not to the host's own sockets (a DNSSEC answer, NFS over
// UDP), not as the reply of a masqueraded flow.
func TestXDPPassesUDPFirstFragments(t *testing.T) {
	for _, c := range []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"to a publication", ap(clientAddr, 40000), ap(hostAddr, 8053)},
		{"to a host socket", ap(clientAddr, 53), ap(hostAddr, 33333)},
		{"to a publication over ipv6", ap(clientAddr6, 40000), ap(hostAddr6, 8053)},
		{"to a host socket over ipv6", ap(clientAddr6, 53), ap(hostAddr6, 33333)},
	} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed6(t)
			nb.xdpTargets(t, webAddr6)
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8053, Proto: 17, Addr: webAddr, Port: 53}))
			must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8053, Proto: 17, Addr: webAddr6, Port: 53}))
			var frags [][]byte
			if c.src.Addr().Is4() {
				frags = fragments(bigDatagram(c.src, c.dst, 3000), 7, 1480)
			} else {
				l4 := make([]byte, 8+3000)
				binary.BigEndian.PutUint16(l4[0:], c.src.Port())
				binary.BigEndian.PutUint16(l4[2:], c.dst.Port())
				binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
				frags = ipv6Fragments(ipv6Frame(17, c.src.Addr(), c.dst.Addr(), l4, false), 7, 1232)
			}
			ret, _ := nb.runXDP(t, frags[0])
			if ret != xdpPass {
				t.Errorf("first fragment: verdict %d, want XDP_PASS (drop_malformed counted %d)", ret, nb.counter(t, "uplink_xdp", "drop_malformed"))
			}
		})
	}
}

// Packets from outside with a source in one of the datapath's own
// subnets can only be forged (a sandbox's packets leave by its veth,
// masqueraded or not; the replies to such a source would go to the
// sandbox that really has it, never back out). to_container drops them
// (TestForgedNeighbourSourceFromOutsideIsDropped); dnat_claim's martian
// check lets them through to a publication, giving the published sandbox
// a flow "from its neighbour" (source-address trust, UDP one-way in full)
// and sending its replies into the neighbour.
func TestXDPMartianSourceInDatapathSubnet(t *testing.T) {
	nb := newNATBed6(t)
	nb.xdpTargets(t, webAddr6)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr6, Port: 80}))
	for i, src := range []netip.Addr{netip.MustParseAddr("172.17.0.3"), netip.MustParseAddr("fd00:17::3")} {
		dst := hostAddr
		if src.Is6() {
			dst = hostAddr6
		}
		pkt := segment(6, ap(src, uint16(40000+i)), ap(dst, 8080), false)
		if ret, _ := nb.runXDP(t, pkt); ret != xdpDrop {
			t.Errorf("XDP: from %s (a sandbox subnet) to a published port: verdict %d, want XDP_DROP", src, ret)
		}
		pkt = segment(6, ap(src, uint16(41000+i)), ap(dst, 8080), false)
		if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, pkt, nb.uplink); ret != tcActShot {
			t.Errorf("TC: from %s (a sandbox subnet) to a published port: verdict %d, want TC_ACT_SHOT", src, ret)
		}
	}
}

// A fragment after the first has no L4 header (p->l4_off is 0), yet
// l4_length says it has no IPv4 options, extension headers or fragments
// (0, not 1), and l4_csum_complete then takes the bytes at the frame's
// start for its UDP checksum: a source MAC beginning 00:00 (Cisco's OUI,
// HSRP's virtual MAC 00:00:0c:07:ac:xx) reads as "no checksum", and the
// fragment is taken by XDP. Fragments are TC's: it must pass, whatever
// the sender's MAC.
func TestXDPLeavesLaterFragmentsToTC(t *testing.T) {
	nb := newNATBed(t)
	nb.xdpTargets(t, netip.Addr{})
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8053, Proto: 17, Addr: webAddr, Port: 53}))
	frags := fragments(bigDatagram(ap(clientAddr, 40000), ap(hostAddr, 8053), 3000), 9, 1480)
	// TC takes the first fragment (and the flow), as it would from XDP.
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, frags[0], nb.uplink); ret != tcActRedirect {
		t.Fatalf("first fragment on TC: verdict %d, want TC_ACT_REDIRECT", ret)
	}
	for i, mac := range []net.HardwareAddr{{2, 0, 0, 0, 0, 2}, {0, 0, 0x0c, 7, 0xac, 1}} {
		f := bytes.Clone(frags[1+i])
		copy(f[6:12], mac)
		if ret, _ := nb.runXDP(t, f); ret != xdpPass {
			t.Errorf("later fragment from %s: verdict %d, want XDP_PASS", mac, ret)
		}
	}
}

// An IPv6 link-local source never crosses a router (RFC 4291 2.5.6; the
// kernel's ip6_forward refuses it, to_container drops it from elsewhere
// as spoofed). Translated into a sandbox on another link, a flow from
// fe80::/10 cannot be answered: the sandbox looks the source up on its
// own link, the bridge. From outside, dnat_claim must refuse it as it
// refuses the other martians, on XDP and TC alike.
func TestXDPMartianLinkLocalSource(t *testing.T) {
	nb := newNATBed6(t)
	nb.xdpTargets(t, webAddr6)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr6, Port: 80}))
	src := netip.MustParseAddr("fe80::1234")
	if ret, _ := nb.runXDP(t, segment(6, ap(src, 40000), ap(hostAddr6, 8080), false)); ret != xdpDrop {
		t.Errorf("XDP: from %s to a published port: verdict %d, want XDP_DROP", src, ret)
	}
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, segment(6, ap(src, 40001), ap(hostAddr6, 8080), false), nb.uplink); ret != tcActShot {
		t.Errorf("TC: from %s to a published port: verdict %d, want TC_ACT_SHOT", src, ret)
	}
}

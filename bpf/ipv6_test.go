package bpf_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// The IPv6 side of the beds: the dual-stack network's subnet, gateway and
// endpoint, and the uplink's and client's addresses.
var (
	hostAddr6   = netip.MustParseAddr("2001:db8:99::1")
	clientAddr6 = netip.MustParseAddr("2001:db8:99::2")
	webAddr6    = netip.MustParseAddr("fd00:17::2")
	gateway6    = netip.MustParseAddr("fd00:17::1")
	subnet6     = netip.MustParsePrefix("fd00:17::/64")
)

// newNATBed6 is newNATBed with IPv6 as well: the uplink has 2001:db8:99::1
// (the client 2001:db8:99::2 in its neighbour table), and the network and
// its endpoint are dual-stack.
func newNATBed6(t testing.TB) *natbed {
	t.Helper()
	return newNATBedWith6(t, loader.Options{})
}

// newNATBedWith6 is newNATBed6 with the programs loaded with opts.
func newNATBedWith6(t testing.TB, opts loader.Options) *natbed {
	t.Helper()
	nb := newNATBedWith(t, opts)
	name := nb.ns[len("/run/netns/"):]
	for _, args := range [][]string{
		{"addr", "add", "2001:db8:99::1/64", "dev", "up0", "nodad"},
		{"neigh", "replace", "2001:db8:99::2", "lladdr", clientMAC.String(), "dev", "up0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	must(t, namespace.Do(nb.ns, func() error {
		return exec.Command("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1").Run()
	}))
	n := bridgeNet
	n.Subnet6, n.Gateway6, n.Masquerade6 = subnet6, gateway6, true
	must(t, nb.maps.PutNetwork(n))
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr, Addr6: webAddr6}))
	must(t, nb.maps.PutEndpoint(maps.Endpoint{Addr: webAddr6, Ifindex: 1, Network: 1, MAC: net.HardwareAddr{2, 0x42, 172, 17, 0, 2}}))
	must(t, nb.maps.SyncHost([]netip.Addr{hostAddr, bridgeNet.Gateway, hostAddr6, gateway6},
		map[uint32]maps.Uplink{uint32(nb.uplink): {Addr: hostAddr, Addr6: hostAddr6}}, nil))
	return nb
}

// A client outside reaches a port published on [::] over IPv6, its own
// address kept, with correct checksums, and the reply goes back from the
// published address.
func TestIPv6PublishedPort(t *testing.T) {
	for _, proto := range []uint8{6, 17} {
		nb := newNATBed6(t)
		must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: proto, Addr: webAddr6, Port: 80}))
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(proto, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false))
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		got := verify(t, out)
		if got.src != ap(clientAddr6, 40000) || got.dst != ap(webAddr6, 80) {
			t.Errorf("protocol %d: rewritten to %s -> %s, want the client's own address to [%s]:80", proto, got.src, got.dst, webAddr6)
		}
		if out[14+7] != 63 {
			t.Errorf("protocol %d: hop limit %d, want 63", proto, out[14+7])
		}
		reply := segment(proto, ap(webAddr6, 80), ap(clientAddr6, 40000), false)
		if proto == 6 {
			reply[54+13] = 0x12 // SYN-ACK
			binary.BigEndian.PutUint16(reply[54+16:], 0)
			binary.BigEndian.PutUint16(reply[54+16:], checksum(reply[54:], pseudo6(reply[14:54], len(reply)-54)))
		}
		ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, reply)
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: reply verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		if got := verify(t, out); got.src != ap(hostAddr6, 8080) || got.dst != ap(clientAddr6, 40000) {
			t.Errorf("protocol %d: reply rewritten to %s -> %s, want from [%s]:8080", proto, got.src, got.dst, hostAddr6)
		}
	}
}

// An IPv4 publication is not an IPv6 one: 0.0.0.0 is IPv4's alone.
func TestIPv6PublicationsPerFamily(t *testing.T) {
	nb := newNATBed6(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(6, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false)); ret != tcActUnspec {
		t.Errorf("IPv6 client to a port published on 0.0.0.0: verdict %d, want passed untranslated", ret)
	}
}

// An IPv6 client reaches an IPv4-only sandbox through a port published on
// [::]: its packets become IPv4, from the sandbox's gateway, and the
// replies IPv6 again, every checksum right, as Docker's proxy relays [::]
// to an IPv4 container.
func TestIPv6ClientOfIPv4Sandbox(t *testing.T) {
	for _, proto := range []uint8{6, 17} {
		nb := newNATBed6(t)
		must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: proto, Addr: webAddr, Port: 80}))
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(proto, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false))
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		if binary.BigEndian.Uint16(out[12:]) != 0x0800 {
			t.Fatalf("protocol %d: not translated to IPv4: %x", proto, out[:54])
		}
		got := verify(t, out)
		if got.src != ap(bridgeNet.Gateway, 40000) || got.dst != ap(webAddr, 80) {
			t.Errorf("protocol %d: translated to %s -> %s, want from the gateway %s:40000 to %s:80", proto, got.src, got.dst, bridgeNet.Gateway, webAddr)
		}
		if out[14+8] != 63 {
			t.Errorf("protocol %d: TTL %d, want 63 (the client's hop limit less one)", proto, out[14+8])
		}
		reply := segment(proto, ap(webAddr, 80), ap(bridgeNet.Gateway, 40000), false)
		ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, reply)
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: reply verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		if binary.BigEndian.Uint16(out[12:]) != 0x86dd {
			t.Fatalf("protocol %d: reply not translated to IPv6: %x", proto, out[:54])
		}
		if got := verify(t, out); got.src != ap(hostAddr6, 8080) || got.dst != ap(clientAddr6, 40000) {
			t.Errorf("protocol %d: reply translated to %s -> %s, want from [%s]:8080 to the client", proto, got.src, got.dst, hostAddr6)
		}
		if out[14+7] != 63 {
			t.Errorf("protocol %d: reply hop limit %d, want 63", proto, out[14+7])
		}
	}
}

// A dual-stack sandbox's new flows to the outside leave from the uplink's
// IPv6 address (NAT66), and the reply comes back to the sandbox.
func TestIPv6Masquerade(t *testing.T) {
	for _, proto := range []uint8{6, 17, 58} {
		nb := newNATBed6(t)
		ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, segment(proto, ap(webAddr6, 33000), ap(clientAddr6, 80), false))
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		got := verify(t, out)
		if got.src.Addr() != hostAddr6 || got.dst.Addr() != clientAddr6 {
			t.Fatalf("protocol %d: masqueraded to %s -> %s, want from %s", proto, got.src, got.dst, hostAddr6)
		}
		var reply []byte
		if proto == 58 {
			reply = segment(58, ap(clientAddr6, 0), ap(hostAddr6, 0), false)
			reply[54] = 129 // echo reply: the identifier stands for the port
			binary.BigEndian.PutUint16(reply[54+4:], got.src.Port())
			binary.BigEndian.PutUint16(reply[54+2:], 0)
			binary.BigEndian.PutUint16(reply[54+2:], checksum(reply[54:], pseudo6(reply[14:54], len(reply)-54)))
		} else {
			reply = segment(proto, ap(clientAddr6, 80), got.src, false)
		}
		ret, out = nb.run(t, nb.dp.Uplink.UplinkIngress, reply)
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: reply verdict %d, want TC_ACT_REDIRECT", proto, ret)
		}
		back := verify(t, out)
		if back.dst.Addr() != webAddr6 || (proto != 58 && back.dst.Port() != 33000) {
			t.Errorf("protocol %d: reply to %s, want to [%s]:33000", proto, back.dst, webAddr6)
		}
	}
}

// An IPv6 packet too big for the uplink is answered with an ICMPv6
// packet too big from the sandbox's gateway, which path MTU discovery
// over IPv6 needs: no router on the way may fragment.
func TestIPv6PacketTooBig(t *testing.T) {
	nb := newNATBed6(t)
	name := nb.ns[len("/run/netns/"):]
	if out, err := exec.Command("ip", "-n", name, "link", "set", "up0", "mtu", "1280").CombinedOutput(); err != nil {
		t.Fatalf("set mtu: %v: %s", err, out)
	}
	pkt := segment(17, ap(webAddr6, 33000), ap(clientAddr6, 53), false)
	payload := make([]byte, 1400)
	pkt = append(pkt, payload...)
	binary.BigEndian.PutUint16(pkt[14+4:], uint16(len(pkt)-54))
	binary.BigEndian.PutUint16(pkt[54+4:], uint16(len(pkt)-54))
	binary.BigEndian.PutUint16(pkt[54+6:], 0)
	binary.BigEndian.PutUint16(pkt[54+6:], checksum(pkt[54:], pseudo6(pkt[14:54], len(pkt)-54)))
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, pkt)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want the error redirected back (TC_ACT_REDIRECT)", ret)
	}
	if binary.BigEndian.Uint16(out[12:]) != 0x86dd || out[14+6] != 58 {
		t.Fatalf("answer is not ICMPv6: %x", out[:60])
	}
	ip := out[14:54]
	l4 := out[54 : 54+int(binary.BigEndian.Uint16(ip[4:]))]
	if checksum(l4, pseudo6(ip, len(l4))) != 0 {
		t.Errorf("bad ICMPv6 checksum in %x", l4)
	}
	src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	if l4[0] != 2 || binary.BigEndian.Uint32(l4[4:]) != 1280 || src != gateway6 || dst != webAddr6 {
		t.Errorf("type %d mtu %d from %s to %s, want packet too big (2), MTU 1280, from %s to %s",
			l4[0], binary.BigEndian.Uint32(l4[4:]), src, dst, gateway6, webAddr6)
	}
	if quoted := netip.AddrFrom16([16]byte(l4[8+24 : 8+40])); quoted != clientAddr6 {
		t.Errorf("quoted destination %s, want %s", quoted, clientAddr6)
	}
	if nb.counter(t, "from_container", "drop_too_big") != 1 {
		t.Error("not counted as drop_too_big")
	}
}

// A packet too big on the way back to a masqueraded IPv6 flow reaches the
// sandbox translated: its outer destination and the quote are the
// sandbox's, with every checksum right.
func TestIPv6ICMPErrorTranslated(t *testing.T) {
	nb := newNATBed6(t)
	_, out := nb.run(t, nb.dp.Endpoint.FromContainer, segment(6, ap(webAddr6, 33000), ap(clientAddr6, 80), false))
	sent := verify(t, out)
	quote := append([]byte(nil), out[14:14+40+8]...)
	l4 := append([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, quote...) // packet too big, MTU 1280
	router := netip.MustParseAddr("2001:db8:99::9")
	pkt := ipv6Frame(58, router, hostAddr6, l4, false)
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, pkt)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT", ret)
	}
	got := verify(t, out)
	if got.src.Addr() != router || got.dst.Addr() != webAddr6 {
		t.Errorf("error %s -> %s, want from the router to %s", got.src.Addr(), got.dst.Addr(), webAddr6)
	}
	inner := out[54+8:]
	qsrc := netip.AddrFrom16([16]byte(inner[8:24]))
	qsport := binary.BigEndian.Uint16(inner[40:])
	if qsrc != webAddr6 || qsport != 33000 || sent.src.Addr() != hostAddr6 {
		t.Errorf("quote from [%s]:%d, want the sandbox's [%s]:33000", qsrc, qsport, webAddr6)
	}
}

// ipv6Packet is an IPv6 packet with an L4 header: a TCP SYN, 8 bytes of
// UDP, or an ICMPv6 message of icmpType.
func ipv6Packet(src, dst string, proto, icmpType uint8) []byte {
	l4 := make([]byte, 8)
	l4[0] = icmpType
	if proto == 6 {
		l4 = make([]byte, 20)
		l4[12], l4[13] = 5<<4, 0x02
	}
	if proto != 58 {
		binary.BigEndian.PutUint16(l4[0:], 12345)
		binary.BigEndian.PutUint16(l4[2:], 80)
	}
	return ipv6Frame(proto, netip.MustParseAddr(src), netip.MustParseAddr(dst), l4, false)
}

// neighbourAdvert is a neighbour advertisement from src claiming target,
// to every node.
func neighbourAdvert(src, target string) []byte { return neighbourAdvertTo(src, "ff02::1", target) }

// neighbourAdvertTo is a neighbour advertisement from src to dst claiming
// target.
func neighbourAdvertTo(src, dst, target string) []byte {
	l4 := make([]byte, 24)
	l4[0] = 136
	t := netip.MustParseAddr(target).As16()
	copy(l4[8:], t[:])
	return ipv6Frame(58, netip.MustParseAddr(src), netip.MustParseAddr(dst), l4, false)
}

// The testbed's networks with IPv6: appnet fd00:19::/64 (the sender
// fd00:19::5:2), other fd00:20::/64.
func newTestbed6(t *testing.T, configure func(*maps.Network)) *testbed {
	t.Helper()
	tb := newTestbedWith(t, func(n *maps.Network) {
		n.Subnet6, n.Gateway6, n.Masquerade6 = netip.MustParsePrefix("fd00:19::/64"), netip.MustParseAddr("fd00:19::1"), true
		configure(n)
	})
	o := other
	o.Subnet6, o.Gateway6 = netip.MustParsePrefix("fd00:20::/64"), netip.MustParseAddr("fd00:20::1")
	must(t, tb.maps.PutNetwork(o))
	must(t, tb.maps.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1, Addr: netip.MustParseAddr("172.19.5.2"),
		Addr6: netip.MustParseAddr("fd00:19::5:2")}))
	return tb
}

// Isolation over IPv6 is isolation over IPv4: every case of
// TestFromContainer and TestToContainer in the other family, and what
// IPv6 adds (neighbour discovery, link-local addresses).
func TestFromContainerIPv6(t *testing.T) {
	const udp, tcp, icmp6 = 17, 6, 58
	me := "fd00:19::5:2"
	tests := []struct {
		name             string
		iccOff, internal bool
		pkt              []byte
		verdict          uint32
		counter          string
	}{
		{"same network", false, false, ipv6Packet(me, "fd00:19::5:3", udp, 0), tcActUnspec, "pass"},
		{"to another network", false, false, ipv6Packet(me, "fd00:20::5", tcp, 0), tcActShot, "drop_cross_network"},
		{"to another network's gateway", false, false, ipv6Packet(me, "fd00:20::1", tcp, 0), tcActShot, "drop_cross_network"},
		{"from another's address", false, false, ipv6Packet("fd00:19::5:3", "fd00:19::5:4", udp, 0), tcActShot, "drop_spoofed"},
		{"from another network's address", false, false, ipv6Packet("fd00:20::5", "2001:db8::1", tcp, 0), tcActShot, "drop_spoofed"},
		{"to loopback", false, false, ipv6Packet(me, "::1", tcp, 0), tcActShot, "drop_martian"},
		{"icc off, same network", true, false, ipv6Packet(me, "fd00:19::5:3", tcp, 0), tcActShot, "drop_icc"},
		{"icc off, to gateway", true, false, ipv6Packet(me, "fd00:19::1", tcp, 0), tcActUnspec, "pass"},
		{"internal, to outside", false, true, ipv6Packet(me, "2001:db8::1", udp, 0), tcActShot, "drop_internal"},
		{"internal, same network", false, true, ipv6Packet(me, "fd00:19::5:3", udp, 0), tcActUnspec, "pass"},
		// From its own address, as Linux solicits a neighbour it has
		// traffic for: link-scope multicast stays on the link.
		{"internal, solicitation for the gateway", false, true, ipv6Packet(me, "ff02::1:ff00:1", icmp6, 135), tcActUnspec, "pass"},
		{"internal, to site-scope multicast", false, true, ipv6Packet(me, "ff05::1:3", udp, 0), tcActShot, "drop_internal"},
		{"neighbour solicitation from link-local", true, true, ipv6Packet("fe80::42:acff:fe13:502", "ff02::1:ff13:503", icmp6, 135), tcActUnspec, "pass"},
		{"duplicate address detection", true, true, ipv6Packet("::", "ff02::1:ff13:503", icmp6, 135), tcActUnspec, "pass"},
		{"link-local to a routed address", false, false, ipv6Packet("fe80::1", "2001:db8::1", tcp, 0), tcActShot, "drop_spoofed"},
		{"neighbour advertisement for its own address", false, false, neighbourAdvert(me, me), tcActUnspec, "pass"},
		// The answer to the bridge's solicitation from its link-local address.
		{"its own address to a link-local one", true, true, neighbourAdvertTo(me, "fe80::1", me), tcActUnspec, "pass"},
		{"another's address to a link-local one", false, false, ipv6Packet("fd00:19::5:3", "fe80::1", udp, 0), tcActShot, "drop_spoofed"},
		{"neighbour advertisement for another's address", false, false, neighbourAdvert(me, "fd00:19::5:3"), tcActShot, "drop_spoofed"},
		{"neighbour advertisement from link-local for another's", false, false, neighbourAdvert("fe80::1", "fd00:19::1"), tcActShot, "drop_spoofed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.ICCDisabled, n.Internal = tt.iccOff, tt.internal })
			tb.run(t, tb.dp.Endpoint.FromContainer, tt.pkt, tt.verdict, "from_container/"+tt.counter)
		})
	}
}

func TestToContainerIPv6(t *testing.T) {
	const tcp = 6
	me := "fd00:19::5:2"
	tests := []struct {
		name     string
		internal bool
		iccOff   bool
		direct   maps.DirectAccess
		ingress  uint32
		pkt      []byte
		verdict  uint32
		counter  string
	}{
		{"from outside, gateway mode nat", false, false, maps.DirectNone, uplinkIfindex, ipv6Packet("2001:db8::1", me, tcp, 0), tcActShot, "drop_unpublished"},
		{"from outside, gateway mode nat-unprotected", false, false, maps.DirectAll, uplinkIfindex, ipv6Packet("2001:db8::1", me, tcp, 0), tcActUnspec, "pass"},
		{"from outside, forging a neighbour", false, false, maps.DirectAll, uplinkIfindex, ipv6Packet("fd00:19::5:3", me, tcp, 0), tcActShot, "drop_spoofed"},
		{"from outside, forging a link-local source", false, false, maps.DirectAll, uplinkIfindex, ipv6Packet("fe80::1", me, tcp, 0), tcActShot, "drop_spoofed"},
		{"internal, from outside", true, false, maps.DirectNone, uplinkIfindex, ipv6Packet("2001:db8::1", me, tcp, 0), tcActShot, "drop_internal"},
		{"from a neighbour's veth", false, false, maps.DirectNone, endpointIfindex, ipv6Packet("fd00:19::5:3", me, tcp, 0), tcActUnspec, "pass"},
		{"icc off, link-local from a neighbour", false, true, maps.DirectNone, endpointIfindex, ipv6Packet("fe80::1", "fe80::2", tcp, 0), tcActShot, "drop_icc"},
		{"icc off, neighbour discovery from a neighbour", false, true, maps.DirectNone, endpointIfindex, ipv6Packet("fe80::1", "fe80::2", 58, 136), tcActUnspec, "pass"},
		{"link-local from the host", true, true, maps.DirectNone, 0, ipv6Packet("fe80::1", "fe80::2", tcp, 0), tcActUnspec, "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.Internal, n.ICCDisabled, n.Direct6 = tt.internal, tt.iccOff, tt.direct })
			tb.ingress = tt.ingress
			tb.run(t, tb.dp.Endpoint.ToContainer, tt.pkt, tt.verdict, "to_container/"+tt.counter)
		})
	}
}

// A network without IPv6 has none at all, in either direction, even on
// an endpoint of a network that has it on another interface.
func TestNoIPv6OnIPv4Networks(t *testing.T) {
	tb := newTestbed(t, false, false)
	pkt := ipv6Packet("fe80::1", "ff02::1", 58, 135)
	tb.run(t, tb.dp.Endpoint.FromContainer, pkt, tcActShot, "from_container/drop_no_ipv6")
	tb.run(t, tb.dp.Endpoint.ToContainer, pkt, tcActShot, "to_container/drop_no_ipv6")
}

// ipv6Fragments splits an IPv6 datagram's payload (its L4 header and
// data) into fragments of at most size bytes (a multiple of 8), each with
// a fragment header of identification id.
func ipv6Fragments(frame []byte, id uint32, size int) [][]byte {
	ip, payload := frame[14:54], frame[54:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		h := append([]byte(nil), ip...)
		h[6] = 44 // a fragment header follows
		binary.BigEndian.PutUint16(h[4:], uint16(8+end-off))
		fh := make([]byte, 8)
		fh[0] = ip[6]
		more := uint16(0)
		if end < len(payload) {
			more = 1
		}
		binary.BigEndian.PutUint16(fh[2:], uint16(off)|more)
		binary.BigEndian.PutUint32(fh[4:], id)
		f := append(append(append(append([]byte(nil), frame[:14]...), h...), fh...), payload[off:end]...)
		out = append(out, f)
	}
	return out
}

// Every IPv6 fragment of a datagram to a port published on [::] is
// translated, the later ones by the ports the first left for them, and
// the reassembled datagram's checksum holds.
func TestIPv6FragmentsAreTranslated(t *testing.T) {
	nb := newNATBed6(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8053, Proto: 17, Addr: webAddr6, Port: 53}))
	l4 := make([]byte, 8+3000)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 8053)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	for i := 8; i < len(l4); i++ {
		l4[i] = byte(i)
	}
	frame := ipv6Frame(17, clientAddr6, hostAddr6, l4, false)
	var payload []byte
	for i, f := range ipv6Fragments(frame, 7, 1232) {
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, f)
		if ret != tcActRedirect {
			t.Fatalf("fragment %d: verdict %d, want redirected", i, ret)
		}
		if dst := netip.AddrFrom16([16]byte(out[14+24 : 14+40])); dst != webAddr6 {
			t.Fatalf("fragment %d to %s, want %s", i, dst, webAddr6)
		}
		payload = append(payload, out[14+40+8:]...)
	}
	ip := append([]byte(nil), frame[14:54]...)
	d := webAddr6.As16()
	copy(ip[24:], d[:])
	if port := binary.BigEndian.Uint16(payload[2:]); port != 53 || checksum(payload, pseudo6(ip, len(payload))) != 0 {
		t.Errorf("reassembled: to port %d, checksum right: %v; want port 53 and a right checksum", port, checksum(payload, pseudo6(ip, len(payload))) == 0)
	}
}

// A packet too big on the IPv6 path of a flow an IPv6 client has with an
// IPv4 sandbox (published on [::]) reaches the sandbox as RFC 7915 5.2
// translates it: an ICMP frag needed from the peer the sandbox sees (its
// gateway), 20 bytes less (the headers' difference), quoting the IPv4
// packet the sandbox sent, every checksum right. Path MTU discovery then
// works for such clients.
func TestPacketTooBigOfAFlowThatChangedFamily(t *testing.T) {
	for _, proto := range []uint8{6, 17} {
		nb := newNATBed6(t)
		must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: proto, Addr: webAddr, Port: 80}))
		if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(proto, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false)); ret != tcActRedirect {
			t.Fatalf("protocol %d: the client's first packet: verdict %d", proto, ret)
		}
		ret, reply := nb.run(t, nb.dp.Endpoint.FromContainer, segment(proto, ap(webAddr, 80), ap(bridgeNet.Gateway, 40000), false))
		if ret != tcActRedirect || binary.BigEndian.Uint16(reply[12:]) != 0x86dd {
			t.Fatalf("protocol %d: the sandbox's reply: verdict %d, not translated to IPv6", proto, ret)
		}
		quote := append([]byte(nil), reply[14:14+40+8]...)
		l4 := append([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, quote...) // packet too big, MTU 1280
		router := netip.MustParseAddr("2001:db8:99::9")
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, ipv6Frame(58, router, hostAddr6, l4, false))
		if ret != tcActRedirect {
			t.Fatalf("protocol %d: the packet too big: verdict %d, want it redirected to the sandbox", proto, ret)
		}
		if binary.BigEndian.Uint16(out[12:]) != 0x0800 {
			t.Fatalf("protocol %d: the error is not IPv4: %x", proto, out[:60])
		}
		ip := out[14:34]
		if checksum(ip, 0) != 0 {
			t.Errorf("protocol %d: bad IPv4 header checksum in %x", proto, ip)
		}
		if src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])); ip[9] != 1 || src != bridgeNet.Gateway || dst != webAddr {
			t.Errorf("protocol %d: error of protocol %d from %s to %s; want ICMP from the gateway %s to %s", proto, ip[9], src, dst, bridgeNet.Gateway, webAddr)
		}
		icmp := out[34 : 14+int(binary.BigEndian.Uint16(ip[2:]))]
		if checksum(icmp, 0) != 0 {
			t.Errorf("protocol %d: bad ICMP checksum in %x", proto, icmp)
		}
		if icmp[0] != 3 || icmp[1] != 4 || binary.BigEndian.Uint16(icmp[6:]) != 1260 {
			t.Errorf("protocol %d: ICMP type %d code %d MTU %d; want frag needed (3, 4) with MTU 1260", proto, icmp[0], icmp[1], binary.BigEndian.Uint16(icmp[6:]))
		}
		inner := icmp[8:]
		if len(inner) < 28 || checksum(inner[:20], 0) != 0 {
			t.Fatalf("protocol %d: quote %x is no IPv4 header with a right checksum and 8 bytes after it", proto, inner)
		}
		qsrc, qdst := netip.AddrFrom4([4]byte(inner[12:16])), netip.AddrFrom4([4]byte(inner[16:20]))
		qsport, qdport := binary.BigEndian.Uint16(inner[20:]), binary.BigEndian.Uint16(inner[22:])
		if inner[9] != proto || ap(qsrc, qsport) != ap(webAddr, 80) || ap(qdst, qdport) != ap(bridgeNet.Gateway, 40000) {
			t.Errorf("protocol %d: quote of protocol %d, %s -> %s; want the sandbox's packet %s -> %s", proto, inner[9],
				ap(qsrc, qsport), ap(qdst, qdport), ap(webAddr, 80), ap(bridgeNet.Gateway, 40000))
		}
	}
}

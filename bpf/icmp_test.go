package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/ebpfnet/ebpfnet/maps"
)

var routerAddr = netip.MustParseAddr("10.99.0.9")

// icmpError builds an ICMP error from src to dst quoting the IP header and
// the first bytes of pkt's L4 header, as a router or host sends it.
func icmpError(src, dst netip.Addr, typ, code uint8, mtu uint16, pkt []byte) []byte {
	quote := append([]byte(nil), pkt[14:14+20+8]...)
	l4 := append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, quote...)
	binary.BigEndian.PutUint16(l4[6:], mtu)
	binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	eth := []byte{2, 0x42, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
	return append(append(eth, ip...), l4...)
}

// icmpSeen is what a test checks of an ICMP error.
type icmpSeen struct {
	src, dst    netip.Addr
	typ, code   uint8
	mtu         uint16
	quotedProto uint8
	quotedSrc   netip.AddrPort
	quotedDst   netip.AddrPort
	quotedTTL   uint8
}

// verifyICMP checks the checksums of an ICMP error (its IP header, the
// ICMP message and the quoted IP header) and returns what it says.
func verifyICMP(t *testing.T, pkt []byte) icmpSeen {
	t.Helper()
	ip := pkt[14:34]
	if ip[9] != 1 {
		t.Fatalf("not ICMP: protocol %d", ip[9])
	}
	if checksum(ip, 0) != 0 {
		t.Errorf("bad IP header checksum")
	}
	l4 := pkt[34 : 14+int(binary.BigEndian.Uint16(ip[2:]))]
	if checksum(l4, 0) != 0 {
		t.Errorf("bad ICMP checksum in %x", l4)
	}
	inner := l4[8:28]
	if checksum(inner, 0) != 0 {
		t.Errorf("bad quoted IP header checksum in %x", inner)
	}
	ports := l4[28:]
	return icmpSeen{
		src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])),
		typ: l4[0], code: l4[1], mtu: binary.BigEndian.Uint16(l4[6:]),
		quotedProto: inner[9], quotedTTL: inner[8],
		quotedSrc: netip.AddrPortFrom(netip.AddrFrom4([4]byte(inner[12:16])), binary.BigEndian.Uint16(ports[0:])),
		quotedDst: netip.AddrPortFrom(netip.AddrFrom4([4]byte(inner[16:20])), binary.BigEndian.Uint16(ports[2:])),
	}
}

// An ICMP error from outside about a translated flow reaches the sandbox
// that sent the quoted packet, and quotes it as the sandbox sent it: for a
// masqueraded flow and for the replies of a published one. Path MTU
// discovery works through both.
func TestICMPErrorsFromOutside(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	// A masqueraded flow, and a published one.
	out := nb.mustVerdict(t, "masqueraded SYN", nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 33000), ap(clientAddr, 80), syn, 1, 0), 0, tcActRedirect)
	nb.mustVerdict(t, "published SYN", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), syn, 1, 0), 0, tcActRedirect)
	reply := nb.mustVerdict(t, "published SYN-ACK", nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 80), ap(clientAddr, 40000), syn|ack, 7, 2), 0, tcActRedirect)

	for _, c := range []struct {
		name             string
		quoted           []byte // the packet as it left the host
		wantSrc, wantDst netip.AddrPort
	}{
		{"masquerade", tcpSegment(out.src, out.dst, ack, 2, 1), ap(webAddr, 33000), ap(clientAddr, 80)},
		{"published port", tcpSegment(reply.src, reply.dst, ack, 8, 2), ap(webAddr, 80), ap(clientAddr, 40000)},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := icmpError(routerAddr, hostAddr, 3, 4, 1300, c.quoted)
			ret, pkt := nb.run(t, nb.dp.Uplink.UplinkIngress, in)
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want the error redirected to the sandbox", ret)
			}
			got := verifyICMP(t, pkt)
			if got.src != routerAddr || got.dst != webAddr || got.typ != 3 || got.code != 4 || got.mtu != 1300 {
				t.Errorf("error %s -> %s type %d code %d mtu %d; want from the router to %s, frag needed, mtu 1300", got.src, got.dst, got.typ, got.code, got.mtu, webAddr)
			}
			if got.quotedSrc != c.wantSrc || got.quotedDst != c.wantDst {
				t.Errorf("quoted %s -> %s, want %s -> %s", got.quotedSrc, got.quotedDst, c.wantSrc, c.wantDst)
			}
		})
	}
	// An error about no flow is the host's business.
	stray := icmpError(routerAddr, hostAddr, 3, 4, 1300, tcpSegment(ap(hostAddr, 1234), ap(clientAddr, 80), ack, 1, 1))
	if ret, pkt := nb.run(t, nb.dp.Uplink.UplinkIngress, stray); ret != tcActUnspec || string(pkt) != string(stray) {
		t.Errorf("an error about no flow: verdict %d; want it passed on untouched", ret)
	}
}

// A sandbox's ICMP error about a flow from outside (port unreachable for
// a published UDP port) leaves as the host's, quoting the packet as the
// client sent it.
func TestICMPErrorsFromSandboxes(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8053, Proto: 17, Addr: webAddr, Port: 53}))
	in := nb.mustVerdict(t, "published datagram", nb.dp.Uplink.UplinkIngress, segment(17, ap(clientAddr, 40000), ap(hostAddr, 8053), false), 0, tcActRedirect)
	unreachable := icmpError(webAddr, clientAddr, 3, 3, 0, segment(17, in.src, in.dst, false))
	ret, pkt := nb.run(t, nb.dp.Endpoint.FromContainer, unreachable)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want the error routed to the client", ret)
	}
	got := verifyICMP(t, pkt)
	if got.src != hostAddr || got.dst != clientAddr {
		t.Errorf("error %s -> %s, want %s -> %s", got.src, got.dst, hostAddr, clientAddr)
	}
	if got.quotedSrc != ap(clientAddr, 40000) || got.quotedDst != ap(hostAddr, 8053) {
		t.Errorf("quoted %s -> %s, want %s -> %s:8053", got.quotedSrc, got.quotedDst, ap(clientAddr, 40000), hostAddr)
	}
	// Another sandbox cannot use the flow to send errors in its name.
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	forged := icmpError(other.addr, clientAddr, 3, 3, 0, segment(17, in.src, in.dst, false))
	if ret, pkt := nb.runOn(t, nb.dp.Endpoint.FromContainer, forged, other.ifindex); ret == tcActRedirect && verifyICMP(t, pkt).src == hostAddr {
		t.Error("another sandbox's error about the flow was translated")
	}
}

// A routed hop takes one off the TTL; a packet whose TTL runs out is
// answered with time exceeded from the address it was sent to.
func TestTTLOnRedirect(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	withTTL := func(pkt []byte, ttl uint8) []byte {
		pkt[22] = ttl
		binary.BigEndian.PutUint16(pkt[24:], 0)
		binary.BigEndian.PutUint16(pkt[24:], checksum(pkt[14:34], 0))
		return pkt
	}
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, withTTL(tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), syn, 1, 0), 5))
	if ret != tcActRedirect || out[22] != 4 {
		t.Fatalf("verdict %d, TTL %d; want redirected with TTL 4", ret, out[22])
	}
	verify(t, out)
	ret, out = nb.run(t, nb.dp.Uplink.UplinkIngress, withTTL(tcpSegment(ap(clientAddr, 40001), ap(hostAddr, 8080), syn, 1, 0), 1))
	if ret != tcActRedirect {
		t.Fatalf("TTL 1: verdict %d, want the ICMP error sent back", ret)
	}
	got := verifyICMP(t, out)
	if got.typ != 11 || got.src != hostAddr || got.dst != clientAddr || got.quotedDst != ap(hostAddr, 8080) || got.quotedTTL != 1 {
		t.Errorf("got %+v; want time exceeded from %s to %s quoting the SYN to 8080 as sent", got, hostAddr, clientAddr)
	}
	if nb.counter(t, "uplink", "drop_ttl_exceeded") != 1 {
		t.Error("not counted as drop_ttl_exceeded")
	}
	// Leaving a sandbox, the gateway answers.
	ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, withTTL(segment(17, ap(webAddr, 5000), ap(clientAddr, 53), false), 1))
	if got := verifyICMP(t, out); ret != tcActRedirect || got.typ != 11 || got.src != bridgeNet.Gateway || got.dst != webAddr {
		t.Errorf("from the sandbox with TTL 1: verdict %d, %+v; want time exceeded from the gateway", ret, got)
	}
}

// A packet too big for the uplink it would leave by, redirected by the
// datapath, is answered with frag needed and the uplink's MTU, so path
// MTU discovery works where the kernel never sees the packet.
func TestFragNeededOnRedirect(t *testing.T) {
	nb := newNATBed(t)
	if out, err := exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "link", "set", "up0", "mtu", "1400").CombinedOutput(); err != nil {
		t.Fatalf("set mtu: %v: %s", err, out)
	}
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	nb.mustVerdict(t, "published SYN", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), syn, 1, 0), 0, tcActRedirect)
	big := func(src, dst netip.AddrPort) []byte {
		pkt := tcpSegment(src, dst, ack, 2, 2)
		pkt = append(pkt, make([]byte, 1500-(len(pkt)-14))...)
		ip := pkt[14:34]
		ip[6] = 0x40 // DF
		binary.BigEndian.PutUint16(ip[2:], 1500)
		binary.BigEndian.PutUint16(ip[10:], 0)
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		l4 := pkt[34:]
		binary.BigEndian.PutUint16(l4[16:], 0)
		binary.BigEndian.PutUint16(l4[16:], checksum(l4, pseudo(ip, len(l4))))
		return pkt
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"reply of a published flow", big(ap(webAddr, 80), ap(clientAddr, 40000))},
		{"masquerade", big(ap(webAddr, 33000), ap(clientAddr, 443))},
	} {
		t.Run(c.name, func(t *testing.T) {
			ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, c.pkt)
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want the error sent back", ret)
			}
			got := verifyICMP(t, out)
			if got.typ != 3 || got.code != 4 || got.mtu != 1400 || got.src != bridgeNet.Gateway || got.dst != webAddr {
				t.Errorf("got %+v; want frag needed, mtu 1400, from the gateway to the sandbox", got)
			}
			if got.quotedSrc.Addr() != webAddr {
				t.Errorf("quoted source %s, want the sandbox's own", got.quotedSrc)
			}
		})
	}
	if nb.counter(t, "from_container", "drop_too_big") != 2 {
		t.Error("not counted as drop_too_big")
	}
}

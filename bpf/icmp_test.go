package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
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

// fragments splits a UDP datagram (an Ethernet frame from segment) into
// IPv4 fragments carrying at most chunk bytes of payload each, with
// valid header checksums.
func fragments(pkt []byte, id uint16, chunk int) [][]byte {
	ip, payload := pkt[14:34], pkt[34:]
	var out [][]byte
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		h := append([]byte(nil), ip...)
		binary.BigEndian.PutUint16(h[2:], uint16(20+end-off))
		binary.BigEndian.PutUint16(h[4:], id)
		flags := uint16(off / 8)
		if end < len(payload) {
			flags |= 0x2000 // MF
		}
		binary.BigEndian.PutUint16(h[6:], flags)
		binary.BigEndian.PutUint16(h[10:], 0)
		binary.BigEndian.PutUint16(h[10:], checksum(h, 0))
		frame := append(append(append([]byte(nil), pkt[:14]...), h...), payload[off:end]...)
		out = append(out, frame)
	}
	return out
}

// bigDatagram is a UDP datagram of n bytes of payload with a valid checksum.
func bigDatagram(src, dst netip.AddrPort, n int) []byte {
	pkt := segment(17, src, dst, false)
	pkt = append(pkt[:34+8], make([]byte, n)...)
	for i := range n {
		pkt[42+i] = byte(i)
	}
	ip, l4 := pkt[14:34], pkt[34:]
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	binary.BigEndian.PutUint16(l4[6:], 0)
	binary.BigEndian.PutUint16(l4[6:], checksum(l4, pseudo(ip, len(l4))))
	return pkt
}

// reassemble joins fragments' payloads in order and checks every header.
func reassemble(t *testing.T, frags [][]byte) (src, dst netip.Addr, payload []byte) {
	t.Helper()
	for _, f := range frags {
		ip := f[14:34]
		if checksum(ip, 0) != 0 {
			t.Errorf("bad IP header checksum in a fragment")
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		payload = append(payload, f[34:14+int(binary.BigEndian.Uint16(ip[2:]))]...)
	}
	return src, dst, payload
}

// Every fragment of a datagram is translated as its flow is: the first by
// its ports, the later ones by the ports the first left for them. A
// fragment that comes before its first is counted and left alone.
func TestFragmentsAreTranslated(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8053, Proto: 17, Addr: webAddr, Port: 53}))
	check := func(what string, frags [][]byte, prog func([]byte) (uint32, []byte), wantSrc, wantDst netip.AddrPort) {
		t.Helper()
		var outs [][]byte
		for i, f := range frags {
			ret, out := prog(f)
			if ret != tcActRedirect {
				t.Fatalf("%s: fragment %d: verdict %d, want redirected", what, i, ret)
			}
			outs = append(outs, out)
		}
		src, dst, payload := reassemble(t, outs)
		l4 := payload[:8]
		if src != wantSrc.Addr() || dst != wantDst.Addr() ||
			binary.BigEndian.Uint16(l4[0:]) != wantSrc.Port() || binary.BigEndian.Uint16(l4[2:]) != wantDst.Port() {
			t.Fatalf("%s: reassembled %s:%d -> %s:%d, want %s -> %s", what, src, binary.BigEndian.Uint16(l4[0:]), dst, binary.BigEndian.Uint16(l4[2:]), wantSrc, wantDst)
		}
		ip := outs[0][14:34] // any header gives the addresses of the pseudo header
		if checksum(payload, pseudo(ip, len(payload))) != 0 {
			t.Errorf("%s: the reassembled datagram's UDP checksum is wrong", what)
		}
	}
	uplink := func(f []byte) (uint32, []byte) { return nb.run(t, nb.dp.Uplink.UplinkIngress, f) }
	endpoint := func(f []byte) (uint32, []byte) { return nb.run(t, nb.dp.Endpoint.FromContainer, f) }

	// A 4000-byte datagram to a published port, and the echo back.
	check("to the published port", fragments(bigDatagram(ap(clientAddr, 40000), ap(hostAddr, 8053), 4000), 1, 1480), uplink,
		ap(clientAddr, 40000), ap(webAddr, 53))
	check("its echo", fragments(bigDatagram(ap(webAddr, 53), ap(clientAddr, 40000), 4000), 2, 1480), endpoint,
		ap(hostAddr, 8053), ap(clientAddr, 40000))
	// Masqueraded, with the NAT port a collision forces.
	must(t, nb.dp.Maps.CtNew.Put(flowOf(17, ap(clientAddr, 7777), ap(hostAddr, 33000)), bpf.DatapathCtEntry{
		Nat: flowOf(17, ap(clientAddr, 7777), ap(netip.MustParseAddr("172.17.0.9"), 33000)), Expires: uint64(maps.Now() + time.Hour)}))
	out := fragments(bigDatagram(ap(webAddr, 33000), ap(clientAddr, 7777), 4000), 3, 1480)
	var natPort uint16
	for i, f := range out {
		ret, o := nb.run(t, nb.dp.Endpoint.FromContainer, f)
		if ret != tcActRedirect {
			t.Fatalf("masqueraded fragment %d: verdict %d", i, ret)
		}
		out[i] = o
	}
	src, _, payload := reassemble(t, out)
	natPort = binary.BigEndian.Uint16(payload[0:])
	if src != hostAddr || natPort == 33000 {
		t.Fatalf("masqueraded from %s:%d, want %s with another port than the taken 33000", src, natPort, hostAddr)
	}
	check("the masqueraded flow's reply", fragments(bigDatagram(ap(clientAddr, 7777), ap(hostAddr, natPort), 4000), 4, 1480), uplink,
		ap(clientAddr, 7777), ap(webAddr, 33000))

	// Out of order: the second fragment first.
	late := fragments(bigDatagram(ap(clientAddr, 40001), ap(hostAddr, 8053), 4000), 5, 1480)
	if ret, o := nb.run(t, nb.dp.Uplink.UplinkIngress, late[1]); ret != tcActUnspec || string(o) != string(late[1]) {
		t.Errorf("a fragment before its first: verdict %d; want it passed on untouched", ret)
	}
	if nb.counter(t, "uplink", "frag_no_first") != 1 {
		t.Error("a fragment before its first was not counted")
	}
	// From a sandbox it would leave untranslated: dropped.
	early := fragments(bigDatagram(ap(webAddr, 33001), ap(clientAddr, 7777), 4000), 6, 1480)
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, early[2]); ret != tcActShot {
		t.Errorf("a sandbox's fragment before its first: verdict %d, want dropped", ret)
	}
}

// An ICMP error from outside about a flow a sandbox started untranslated
// (routed mode, no masquerade) reaches the sandbox through the stack,
// whatever the gateway mode keeps out: path MTU discovery works there too.
func TestICMPErrorOfUntranslatedFlowGetsIn(t *testing.T) {
	nb := newNATBed(t)
	n := bridgeNet
	n.Masquerade, n.Direct = false, maps.DirectPublished
	must(t, nb.maps.PutNetwork(n))
	web, server := ap(webAddr, 33000), ap(clientAddr, 443)
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(web, server, syn, 100, 0)); ret != tcActUnspec {
		t.Fatalf("SYN: verdict %d, want it routed untranslated", ret)
	}
	tooBig := icmpError(routerAddr, webAddr, 3, 4, 1300, tcpSegment(web, server, ack, 101, 1))
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, tooBig, endpointIfindex, nb.uplink); ret != tcActUnspec {
		t.Errorf("frag needed about the sandbox's own flow: verdict %d, want it let in", ret)
	}
	stray := icmpError(routerAddr, webAddr, 3, 4, 1300, tcpSegment(web, ap(clientAddr, 444), ack, 101, 1))
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, stray, endpointIfindex, nb.uplink); ret != tcActShot {
		t.Errorf("an error about no flow of the sandbox: verdict %d, want it kept out", ret)
	}
}

// An ICMP error from outside about one sandbox's untranslated flow is let
// in only to that sandbox: addressed to a neighbour, it names a flow that
// is not the neighbour's and the gateway mode keeps it out.
func TestICMPErrorOfAnotherSandboxFlowKeptOut(t *testing.T) {
	nb := newNATBed(t)
	n := bridgeNet
	n.Masquerade, n.Direct = false, maps.DirectPublished
	must(t, nb.maps.PutNetwork(n))
	neighbour := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	web, server := ap(webAddr, 33000), ap(clientAddr, 443)
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(web, server, syn, 100, 0)); ret != tcActUnspec {
		t.Fatalf("SYN: verdict %d, want it routed untranslated", ret)
	}
	quote := tcpSegment(web, server, ack, 101, 1)
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, icmpError(routerAddr, neighbour.addr, 3, 4, 1300, quote),
		neighbour.ifindex, nb.uplink); ret != tcActShot {
		t.Errorf("an error about another sandbox's flow: verdict %d, want it kept out", ret)
	}
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, icmpError(routerAddr, webAddr, 3, 4, 1300, quote),
		endpointIfindex, nb.uplink); ret != tcActUnspec {
		t.Errorf("the same error to the sandbox of the flow: verdict %d, want it let in", ret)
	}
}

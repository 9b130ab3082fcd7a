package bpf_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// TCP flags.
const (
	fin = 0x01
	syn = 0x02
	rst = 0x04
	ack = 0x10
)

// tcpSegment builds a TCP segment with the given flags and numbers, of
// the addresses' family.
func tcpSegment(src, dst netip.AddrPort, flags uint8, seq, ackSeq uint32) []byte {
	pkt := segment(6, src, dst, false)
	ip, l4 := pkt[14:34], pkt[34:]
	sum := func() uint32 { return pseudo(ip, len(l4)) }
	if src.Addr().Is6() {
		ip, l4 = pkt[14:54], pkt[54:]
		sum = func() uint32 { return pseudo6(ip, len(l4)) }
	}
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ackSeq)
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[16:], 0)
	binary.BigEndian.PutUint16(l4[16:], checksum(l4, sum()))
	return pkt
}

// state reads a flow's conntrack state, and whether it is in ct (assured).
func (nb *natbed) state(t *testing.T, key bpf.DatapathFlow) (bpf.DatapathCtState, bool) {
	t.Helper()
	e, assured, ok := nb.ct(t, key)
	if !ok {
		t.Fatalf("flow %+v is not tracked", key)
	}
	return bpf.DatapathCtState(e.State), assured
}

// lifetime is how long an entry has left.
func (nb *natbed) lifetime(t *testing.T, key bpf.DatapathFlow) time.Duration {
	t.Helper()
	e, _, ok := nb.ct(t, key)
	if !ok {
		t.Fatalf("flow %+v is not tracked", key)
	}
	return time.Duration(e.Expires) - maps.Now()
}

// expire makes both entries of a flow (given by its keys) expired, as if
// their lifetime had passed.
func (nb *natbed) expire(t *testing.T, keys ...bpf.DatapathFlow) {
	t.Helper()
	for _, k := range keys {
		for _, table := range []*ebpf.Map{nb.dp.Maps.Ct, nb.dp.Maps.CtNew} {
			var e bpf.DatapathCtEntry
			if table.Lookup(k, &e) == nil {
				e.Expires = uint64(maps.Now() - time.Second)
				must(t, table.Put(k, e))
			}
		}
	}
}

func (nb *natbed) mustVerdict(t *testing.T, what string, prog *ebpf.Program, pkt []byte, ifindex int, want uint32) parsed {
	t.Helper()
	ret, out := nb.runOn(t, prog, pkt, ifindex)
	if ret != want {
		t.Fatalf("%s: verdict %d, want %d", what, ret, want)
	}
	if ret == tcActShot {
		return parsed{}
	}
	return verify(t, out)
}

// A masqueraded TCP flow walks netfilter's states, each with its lifetime;
// it moves to the table of established flows only when the originator
// acknowledges the responder's SYN-ACK.
func TestTCPStateWalk(t *testing.T) {
	nb := newNATBed(t)
	timeouts, err := loader.DefaultCTTimeouts()
	must(t, err)
	web, client := ap(webAddr, 33000), ap(clientAddr, 80)
	orig := flowOf(6, web, client)
	out := func(flags uint8, seq, ackSeq uint32) {
		t.Helper()
		nb.mustVerdict(t, "from the sandbox", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, flags, seq, ackSeq), 0, tcActRedirect)
	}
	in := func(flags uint8, seq, ackSeq uint32) {
		t.Helper()
		nb.mustVerdict(t, "from outside", nb.dp.Uplink.UplinkIngress, tcpSegment(client, ap(hostAddr, 33000), flags, seq, ackSeq), 0, tcActRedirect)
	}
	check := func(step string, want bpf.DatapathCtState, wantAssured bool, life uint32) {
		t.Helper()
		st, assured := nb.state(t, orig)
		if st != want || assured != wantAssured {
			t.Fatalf("after %s: state %v (in ct: %v), want %v (in ct: %v)", step, st, assured, want, wantAssured)
		}
		if l := nb.lifetime(t, orig); l > time.Duration(life)*time.Second || l < time.Duration(life)*time.Second-5*time.Second {
			t.Errorf("after %s: lifetime %s, want %ds", step, l, life)
		}
	}
	out(syn, 100, 0)
	check("SYN", bpf.DatapathCtStateCT_TCP_SYN_SENT, false, timeouts.TcpSynSent)
	in(syn|ack, 5000, 101)
	check("SYN-ACK", bpf.DatapathCtStateCT_TCP_SYN_RECV, false, timeouts.TcpSynRecv)
	out(ack, 101, 9999) // acknowledges something else: not the handshake
	check("a stray ACK", bpf.DatapathCtStateCT_TCP_SYN_RECV, false, timeouts.TcpSynRecv)
	out(ack, 101, 5001)
	check("the handshake's ACK", bpf.DatapathCtStateCT_TCP_ESTABLISHED, true, timeouts.TcpEstablished)
	in(fin|ack, 5001, 101)
	check("a FIN", bpf.DatapathCtStateCT_TCP_FIN_WAIT, true, timeouts.TcpFinWait)
	out(fin|ack, 101, 5002)
	check("both FINs", bpf.DatapathCtStateCT_TCP_TIME_WAIT, true, timeouts.TcpTimeWait)
	// A new SYN of the same tuple reopens the closed flow.
	out(syn, 7000, 0)
	check("a new SYN", bpf.DatapathCtStateCT_TCP_SYN_SENT, true, timeouts.TcpSynSent)
	in(rst|ack, 0, 7001)
	check("a reset", bpf.DatapathCtStateCT_TCP_CLOSE, true, timeouts.TcpClose)
}

// UDP is "unreplied" until answered, and moves to the established table
// once answered back, with the longer stream lifetime.
func TestUDPLifetimes(t *testing.T) {
	nb := newNATBed(t)
	timeouts, err := loader.DefaultCTTimeouts()
	must(t, err)
	web, client := ap(webAddr, 33000), ap(clientAddr, 53)
	orig := flowOf(17, web, client)
	nb.mustVerdict(t, "query", nb.dp.Endpoint.FromContainer, segment(17, web, client, false), 0, tcActRedirect)
	if st, assured := nb.state(t, orig); st != bpf.DatapathCtStateCT_UDP_UNREPLIED || assured {
		t.Fatalf("after a query: %v, in ct %v", st, assured)
	}
	nb.mustVerdict(t, "answer", nb.dp.Uplink.UplinkIngress, segment(17, client, ap(hostAddr, 33000), false), 0, tcActRedirect)
	if st, assured := nb.state(t, orig); st != bpf.DatapathCtStateCT_UDP_REPLIED || assured {
		t.Fatalf("after an answer: %v, in ct %v", st, assured)
	}
	nb.mustVerdict(t, "answered back", nb.dp.Endpoint.FromContainer, segment(17, web, client, false), 0, tcActRedirect)
	if st, assured := nb.state(t, orig); st != bpf.DatapathCtStateCT_UDP_REPLIED || !assured {
		t.Fatalf("after an exchange both ways: %v, in ct %v; want it established", st, assured)
	}
	if l := nb.lifetime(t, orig); l < time.Duration(timeouts.UdpStream-5)*time.Second {
		t.Errorf("stream lifetime %s, want %ds", l, timeouts.UdpStream)
	}
}

// A flow whose lifetime has passed is gone for every lookup, and its NAT
// tuple is free at once, with no daemon to reclaim it.
func TestExpiredFlowFreesItsNATPort(t *testing.T) {
	nb := newNATBed(t)
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	dst := ap(clientAddr, 53)
	first := nb.mustVerdict(t, "first sandbox", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 5000), dst, false), 0, tcActRedirect)
	if first.src != ap(hostAddr, 5000) {
		t.Fatalf("first flow left from %s, want its own port kept", first.src)
	}
	// While it lives, another sandbox's flow from the same port takes a NAT port.
	second := nb.mustVerdict(t, "second sandbox", nb.dp.Endpoint.FromContainer, segment(17, ap(other.addr, 5000), dst, false), other.ifindex, tcActRedirect)
	if second.src.Port() < 61000 {
		t.Fatalf("second flow left from %s while the first held port 5000", second.src)
	}
	third := ap(netip.MustParseAddr("172.17.0.4"), 5000)
	thirdEP := nb.addEndpoint(t, third.Addr())
	nb.expire(t, flowOf(17, ap(webAddr, 5000), dst), flowOf(17, dst, ap(hostAddr, 5000)))
	got := nb.mustVerdict(t, "third sandbox", nb.dp.Endpoint.FromContainer, segment(17, third, dst, false), thirdEP.ifindex, tcActRedirect)
	if got.src != ap(hostAddr, 5000) {
		t.Fatalf("after the first flow expired, a new one left from %s; want port 5000 free again", got.src)
	}
	// The expired flow's packets are new: they now collide and move.
	again := nb.mustVerdict(t, "first sandbox again", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 5000), dst, false), 0, tcActRedirect)
	if again.src == ap(hostAddr, 5000) {
		t.Fatal("the expired flow still owns port 5000")
	}
}

// A closed TCP flow frees its NAT port once its TIME_WAIT lifetime ends;
// until then a new SYN of the same tuple reopens it.
func TestClosedFlowFreesItsNATPort(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 61000})
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	dst := ap(clientAddr, 80)
	// Two flows from one source port use the port itself and the one NAT port.
	for _, ep := range []endpoint{{webAddr, 0}, other} {
		nb.mustVerdict(t, "SYN", nb.dp.Endpoint.FromContainer, tcpSegment(ap(ep.addr, 5000), dst, syn, 1, 0), ep.ifindex, tcActRedirect)
	}
	third := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.4"))
	nb.mustVerdict(t, "third flow", nb.dp.Endpoint.FromContainer, tcpSegment(ap(third.addr, 5000), dst, syn, 1, 0), third.ifindex, tcActShot)
	// The second flow closes (a reset) and its lifetime passes.
	nb.mustVerdict(t, "reset", nb.dp.Uplink.UplinkIngress, tcpSegment(dst, ap(hostAddr, 61000), rst|ack, 0, 2), 0, tcActRedirect)
	nb.expire(t, flowOf(6, ap(other.addr, 5000), dst), flowOf(6, dst, ap(hostAddr, 61000)))
	got := nb.mustVerdict(t, "third flow, later", nb.dp.Endpoint.FromContainer, tcpSegment(ap(third.addr, 5000), dst, syn, 1, 0), third.ifindex, tcActRedirect)
	if got.src != ap(hostAddr, 61000) {
		t.Fatalf("third flow left from %s, want the freed NAT port 61000", got.src)
	}
}

// An entry whose partner was evicted from the LRU table is never reused:
// its tuple may be another flow's by then.
func TestOrphanedEntryIsNotReused(t *testing.T) {
	nb := newNATBed(t)
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	dst := ap(clientAddr, 53)
	nb.mustVerdict(t, "first flow", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 5000), dst, false), 0, tcActRedirect)
	must(t, nb.dp.Maps.CtNew.Delete(flowOf(17, dst, ap(hostAddr, 5000)))) // evicted
	got := nb.mustVerdict(t, "second flow", nb.dp.Endpoint.FromContainer, segment(17, ap(other.addr, 5000), dst, false), other.ifindex, tcActRedirect)
	if got.src != ap(hostAddr, 5000) {
		t.Fatalf("second flow left from %s, want the free port 5000", got.src)
	}
	again := nb.mustVerdict(t, "first flow again", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 5000), dst, false), 0, tcActRedirect)
	if again.src == ap(hostAddr, 5000) {
		t.Fatal("two flows share the NAT tuple 10.99.0.1:5000")
	}
	// And the reply goes to its own flow.
	back := nb.mustVerdict(t, "reply", nb.dp.Uplink.UplinkIngress, segment(17, dst, ap(hostAddr, 5000), false), 0, tcActRedirect)
	if back.dst != ap(other.addr, 5000) {
		t.Fatalf("the reply to port 5000 went to %s, want %s", back.dst, ap(other.addr, 5000))
	}
}

// A flood of new, never-answered flows to a published port cannot evict an
// established flow: they fill only the LRU table of new flows.
func TestFloodDoesNotEvictEstablishedFlows(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	web, client := ap(webAddr, 33000), ap(clientAddr, 443)
	nb.mustVerdict(t, "SYN", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, syn, 100, 0), 0, tcActRedirect)
	nb.mustVerdict(t, "SYN-ACK", nb.dp.Uplink.UplinkIngress, tcpSegment(client, ap(hostAddr, 33000), syn|ack, 5000, 101), 0, tcActRedirect)
	nb.mustVerdict(t, "ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 101, 5001), 0, tcActRedirect)

	// More spoofed SYNs than the table of new flows holds.
	flood := int(nb.dp.Maps.CtNew.MaxEntries()) + 20000
	pkt := tcpSegment(ap(netip.MustParseAddr("198.18.0.0"), 1000), ap(hostAddr, 8080), syn, 1, 0)
	out := make([]byte, len(pkt))
	start := time.Now()
	must(t, namespace.Do(nb.ns, func() error {
		for i := range flood {
			pkt[28], pkt[29] = byte(i>>8), byte(i) // source address 198.18.x.y
			pkt[34], pkt[35] = byte(i>>16), 0x10   // and port
			if _, err := nb.dp.Uplink.UplinkIngress.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbContext{}}); err != nil {
				return err
			}
		}
		return nil
	}))
	t.Logf("%d spoofed SYNs in %s", flood, time.Since(start).Round(time.Millisecond))
	if nb.counter(t, "uplink", "dnat") < uint64(flood)/2 {
		t.Fatalf("the flood was not translated (%d dnat): the test floods nothing", nb.counter(t, "uplink", "dnat"))
	}
	// The idle established flow still leaves from its own port, both ways.
	got := nb.mustVerdict(t, "established flow after the flood", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 101, 5001), 0, tcActRedirect)
	if got.src != ap(hostAddr, 33000) {
		t.Fatalf("the established flow now leaves from %s", got.src)
	}
	back := nb.mustVerdict(t, "its reply", nb.dp.Uplink.UplinkIngress, tcpSegment(client, ap(hostAddr, 33000), ack, 5001, 101), 0, tcActRedirect)
	if back.dst != web {
		t.Fatalf("the reply went to %s, want %s", back.dst, web)
	}
}

// A sandbox sends only from its own address, and reaches no loopback
// address: a port published on 127.0.0.1 is for host processes alone.
func TestSourceValidation(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, Proto: 6, Addr: webAddr, Port: 80}))
	forged := netip.MustParseAddr("198.51.100.7")
	for _, c := range []struct {
		name, verdict string
		pkt           []byte
	}{
		{"a forged source", "drop_spoofed", segment(17, ap(forged, 5000), ap(clientAddr, 53), false)},
		{"another sandbox's source", "drop_spoofed", segment(17, ap(netip.MustParseAddr("172.17.0.3"), 5000), ap(clientAddr, 53), false)},
		{"to 127.0.0.1", "drop_martian", segment(6, ap(webAddr, 5000), ap(netip.MustParseAddr("127.0.0.1"), 8081), false)},
	} {
		before := nb.counter(t, "from_container", c.verdict)
		nb.mustVerdict(t, c.name, nb.dp.Endpoint.FromContainer, c.pkt, 0, tcActShot)
		if nb.counter(t, "from_container", c.verdict)-before != 1 {
			t.Errorf("%s: not counted as %s", c.name, c.verdict)
		}
	}
	if n := nb.counter(t, "from_container", "snat") + nb.counter(t, "from_container", "dnat"); n != 0 {
		t.Errorf("%d forged packets were translated", n)
	}
	// ARP claiming another's address is forged too; its own is fine.
	arp := arpPacket()
	copy(arp[28:32], []byte{172, 17, 0, 3})
	nb.mustVerdict2(t, "ARP for another's address", arp, tcActShot)
	own := webAddr.As4()
	copy(arp[28:32], own[:])
	nb.mustVerdict2(t, "ARP for its own address", arp, tcActUnspec)
	// No IPv6 on an IPv4 network, link-local included.
	ip6 := make([]byte, 54)
	copy(ip6, []byte{0x33, 0x33, 0, 0, 0, 1, 2, 0x42, 172, 17, 0, 2, 0x86, 0xdd, 0x60})
	nb.mustVerdict2(t, "IPv6", ip6, tcActShot)
	if nb.counter(t, "from_container", "drop_no_ipv6") != 1 {
		t.Error("IPv6 was not counted as drop_no_ipv6")
	}
}

func (nb *natbed) mustVerdict2(t *testing.T, what string, pkt []byte, want uint32) {
	t.Helper()
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, pkt); ret != want {
		t.Fatalf("%s: verdict %d, want %d", what, ret, want)
	}
}

// Conntrack is scoped: an entry matches only packets that come in where its
// flow does, so nobody can forge the other side of another's flow.
func TestConntrackIsScoped(t *testing.T) {
	nb := newNATBed(t)
	web, dst := ap(webAddr, 5000), ap(clientAddr, 53)
	nb.mustVerdict(t, "masqueraded flow", nb.dp.Endpoint.FromContainer, segment(17, web, dst, false), 0, tcActRedirect)
	// The sandbox's own direction, forged from outside: not translated.
	in := segment(17, web, dst, false)
	if ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, in); ret != tcActUnspec || verify(t, out).src != web {
		t.Fatalf("a forged packet of the sandbox's direction at the uplink: verdict %d; want it passed untranslated", ret)
	}
	// The outside's direction, sent by a sandbox: refused at its source.
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	nb.mustVerdict(t, "the reply direction from another sandbox", nb.dp.Endpoint.FromContainer,
		segment(17, dst, ap(hostAddr, 5000), false), other.ifindex, tcActShot)

	// A sandbox on another network forging the sandbox's side of a
	// published flow, to inject into it: refused at its source, counted.
	must(t, nb.maps.PutNetwork(maps.Network{Index: 2, Subnet: netip.MustParsePrefix("172.20.0.0/16"),
		Gateway: netip.MustParseAddr("172.20.0.1"), GatewayMAC: net.HardwareAddr{2, 0x42, 172, 20, 0, 1}, Masquerade: true}))
	stranger := nb.addEndpointOn(t, netip.MustParseAddr("172.20.0.2"), 2)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	nb.mustVerdict(t, "published SYN", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), syn, 1, 0), 0, tcActRedirect)
	before := nb.counter(t, "from_container", "drop_spoofed")
	nb.mustVerdict(t, "the published flow's reply, forged on another network", nb.dp.Endpoint.FromContainer,
		tcpSegment(ap(webAddr, 80), ap(clientAddr, 40000), syn|ack, 1, 2), stranger.ifindex, tcActShot)
	if nb.counter(t, "from_container", "drop_spoofed") != before+1 {
		t.Error("the forged reply was not counted as drop_spoofed")
	}
	// The sandbox's veth recreated (a new ifindex, as a repair makes it):
	// its flows follow it.
	moved := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.5"))
	must(t, nb.maps.DeleteIface(endpointIfindex))
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: uint32(moved.ifindex), Network: 1, Addr: webAddr}))
	got := nb.mustVerdict(t, "the published flow's reply from the recreated veth", nb.dp.Endpoint.FromContainer,
		tcpSegment(ap(webAddr, 80), ap(clientAddr, 40000), syn|ack, 1, 2), moved.ifindex, tcActRedirect)
	if got.src != ap(hostAddr, 8080) {
		t.Errorf("the reply left from %s, want %s:8080", got.src, hostAddr)
	}
}

// A sandbox of an internal network leaks nothing out, even through a flow
// conntrack knows under its address and interface.
func TestInternalNetworkCannotLeakThroughConntrack(t *testing.T) {
	nb := newNATBed(t)
	n := bridgeNet
	n.Internal = true
	must(t, nb.maps.PutNetwork(n))
	web, dst := ap(webAddr, 5000), ap(clientAddr, 53)
	// Forge the state a leak would need.
	orig, reply := flowOf(17, web, dst), flowOf(17, dst, ap(hostAddr, 5000))
	e := bpf.DatapathCtEntry{Nat: flowOf(17, ap(hostAddr, 5000), dst), Expires: uint64(maps.Now() + time.Hour), Ifindex: endpointIfindex,
		State: uint8(bpf.DatapathCtStateCT_UDP_REPLIED)}
	must(t, nb.dp.Maps.Ct.Put(orig, e))
	e.Nat, e.Ifindex, e.Flags = flowOf(17, dst, web), 0, uint8(bpf.DatapathCtFlagCT_REPLY)
	must(t, nb.dp.Maps.Ct.Put(reply, e))
	nb.mustVerdict(t, "internal sandbox to outside", nb.dp.Endpoint.FromContainer, segment(17, web, dst, false), 0, tcActShot)
	if nb.counter(t, "from_container", "drop_internal") != 1 {
		t.Error("not counted as drop_internal")
	}
}

// Two publications may lead to one sandbox port; a client reaching both
// from one port gets two flows, the second with its port translated.
func TestTwoPublicationsToOneSandboxPort(t *testing.T) {
	nb := newNATBed(t)
	for _, port := range []uint16{8080, 8081} {
		must(t, nb.maps.PutPublication(maps.Publication{HostPort: port, Proto: 6, Addr: webAddr, Port: 80}))
	}
	client := ap(clientAddr, 40000)
	var seen []netip.AddrPort
	for _, port := range []uint16{8080, 8081} {
		got := nb.mustVerdict(t, "SYN", nb.dp.Uplink.UplinkIngress, tcpSegment(client, ap(hostAddr, port), syn, 1, 0), 0, tcActRedirect)
		if got.dst != ap(webAddr, 80) || got.src.Addr() != clientAddr {
			t.Fatalf("to %d: translated to %s -> %s", port, got.src, got.dst)
		}
		seen = append(seen, got.src)
	}
	if seen[0] == seen[1] {
		t.Fatalf("both flows reach the sandbox as %s", seen[0])
	}
	for i, port := range []uint16{8080, 8081} {
		back := nb.mustVerdict(t, "SYN-ACK", nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 80), seen[i], syn|ack, 9, 2), 0, tcActRedirect)
		if back.src != ap(hostAddr, port) || back.dst != client {
			t.Errorf("reply of the flow to %d: %s -> %s, want %s -> %s", port, back.src, back.dst, ap(hostAddr, port), client)
		}
	}
}

// Multicast and broadcast are never masqueraded.
func TestNoMasqueradeOfMulticastOrBroadcast(t *testing.T) {
	nb := newNATBed(t)
	for _, dst := range []string{"239.1.2.3", "255.255.255.255", "224.0.0.251"} {
		pkt := segment(17, ap(webAddr, 5353), ap(netip.MustParseAddr(dst), 5353), false)
		nb.mustVerdict(t, "to "+dst, nb.dp.Endpoint.FromContainer, pkt, 0, tcActUnspec)
	}
	if n := nb.counter(t, "from_container", "snat"); n != 0 {
		t.Errorf("%d multicast or broadcast datagrams were masqueraded", n)
	}
}

// The daemon reclaims expired entries, and only those.
func TestReclaimExpired(t *testing.T) {
	nb := newNATBed(t)
	for port := uint16(5000); port < 5010; port++ {
		nb.mustVerdict(t, "flow", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, port), ap(clientAddr, 53), false), 0, tcActRedirect)
	}
	nb.expire(t, flowOf(17, ap(webAddr, 5000), ap(clientAddr, 53)), flowOf(17, ap(clientAddr, 53), ap(hostAddr, 5000)))
	n, err := nb.maps.ReclaimExpired(maps.Now())
	must(t, err)
	if n != 2 {
		t.Fatalf("reclaimed %d entries, want the 2 of the expired flow", n)
	}
	fills, err := nb.maps.Fills()
	must(t, err)
	c := map[string]int{}
	for _, f := range fills {
		c[f.Map] = f.Entries
	}
	if c["ct_new"] != 18 || c["ct"] != 0 {
		t.Fatalf("conntrack holds %d new and %d established entries, want 18 new", c["ct_new"], c["ct"])
	}
}

// The NAT port search goes through the whole range, from wherever it
// starts, and finds the one port left.
func TestNATPortSearchFindsTheLastFreePort(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 61009})
	dst := ap(clientAddr, 53)
	live := bpf.DatapathCtEntry{Expires: uint64(maps.Now() + time.Hour)}
	for port := uint16(61000); port <= 61009; port++ {
		if port != 61007 {
			must(t, nb.dp.Maps.Ct.Put(flowOf(17, dst, ap(hostAddr, port)), live))
		}
	}
	for i := range 8 {
		// Each flow keeps port 5000 if free: take it first, so the search runs.
		must(t, nb.dp.Maps.Ct.Put(flowOf(17, dst, ap(hostAddr, 5000)), live))
		src := ap(webAddr, 5000+uint16(i))
		must(t, nb.dp.Maps.Ct.Put(flowOf(17, dst, ap(hostAddr, src.Port())), live))
		got := nb.mustVerdict(t, "flow", nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), 0, tcActRedirect)
		if got.src != ap(hostAddr, 61007) {
			t.Fatalf("flow %d left from %s, want the one free port 61007", i, got.src)
		}
		// Free it again for the next search, from another random start.
		nb.expire(t, flowOf(17, src, dst), flowOf(17, dst, ap(hostAddr, 61007)))
	}
}

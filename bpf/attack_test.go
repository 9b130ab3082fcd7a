package bpf_test

// The datapath as an attacker and as a long-running host see it. Each
// test describes an attack (or a production situation) that worked
// against an earlier datapath, and checks the behaviour the datapath
// contract (DESIGN.md §3) asks for instead.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// runFrom runs prog on pkt as if on ifindex, for a packet the host
// received on ingress (skb->ingress_ifindex): what tells a packet routed
// in from an uplink from one bridged from a neighbour's veth.
func (nb *natbed) runFrom(t *testing.T, prog *ebpf.Program, pkt []byte, ifindex, ingress int) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+128),
		Context: skbContext{Ifindex: uint32(ifindex), IngressIfindex: uint32(ingress)}}
	var ret uint32
	must(t, namespace.Do(nb.ns, func() (err error) {
		ret, err = prog.Run(opts)
		return err
	}))
	return ret, opts.DataOut
}

// secondNet is a second bridge network of the bed, 172.18.0.0/16.
var secondNet = maps.Network{Index: 2, Subnet: netip.MustParsePrefix("172.18.0.0/16"), Gateway: netip.MustParseAddr("172.18.0.1"),
	GatewayMAC: net.HardwareAddr{2, 0x42, 172, 18, 0, 1}, Masquerade: true}

// addNetwork puts n into the bed, its gateway among the host's addresses.
func (nb *natbed) addNetwork(t *testing.T, n maps.Network) {
	t.Helper()
	must(t, nb.maps.PutNetwork(n))
	must(t, nb.maps.SyncHost([]netip.Addr{hostAddr, bridgeNet.Gateway, n.Gateway}, map[uint32]maps.Uplink{uint32(nb.uplink): {Addr: hostAddr}}, nil))
}

// fixIPCsum recomputes the IPv4 header checksum of a frame.
func fixIPCsum(pkt []byte) []byte {
	binary.BigEndian.PutUint16(pkt[24:], 0)
	binary.BigEndian.PutUint16(pkt[24:], checksum(pkt[14:34], 0))
	return pkt
}

// establish runs a masqueraded TCP handshake web:33000 -> client:80
// (sandbox ISN 100, server ISN 5000) and returns the NAT address.
func establish(t *testing.T, nb *natbed) netip.AddrPort {
	t.Helper()
	web, client := ap(webAddr, 33000), ap(clientAddr, 80)
	out := nb.mustVerdict(t, "SYN", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, syn, 100, 0), 0, tcActRedirect)
	nb.mustVerdict(t, "SYN-ACK", nb.dp.Uplink.UplinkIngress, tcpSegment(client, out.src, syn|ack, 5000, 101), 0, tcActRedirect)
	nb.mustVerdict(t, "ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 101, 5001), 0, tcActRedirect)
	if st, assured := nb.state(t, flowOf(6, web, client)); st != bpf.DatapathCtStateCT_TCP_ESTABLISHED || !assured {
		t.Fatalf("handshake: state %v, assured %v", st, assured)
	}
	return out.src
}

// An outside host on the uplink's segment sends packets
// to a sandbox's address with a source forged inside the sandbox's own
// subnet (here 172.17.0.3, a neighbour that may not even exist). The host
// routes them to the bridge and to_container waves them through as "a
// neighbour, or the gateway", before the gateway mode and the internal
// flag are looked at: every unpublished port of a "nat" network, and any
// sandbox of an internal network, is reachable from outside (one-way:
// blind TCP, full UDP). Docker 28 drops packets to container addresses
// arriving from other interfaces in raw PREROUTING whatever their source.
// A neighbour's packets come bridged from its veth (skb->ingress_ifindex
// is an endpoint of the network) or from the host (0); one routed in from
// an uplink is not a neighbour's.
func TestForgedNeighbourSourceFromOutsideIsDropped(t *testing.T) {
	for _, internal := range []bool{false, true} {
		t.Run(fmt.Sprintf("internal=%v", internal), func(t *testing.T) {
			nb := newNATBed(t)
			n := bridgeNet
			n.Internal = internal
			must(t, nb.maps.PutNetwork(n))
			neighbour := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
			pkt := func() []byte {
				return segment(17, ap(neighbour.addr, 5000), ap(webAddr, 161), false) // an SNMP set, say
			}
			// The real neighbour, bridged from its veth: passes (as it should).
			if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, pkt(), endpointIfindex, neighbour.ifindex); ret != tcActUnspec {
				t.Fatalf("the neighbour's own datagram: verdict %d, want passed", ret)
			}
			// The same datagram, routed in from the uplink.
			ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, pkt(), endpointIfindex, nb.uplink)
			if ret != tcActShot {
				t.Errorf("a datagram from the uplink forging a neighbour's source reached an unpublished port (verdict %d); want TC_ACT_SHOT", ret)
			}
		})
	}
}

// A sandbox of an internal network reaches a port
// published on every host address (HostIP 0.0.0.0) by sending to its own
// gateway's address: the internal check lets traffic to the gateway pass
// ("its own network"), then dnat_published, which takes the gateway as a
// host address, translates the flow to a sandbox of another network. The
// comment in from_container says an internal network reaches "not even
// the host's published ports"; Docker drops the DNATed packet in
// DOCKER-ISOLATION. The internal check must apply to the translated
// destination (or dnat_published must not run for internal networks).
func TestInternalNetworkCannotReachPublicationViaGateway(t *testing.T) {
	nb := newNATBed(t)
	internal := secondNet
	internal.Internal, internal.Masquerade = true, false
	nb.addNetwork(t, internal)
	isolated := nb.addEndpointOn(t, netip.MustParseAddr("172.18.0.2"), internal.Index)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))

	// To the uplink address: refused (as it should be).
	nb.mustVerdict(t, "to the host's address", nb.dp.Endpoint.FromContainer,
		tcpSegment(ap(isolated.addr, 40000), ap(hostAddr, 8080), syn, 1, 0), isolated.ifindex, tcActShot)
	// To its own gateway's address: translated to web:80, on network 1.
	// To its own gateway's address: the host's, as for any host port, and
	// never translated to web:80 on network 1.
	ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(isolated.addr, 40001), ap(internal.Gateway, 8080), syn, 1, 0), isolated.ifindex)
	if ret == tcActRedirect || verify(t, out).dst != ap(internal.Gateway, 8080) {
		t.Errorf("internal sandbox -> its gateway:8080: verdict %d, translated to %s; want it left to the host untranslated", ret, verify(t, out).dst)
	}
}

// Flows tracked untranslated (a network without
// masquerade, or "routed"/"nat-unprotected" gateway modes) never see the
// packets of their outside side: to_container only looks the flow up, it
// never calls ct_update. A TCP flow a sandbox opens stays SYN_SENT (120 s,
// in the evictable ct_new) for ever, though its handshake completes; a UDP
// flow stays "unreplied" (30 s). An idle connection (a database pool, an
// SSH session) dies after two minutes: the server's next packet is then
// dropped as drop_unpublished, and a SYN flood evicts such flows at once.
func TestUntranslatedFlowEstablishes(t *testing.T) {
	nb := newNATBed(t)
	n := bridgeNet
	n.Masquerade = false
	must(t, nb.maps.PutNetwork(n))
	web, server := ap(webAddr, 33000), ap(clientAddr, 5432)
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(web, server, syn, 100, 0)); ret != tcActUnspec {
		t.Fatalf("SYN: verdict %d", ret)
	}
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, tcpSegment(server, web, syn|ack, 5000, 101), endpointIfindex, nb.uplink); ret != tcActUnspec {
		t.Fatalf("SYN-ACK: verdict %d", ret)
	}
	nb.mustVerdict(t, "ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, server, ack, 101, 5001), 0, tcActRedirect)
	st, assured := nb.state(t, flowOf(6, web, server))
	if st != bpf.DatapathCtStateCT_TCP_ESTABLISHED || !assured {
		t.Errorf("after a complete handshake: state %v, in ct %v, lifetime %s; want ESTABLISHED in ct",
			st, assured, nb.lifetime(t, flowOf(6, web, server)).Round(time.Second))
	}
}

// A TCP reset moves a flow to CLOSE (10 s) whatever
// its sequence number. An outside attacker who knows or guesses a
// masqueraded flow's tuple (server address and port are public; the NAT
// port is the sandbox's own port, kept, so ~28k guesses over the
// ephemeral range) sends blind RSTs: the sandbox's TCP rejects them (out
// of window), but conntrack has already closed the flow, so an idle
// connection loses its translation 10 s later and its NAT port is handed
// out again. Netfilter ignores a RST outside the window. Keep the peer's
// next sequence number per direction and act only on RSTs in the window.
func TestBlindResetLeavesFlowOpen(t *testing.T) {
	nb := newNATBed(t)
	nat := establish(t, nb)
	// seq 0x90000000: nowhere near the server's 5001.
	nb.mustVerdict(t, "forged RST", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 80), nat, rst, 0x90000000, 0), 0, tcActRedirect)
	if st, _ := nb.state(t, flowOf(6, ap(webAddr, 33000), ap(clientAddr, 80))); st != bpf.DatapathCtStateCT_TCP_ESTABLISHED {
		t.Errorf("after an out-of-window RST: state %v, lifetime %s; want ESTABLISHED (the RST ignored)",
			st, nb.lifetime(t, flowOf(6, ap(webAddr, 33000), ap(clientAddr, 80))).Round(time.Second))
	}
}

// A TCP segment that is not a SYN starts a flow
// "picked up mid-stream", and ct_lifetime ignores "assured" for TCP: the
// never-answered flow gets the ESTABLISHED lifetime, five days, and holds
// its NAT tuple that long (ct_new is LRU, but nothing else frees it on a
// quiet host). One sandbox sending a bare ACK from every port to one
// destination (a registry, a DNS resolver over TCP) takes every NAT port
// towards it for five days: no other sandbox reaches it (drop_no_nat_port).
// The same holds for spoofed ACKs from outside to a published port.
// Netfilter caps an unreplied pickup at its UNACK lifetime (300 s).
func TestUnansweredPickupExpiresSoon(t *testing.T) {
	nb := newNATBed(t)
	web, server := ap(webAddr, 61000), ap(clientAddr, 443)
	nb.mustVerdict(t, "a bare ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, server, ack, 1, 1), 0, tcActRedirect)
	if l := nb.lifetime(t, flowOf(6, web, server)); l > 300*time.Second {
		t.Errorf("a never-answered mid-stream flow lives %s; want at most 300s (netfilter's unacknowledged lifetime)", l.Round(time.Second))
	}
}

// parse_packet records a first fragment's ports in
// frags before from_container checks the source address, and frags is
// keyed by (source, destination, IP id, protocol) only. A sandbox forges
// a first fragment in a neighbour's name: it is dropped as drop_spoofed,
// but its ports replace the neighbour's for that datagram, and the
// neighbour's later fragments are then looked up under the forged ports
// and dropped (or, with ports of another of its flows, translated by the
// wrong one). Record the ports only once the packet passed source
// validation (and key them to the interface they came in on).
func TestForgedFirstFragmentCannotPoisonNeighbour(t *testing.T) {
	nb := newNATBed(t)
	victim := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	dst := ap(clientAddr, 514)
	frags := fragments(bigDatagram(ap(victim.addr, 5000), dst, 3000), 7, 1480)
	if ret, _ := nb.runOn(t, nb.dp.Endpoint.FromContainer, frags[0], victim.ifindex); ret != tcActRedirect {
		t.Fatalf("victim's first fragment: verdict %d", ret)
	}
	// The attacker (web, on ifindex 1) forges a first fragment of the same datagram.
	forged := fragments(bigDatagram(ap(victim.addr, 9999), dst, 3000), 7, 1480)[0]
	nb.mustVerdict(t, "forged first fragment", nb.dp.Endpoint.FromContainer, forged, 0, tcActShot)
	ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, frags[1], victim.ifindex)
	if ret != tcActRedirect || netip.AddrFrom4([4]byte(out[26:30])) != hostAddr {
		t.Errorf("victim's second fragment after a forged first: verdict %d; want it masqueraded like its first", ret)
	}
}

// claim_nat_port checks the host's sockets only for
// the port the flow already has; the search through the NAT range
// (try_nat_port) never does. When a host process owns a tuple in the NAT
// range (an explicit bind, ip_local_port_range widened, a service using a
// fixed source port), a masqueraded flow is given that very tuple and the
// uplink then steals the host connection's packets for the sandbox
// (translate_known runs before anything else). Check host_tuple_in_use in
// the loop too.
func TestNATPortSearchSparesHostTuples(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 61000})
	// A host connection 10.99.0.1:61000 -> 10.99.0.2:80 (SYN sent, unanswered).
	var fd int
	must(t, namespace.Do(nb.ns, func() error {
		var err error
		if fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0); err != nil {
			return err
		}
		if err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: 61000, Addr: hostAddr.As4()}); err != nil {
			return err
		}
		if err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: 80, Addr: clientAddr.As4()}); err != syscall.EINPROGRESS {
			return fmt.Errorf("connect: %v", err)
		}
		return nil
	}))
	defer syscall.Close(fd)
	// A sandbox flow to the same server, from the same port: its own port
	// is the host's (checked), and the only NAT port is the host's too.
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 61000), ap(clientAddr, 80), syn, 1, 0))
	if ret == tcActRedirect && verify(t, out).src == ap(hostAddr, 61000) {
		t.Errorf("the sandbox's flow was masqueraded to %s, a host connection's tuple; want drop_no_nat_port", ap(hostAddr, 61000))
	}
}

// A sandbox that sends an ICMP echo *reply* to an
// outside address starts a masqueraded "flow" whose reply direction is
// keyed like an echo *request* from that address to the host. Every ping
// that address then sends to the host with that identifier is redirected
// into the sandbox: the sandbox takes over the host's echo responder for
// it (and learns who probes the host). Only echo requests may start ICMP
// flows; echo identifiers also need the host's own ping sockets in mind.
func TestEchoReplyCannotHijackHostPings(t *testing.T) {
	nb := newNATBed(t)
	reply := segment(1, ap(webAddr, 4321), ap(clientAddr, 0), false)
	reply[34] = 0 // echo reply
	binary.BigEndian.PutUint16(reply[36:], 0)
	binary.BigEndian.PutUint16(reply[36:], checksum(reply[34:], 0))
	nb.run(t, nb.dp.Endpoint.FromContainer, reply)
	// The client pings the host.
	ping := segment(1, ap(clientAddr, 4321), ap(hostAddr, 0), false)
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, ping)
	if ret != tcActUnspec {
		t.Errorf("a ping to the host: verdict %d, sent to %s; want it left to the host", ret, netip.AddrFrom4([4]byte(out[30:34])))
	}
}

// echoReply is an ICMP (proto 1) or ICMPv6 (58) echo reply from src to
// dst with identifier id.
func echoReply(proto uint8, src, dst netip.Addr, id uint16) []byte {
	pkt := segment(proto, ap(src, id), ap(dst, 0), false)
	l3, l4 := pkt[14:34], pkt[34:]
	pkt[34] = 0
	if src.Is6() {
		l3, l4 = pkt[14:54], pkt[54:]
		l4[0] = 129
	}
	binary.BigEndian.PutUint16(l4[2:], 0)
	if src.Is6() {
		binary.BigEndian.PutUint16(l4[2:], checksum(l4, pseudo6(l3, len(l4))))
	} else {
		binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
	}
	return pkt
}

// The host's own pings (a ping socket's or a raw socket's, which no
// socket lookup finds) keep their echo replies: a sandbox pinging the same
// target never leaves with an identifier the host is using, and when the
// host starts using one a sandbox's ping holds, the replies are the
// host's, as a host connection's are (TestHostConnectionOwnsItsReplies).
// The uplink's egress program sees the host's echo requests leave; the
// sandboxes' own requests, forwarded through it, are not the host's.
func TestSandboxPingsNeverTakeTheHostsEchoReplies(t *testing.T) {
	for _, c := range []struct {
		name         string
		proto        uint8
		host, client netip.Addr
		web          netip.Addr
	}{{"v4", 1, hostAddr, clientAddr, webAddr}, {"v6", 58, hostAddr6, clientAddr6, webAddr6}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed6(t)
			hostPing := func(id uint16) {
				t.Helper()
				if ret, _ := nb.runFrom(t, nb.dp.Uplink.UplinkEgress, segment(c.proto, ap(c.host, id), ap(c.client, 0), false), nb.uplink, 0); ret != tcActUnspec {
					t.Fatalf("the host's echo request with id %d on the uplink's egress: verdict %d; want it sent", id, ret)
				}
			}
			replyTo := func(id uint16) (uint32, parsed) {
				t.Helper()
				ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, echoReply(c.proto, c.client, c.host, id))
				if ret == tcActRedirect {
					return ret, verify(t, out)
				}
				return ret, parsed{}
			}

			// The host pings first with 5555; the sandbox's ping with 5555
			// leaves with another identifier.
			hostPing(5555)
			got := nb.mustVerdict(t, "the sandbox's ping with id 5555", nb.dp.Endpoint.FromContainer, segment(c.proto, ap(c.web, 5555), ap(c.client, 0), false), 0, tcActRedirect)
			if got.src == ap(c.host, 5555) {
				t.Errorf("the sandbox's ping left from %s, the host ping's identifier", got.src)
			}
			if ret, _ := replyTo(5555); ret != tcActUnspec {
				t.Errorf("the reply to the host's ping 5555: verdict %d; want it left to the host", ret)
			}

			// The sandbox pings first with 4321 and keeps it; its
			// translated requests pass the uplink's egress, forwarded from
			// its veth, and are not the host's.
			got = nb.mustVerdict(t, "the sandbox's ping with id 4321", nb.dp.Endpoint.FromContainer, segment(c.proto, ap(c.web, 4321), ap(c.client, 0), false), 0, tcActRedirect)
			if got.src != ap(c.host, 4321) {
				t.Fatalf("the sandbox's ping with a free id left from %s; want %s", got.src, ap(c.host, 4321))
			}
			if ret, _ := nb.runFrom(t, nb.dp.Uplink.UplinkEgress, segment(c.proto, ap(c.host, 4321), ap(c.client, 0), false), nb.uplink, 1); ret != tcActUnspec {
				t.Fatalf("the sandbox's translated ping on the uplink's egress: verdict %d", ret)
			}
			if ret, seen := replyTo(4321); ret != tcActRedirect || seen.dst.Addr() != c.web {
				t.Errorf("the reply to the sandbox's ping 4321: verdict %d, to %s; want it redirected to the sandbox", ret, seen.dst)
			}
			// Then the host pings with 4321: the replies are the host's.
			hostPing(4321)
			if ret, seen := replyTo(4321); ret != tcActUnspec {
				t.Errorf("the reply to the host's ping 4321: verdict %d, to %s; want it left to the host", ret, seen.dst)
			}
		})
	}
}

// Anything from a masquerading network that is not TCP,
// UDP or an ICMP echo (SCTP, GRE, ESP, ICMP timestamp or an ICMP error
// about no flow, a TCP/UDP header cut short) is passed on untouched: it
// leaves through the uplink with the sandbox's private source address
// (Docker's MASQUERADE rule covers every protocol). Masquerade the address
// (no port) or drop it.
func TestPortlessProtocolsNeverLeaveUnmasqueraded(t *testing.T) {
	sctp := fixIPCsum(func() []byte { p := segment(17, ap(webAddr, 5000), ap(clientAddr, 5000), false); p[23] = 132; return p }())
	ts := segment(1, ap(webAddr, 1), ap(clientAddr, 0), false)
	ts[34] = 13 // timestamp request
	binary.BigEndian.PutUint16(ts[36:], 0)
	binary.BigEndian.PutUint16(ts[36:], checksum(ts[34:], 0))
	short := segment(6, ap(webAddr, 5000), ap(clientAddr, 80), false)[:34+12] // TCP header cut at 12 bytes
	binary.BigEndian.PutUint16(short[16:], 20+12)
	fixIPCsum(short)
	for _, c := range []struct {
		name string
		pkt  []byte
	}{{"SCTP", sctp}, {"ICMP timestamp", ts}, {"truncated TCP", short}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed(t)
			ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, c.pkt)
			if src := netip.AddrFrom4([4]byte(out[26:30])); ret != tcActShot && src == webAddr {
				t.Errorf("verdict %d, leaving from the sandbox's own address %s; want it masqueraded or dropped", ret, src)
			}
		})
	}
}

//	deliver answers any
//
// packet too big for the uplink with "fragmentation needed", DF or not: a
// router would fragment a datagram without DF (RFC 1812 §5.2.6), but a
// translated packet's source is a host address, which the stack refuses
// to forward from a veth, and TC has no way to fragment. The datagram is
// lost and its sender learns the path MTU, so the next ones fit.
func TestFragNeededWithoutDF(t *testing.T) {
	nb := newNATBed(t)
	if out, err := exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "link", "set", "up0", "mtu", "1400").CombinedOutput(); err != nil {
		t.Fatalf("set mtu: %v: %s", err, out)
	}
	pkt := bigDatagram(ap(webAddr, 53), ap(clientAddr, 40000), 1472) // 1500 bytes, DF clear
	if pkt[20]&0x40 != 0 {
		t.Fatal("DF set")
	}
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, pkt)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want the error sent back", ret)
	}
	if got := verifyICMP(t, out); got.typ != 3 || got.code != 4 || got.mtu != 1400 || got.dst != webAddr {
		t.Errorf("got %+v; want frag needed with mtu 1400 to the sandbox", got)
	}
}

// from_container lets conntrack match before the
// cross-network and icc checks (the design says isolation comes first),
// and to_container tracks a flow from any source its gateway mode lets
// in, even from an address of another local network, which can only be
// forged (that network's own packets are dropped at its veth). An outside
// host forges src=172.18.0.2 (a sandbox of network 2) to a sandbox of a
// "nat-unprotected" network 1; the reply entry then carries network 1's
// sandbox straight into network 2 with redirect_peer, past the isolation
// that drops the same packet without the entry. Check isolation before
// translate_known, and drop in to_container sources of other networks.
func TestNoCrossNetworkThroughForgedFlow(t *testing.T) {
	nb := newNATBed(t)
	n := bridgeNet
	n.Direct = maps.DirectAll
	must(t, nb.maps.PutNetwork(n))
	nb.addNetwork(t, secondNet)
	victim := nb.addEndpointOn(t, netip.MustParseAddr("172.18.0.2"), secondNet.Index)
	web, them := ap(webAddr, 7777), ap(victim.addr, 5000)
	// Without state, network 1 cannot reach network 2.
	nb.mustVerdict(t, "to another network", nb.dp.Endpoint.FromContainer, segment(17, web, them, false), 0, tcActShot)
	// A forged datagram routed in from outside.
	if ret, _ := nb.runFrom(t, nb.dp.Endpoint.ToContainer, segment(17, them, web, false), endpointIfindex, nb.uplink); ret != tcActUnspec {
		t.Logf("forged datagram: verdict %d", ret)
	}
	ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, segment(17, web, them, false))
	if ret != tcActShot {
		t.Errorf("network 1 -> network 2 after a forged datagram: verdict %d; want TC_ACT_SHOT (drop_cross_network)", ret)
	}
}

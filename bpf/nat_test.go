package bpf_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

const tcActRedirect = 7

var (
	clientMAC  = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	hostAddr   = netip.MustParseAddr("10.99.0.1")
	clientAddr = netip.MustParseAddr("10.99.0.2")
	webAddr    = netip.MustParseAddr("172.17.0.2")
	bridgeNet  = maps.Network{Index: 1, Subnet: netip.MustParsePrefix("172.17.0.0/16"), Gateway: netip.MustParseAddr("172.17.0.1"),
		GatewayMAC: net.HardwareAddr{2, 0x42, 172, 17, 0, 1}, Masquerade: true}
)

// natbed runs programs inside a namespace of its own holding an uplink
// (10.99.0.1/24, client 10.99.0.2 in its neighbour table), so FIB lookups
// give the same answer on every machine.
type natbed struct {
	ns     string
	dp     *loader.Datapath
	maps   *maps.Maps
	uplink int
}

func newNATBed(t testing.TB) *natbed {
	t.Helper()
	return newNATBedWith(t, loader.Options{})
}

// newNATBedWith loads the programs with opts (unpinned).
func newNATBedWith(t testing.TB, opts loader.Options) *natbed {
	t.Helper()
	testenv.RequirePrivileges(t)
	nb := &natbed{ns: fmt.Sprintf("/run/netns/ebpfnet-bpftest-%d", randUint())}
	if err := namespace.Create(nb.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { namespace.Remove(nb.ns) })
	name := nb.ns[len("/run/netns/"):]
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"addr", "add", "10.99.0.1/24", "dev", "up0"},
		{"link", "set", "up0", "up"},
		{"link", "set", "up1", "up"},
		{"neigh", "replace", "10.99.0.2", "lladdr", clientMAC.String(), "dev", "up0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	namespace.Do(nb.ns, func() error {
		l, err := net.InterfaceByName("up0")
		if err == nil {
			nb.uplink = l.Index
		}
		return err
	})
	namespace.Do(nb.ns, func() error {
		if out, err := exec.Command("sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v %s", err, out)
		}
		return nil
	})
	dp := privateDatapath(t, opts)
	nb.dp, nb.maps = dp, maps.New(&dp.Maps)
	must(t, nb.maps.PutNetwork(bridgeNet))
	// The endpoint's host side is loopback (ifindex 1), where BPF_PROG_RUN
	// runs programs when the context names no interface.
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr}))
	must(t, nb.maps.PutEndpoint(maps.Endpoint{Addr: webAddr, Ifindex: 1, Network: 1, MAC: net.HardwareAddr{2, 0x42, 172, 17, 0, 2}}))
	must(t, nb.maps.SyncHost([]netip.Addr{hostAddr, bridgeNet.Gateway}, map[uint32]maps.Uplink{uint32(nb.uplink): {Addr: hostAddr}}, nil))
	return nb
}

// endpoint is a sandbox of the bed: its address and the ifindex of its
// host side.
type endpoint struct {
	addr    netip.Addr
	ifindex int
}

// addEndpoint registers another endpoint on the bed's network, with a veth
// of its own as its host side (BPF_PROG_RUN runs programs as if on it).
func (nb *natbed) addEndpoint(t *testing.T, addr netip.Addr) endpoint {
	t.Helper()
	return nb.addEndpointOn(t, addr, bridgeNet.Index)
}

// addEndpointOn is addEndpoint on network index.
func (nb *natbed) addEndpointOn(t *testing.T, addr netip.Addr, network uint32) endpoint {
	t.Helper()
	name := fmt.Sprintf("ep%d", addr.As4()[3])
	if out, err := exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Fatalf("add veth %s: %v: %s", name, err, out)
	}
	exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "link", "set", name, "up").Run()
	var ifindex int
	must(t, namespace.Do(nb.ns, func() error {
		l, err := net.InterfaceByName(name)
		if err == nil {
			ifindex = l.Index
		}
		return err
	}))
	b := addr.As4()
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: uint32(ifindex), Network: network, Addr: addr}))
	must(t, nb.maps.PutEndpoint(maps.Endpoint{Addr: addr, Ifindex: uint32(ifindex), Network: network, MAC: net.HardwareAddr{2, 0x42, b[0], b[1], b[2], b[3]}}))
	return endpoint{addr, ifindex}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randUint() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// run runs prog on pkt inside the bed's namespace, as if on loopback (the
// first endpoint's host side).
func (nb *natbed) run(t testing.TB, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	return nb.runOn(t, prog, pkt, 0)
}

// runOn runs prog on pkt as if it came in on ifindex.
func (nb *natbed) runOn(t testing.TB, prog *ebpf.Program, pkt []byte, ifindex int) (uint32, []byte) {
	t.Helper()
	// Room for a packet that grows (into an ICMP error quoting it).
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+128), Context: skbContext{Ifindex: uint32(ifindex)}}
	var ret uint32
	err := namespace.Do(nb.ns, func() (err error) {
		ret, err = prog.Run(opts)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ret, opts.DataOut
}

func (nb *natbed) counter(t *testing.T, program, verdict string) uint64 {
	t.Helper()
	cs, err := nb.maps.Counters()
	must(t, err)
	for _, c := range cs {
		if c.Program == program && c.Verdict == verdict {
			return c.Packets
		}
	}
	t.Fatalf("no counter %s/%s", program, verdict)
	return 0
}

// segment builds an Ethernet+IP packet with valid checksums around a
// TCP (SYN), UDP or ICMP echo header (proto 1, or 58 for ICMPv6); port is
// the echo identifier. IPv6 addresses make an IPv6 packet.
func segment(proto uint8, src, dst netip.AddrPort, udpZeroCsum bool) []byte {
	var l4 []byte
	switch proto {
	case 6:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 12345)
		l4[12], l4[13] = 5<<4, 0x02 // data offset 5, SYN
		binary.BigEndian.PutUint16(l4[14:], 64240)
	case 17:
		l4 = make([]byte, 12)
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], "ping")
	case 1, 58:
		l4 = make([]byte, 12)
		l4[0] = 8 // echo request
		if proto == 58 {
			l4[0] = 128
		}
		binary.BigEndian.PutUint16(l4[4:], src.Port())
		binary.BigEndian.PutUint16(l4[6:], 1)
		copy(l4[8:], "ping")
	}
	if src.Addr().Is6() {
		return ipv6Frame(proto, src.Addr(), dst.Addr(), l4, proto == 17 && udpZeroCsum)
	}
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	switch {
	case proto == 1:
		binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
	case proto == 17 && udpZeroCsum:
	default:
		binary.BigEndian.PutUint16(l4[csumOffset(proto):], checksum(l4, pseudo(ip, len(l4))))
	}
	eth := []byte{2, 0x42, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
	return append(append(eth, ip...), l4...)
}

func csumOffset(proto uint8) int {
	switch proto {
	case 6:
		return 16
	case 58:
		return 2
	}
	return 6
}

// ipv6Frame wraps an L4 header (its checksum field zero) in IPv6 and
// Ethernet, with the L4 checksum filled in unless noCsum.
func ipv6Frame(proto uint8, src, dst netip.Addr, l4 []byte, noCsum bool) []byte {
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, proto, 64
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	if !noCsum {
		binary.BigEndian.PutUint16(l4[csumOffset(proto):], checksum(l4, pseudo6(ip, len(l4))))
	}
	eth := []byte{2, 0x42, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd}
	return append(append(eth, ip...), l4...)
}

// pseudo6 sums the IPv6 pseudo-header of ip's L4 header of l4len bytes.
func pseudo6(ip []byte, l4len int) uint32 {
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	return sum + uint32(ip[6]) + uint32(l4len)
}

func pseudo(ip []byte, l4len int) uint32 {
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	return sum + uint32(ip[9]) + uint32(l4len)
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// parsed is what a test checks of a rewritten packet.
type parsed struct {
	ethDst, ethSrc net.HardwareAddr
	src, dst       netip.AddrPort
}

// verify checks every checksum of pkt and returns its addresses.
func verify(t *testing.T, pkt []byte) parsed {
	t.Helper()
	if binary.BigEndian.Uint16(pkt[12:]) == 0x86dd {
		return verify6(t, pkt)
	}
	ip, l4 := pkt[14:34], pkt[34:]
	if checksum(ip, 0) != 0 {
		t.Errorf("bad IPv4 header checksum in %x", ip)
	}
	proto := ip[9]
	var sport, dport uint16
	switch proto {
	case 1:
		if checksum(l4, 0) != 0 {
			t.Errorf("bad ICMP checksum in %x", l4)
		}
		sport = binary.BigEndian.Uint16(l4[4:])
	default:
		if !(proto == 17 && binary.BigEndian.Uint16(l4[6:]) == 0) && checksum(l4, pseudo(ip, len(l4))) != 0 {
			t.Errorf("bad L4 checksum (protocol %d) in %x", proto, l4)
		}
		sport, dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	}
	return parsed{
		ethDst: net.HardwareAddr(pkt[0:6]), ethSrc: net.HardwareAddr(pkt[6:12]),
		src: netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), sport),
		dst: netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), dport),
	}
}

func ap(addr netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(addr, port) }

func flowOf(proto uint8, src, dst netip.AddrPort) bpf.DatapathFlow {
	var f bpf.DatapathFlow
	f.Saddr, f.Daddr = bpf.DatapathAddr{B: src.Addr().As16()}, bpf.DatapathAddr{B: dst.Addr().As16()}
	f.Sport, f.Dport = htons(src.Port()), htons(dst.Port())
	f.Proto = proto
	return f
}

func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// verify6 is verify for an IPv6 packet without extension headers.
func verify6(t *testing.T, pkt []byte) parsed {
	t.Helper()
	ip := pkt[14:54]
	l4 := pkt[54 : 54+int(binary.BigEndian.Uint16(ip[4:]))]
	proto := ip[6]
	if checksum(l4, pseudo6(ip, len(l4))) != 0 {
		t.Errorf("bad L4 checksum (next header %d) in %x", proto, l4)
	}
	var sport, dport uint16
	if proto == 58 {
		sport = binary.BigEndian.Uint16(l4[4:])
	} else {
		sport, dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	}
	return parsed{
		ethDst: net.HardwareAddr(pkt[0:6]), ethSrc: net.HardwareAddr(pkt[6:12]),
		src: netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[8:24])), sport),
		dst: netip.AddrPortFrom(netip.AddrFrom16([16]byte(ip[24:40])), dport),
	}
}

// ct finds a flow's entry in either conntrack table (assured: in ct).
func (nb *natbed) ct(t *testing.T, key bpf.DatapathFlow) (e bpf.DatapathCtEntry, assured, ok bool) {
	t.Helper()
	if nb.dp.Maps.Ct.Lookup(key, &e) == nil {
		return e, true, true
	}
	return e, false, nb.dp.Maps.CtNew.Lookup(key, &e) == nil
}

func TestUplinkPublishedPort(t *testing.T) {
	for _, c := range []struct {
		name    string
		proto   uint8
		zeroSum bool
	}{{"tcp", 6, false}, {"udp", 17, false}, {"udp without checksum", 17, true}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed(t)
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: c.proto, Addr: webAddr, Port: 80}))
			in := segment(c.proto, ap(clientAddr, 40000), ap(hostAddr, 8080), c.zeroSum)
			ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, in)
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", ret)
			}
			got := verify(t, out)
			if got.src != ap(clientAddr, 40000) || got.dst != ap(webAddr, 80) {
				t.Errorf("rewritten to %s -> %s, want %s:40000 -> %s:80 (client address kept)", got.src, got.dst, clientAddr, webAddr)
			}
			if c.zeroSum && binary.BigEndian.Uint16(out[34+6:]) != 0 {
				t.Error("a UDP datagram without checksum got one")
			}
			if !bytes.Equal(got.ethDst, net.HardwareAddr{2, 0x42, 172, 17, 0, 2}) || !bytes.Equal(got.ethSrc, bridgeNet.GatewayMAC) {
				t.Errorf("frame %s -> %s, want from the bridge to the endpoint", got.ethSrc, got.ethDst)
			}
			// Both directions are remembered.
			fwd, _, ok := nb.ct(t, flowOf(c.proto, ap(clientAddr, 40000), ap(hostAddr, 8080)))
			if !ok || fwd.Nat != flowOf(c.proto, ap(clientAddr, 40000), ap(webAddr, 80)) ||
				fwd.Flags != uint8(bpf.DatapathCtFlagCT_PUBLISHED_IN) || fwd.Ifindex != 0 {
				t.Errorf("forward conntrack entry: %+v, %v", fwd, ok)
			}
			rev, _, ok := nb.ct(t, flowOf(c.proto, ap(webAddr, 80), ap(clientAddr, 40000)))
			if !ok || rev.Nat != flowOf(c.proto, ap(hostAddr, 8080), ap(clientAddr, 40000)) ||
				rev.Flags != uint8(bpf.DatapathCtFlagCT_PUBLISHED_OUT|bpf.DatapathCtFlagCT_REPLY) || rev.Ifindex != endpointIfindex {
				t.Errorf("reply conntrack entry: %+v, %v", rev, ok)
			}
			if nb.counter(t, "uplink", "dnat") != 1 {
				t.Error("uplink/dnat did not count")
			}

			// The endpoint's reply is translated back and routed to the client.
			reply := segment(c.proto, ap(webAddr, 80), ap(clientAddr, 40000), c.zeroSum)
			ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, reply)
			if ret != tcActRedirect {
				t.Fatalf("reply verdict %d, want TC_ACT_REDIRECT", ret)
			}
			got = verify(t, out)
			if got.src != ap(hostAddr, 8080) || got.dst != ap(clientAddr, 40000) || !bytes.Equal(got.ethDst, clientMAC) {
				t.Errorf("reply rewritten to %s -> %s (to %s), want %s:8080 -> %s:40000 to the client's MAC", got.src, got.dst, got.ethDst, hostAddr, clientAddr)
			}
			if nb.counter(t, "from_container", "tracked") != 1 {
				t.Error("from_container/tracked did not count")
			}
		})
	}
}

// Removing a publication ends its flows, in either direction, and a port
// published anew leads established flows to where it leads now. Nothing
// but the publications map changes: the datapath finds out by itself.
func TestFlowsEndWithTheirPublication(t *testing.T) {
	pub := maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}
	in := func() []byte { return segment(6, ap(clientAddr, 40000), ap(hostAddr, 8080), false) }
	// tracked reports whether conntrack holds the publication's flow, in
	// either direction. (A stray reply of the endpoint is a new flow of
	// its own, masqueraded: not the publication's.)
	tracked := func(nb *natbed) (fwd, rev bool) {
		_, _, fwd = nb.ct(t, flowOf(6, ap(clientAddr, 40000), ap(hostAddr, 8080)))
		v, _, rev := nb.ct(t, flowOf(6, ap(webAddr, 80), ap(clientAddr, 40000)))
		return fwd, rev && v.Flags&uint8(bpf.DatapathCtFlagCT_PUBLISHED_OUT) != 0
	}
	for _, first := range []string{"client", "endpoint"} {
		t.Run("unpublished, next packet from the "+first, func(t *testing.T) {
			nb := newNATBed(t)
			must(t, nb.maps.PutPublication(pub))
			if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, in()); ret != tcActRedirect {
				t.Fatalf("published: verdict %d, want TC_ACT_REDIRECT", ret)
			}
			must(t, nb.maps.DeletePublications(pub))
			if first == "endpoint" {
				_, out := nb.run(t, nb.dp.Endpoint.FromContainer, segment(6, ap(webAddr, 80), ap(clientAddr, 40000), false))
				if got := verify(t, out); got.src == ap(hostAddr, 8080) {
					t.Error("the endpoint's reply was still translated to the publication")
				}
			} else {
				packet := in()
				if ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, packet); ret != tcActUnspec || !bytes.Equal(packet, out) {
					t.Errorf("unpublished: verdict %d; want the packet passed on untouched", ret)
				}
			}
			if fwd, rev := tracked(nb); fwd || rev {
				t.Errorf("conntrack still holds the flow: forward %v, reply %v", fwd, rev)
			}
		})
	}
	t.Run("published anew elsewhere", func(t *testing.T) {
		nb := newNATBed(t)
		must(t, nb.maps.PutPublication(pub))
		nb.run(t, nb.dp.Uplink.UplinkIngress, in())
		moved := pub
		moved.Port = 81
		must(t, nb.maps.PutPublication(moved))
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, in())
		if got := verify(t, out); ret != tcActRedirect || got.dst != ap(webAddr, 81) {
			t.Errorf("verdict %d, to %s; want redirected to %s:81", ret, got.dst, webAddr)
		}
		if _, rev := tracked(nb); rev {
			t.Error("the old reply direction is still tracked")
		}
	})
}

func TestUplinkLeavesLoopbackAndUnpublishedAlone(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, Proto: 6, Addr: webAddr, Port: 80}))
	for _, dst := range []netip.AddrPort{ap(netip.MustParseAddr("127.0.0.1"), 8081), ap(hostAddr, 8081), ap(hostAddr, 9999)} {
		in := segment(6, ap(clientAddr, 40000), dst, false)
		ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, in)
		if ret != tcActUnspec || !bytes.Equal(in, out) {
			t.Errorf("to %s: verdict %d, packet changed %v; want it passed on untouched", dst, ret, !bytes.Equal(in, out))
		}
	}
	if n := nb.counter(t, "uplink", "pass"); n != 3 {
		t.Errorf("uplink/pass = %d, want 3", n)
	}
}

func TestMasqueradeAndItsReply(t *testing.T) {
	for _, c := range []struct {
		name  string
		proto uint8
	}{{"tcp", 6}, {"udp", 17}, {"icmp echo", 1}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed(t)
			out1 := ap(webAddr, 33000)
			in := segment(c.proto, out1, ap(clientAddr, 7777), false)
			if c.proto == 1 {
				in = segment(1, out1, ap(clientAddr, 0), false)
			}
			ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, in)
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", ret)
			}
			got := verify(t, out)
			if got.src != ap(hostAddr, 33000) || !bytes.Equal(got.ethDst, clientMAC) {
				t.Fatalf("masqueraded to %s (to %s), want %s:33000 (its own port kept), to the client's MAC", got.src, got.ethDst, hostAddr)
			}
			if nb.counter(t, "from_container", "snat") != 1 {
				t.Error("from_container/snat did not count")
			}
			// The reply comes in on the uplink and goes back to the sandbox.
			var reply []byte
			if c.proto == 1 {
				reply = segment(1, ap(clientAddr, got.src.Port()), ap(hostAddr, 0), false)
				reply[34] = 0 // echo reply
				binary.BigEndian.PutUint16(reply[36:], 0)
				binary.BigEndian.PutUint16(reply[36:], checksum(reply[34:], 0))
			} else {
				reply = segment(c.proto, ap(clientAddr, 7777), got.src, false)
			}
			ret, back := nb.run(t, nb.dp.Uplink.UplinkIngress, reply)
			if ret != tcActRedirect {
				t.Fatalf("reply verdict %d, want TC_ACT_REDIRECT", ret)
			}
			b := verify(t, back)
			wantDst := out1
			if c.proto == 1 {
				// For an echo reply the identifier sits where verify reads the source port.
				b.dst, b.src = ap(b.dst.Addr(), b.src.Port()), ap(b.src.Addr(), 0)
			}
			if b.dst != wantDst {
				t.Errorf("reply translated to %s, want %s", b.dst, wantDst)
			}
		})
	}
}

// The gateway mode decides what outside clients reach by routing straight
// to a sandbox's address: nothing ("nat"), the published sandbox ports
// ("routed") or everything ("nat-unprotected"). What it lets in is tracked
// where it enters the sandbox, so the reply leaves as it is instead of
// being masqueraded.
func TestGatewayModes(t *testing.T) {
	for _, c := range []struct {
		direct          maps.DirectAccess
		published, open bool // 7777 published; reached
	}{
		{maps.DirectNone, true, false},
		{maps.DirectPublished, false, false},
		{maps.DirectPublished, true, true},
		{maps.DirectAll, false, true},
	} {
		t.Run(fmt.Sprintf("direct=%d,published=%v", c.direct, c.published), func(t *testing.T) {
			nb := newNATBed(t)
			n := bridgeNet
			n.Direct = c.direct
			must(t, nb.maps.PutNetwork(n))
			if c.published {
				must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 7777}))
			}
			in := segment(6, ap(clientAddr, 40000), ap(webAddr, 7777), false)
			ret, out := nb.runFrom(t, nb.dp.Endpoint.ToContainer, in, endpointIfindex, nb.uplink) // routed in from the uplink
			if !c.open {
				if ret != tcActShot || nb.counter(t, "to_container", "drop_unpublished") != 1 {
					t.Fatalf("verdict %d; want TC_ACT_SHOT counted as drop_unpublished", ret)
				}
				return
			}
			if ret != tcActUnspec || !bytes.Equal(in, out) {
				t.Fatalf("to_container: verdict %d; want the packet passed on untouched", ret)
			}
			reply := flowOf(6, ap(webAddr, 7777), ap(clientAddr, 40000))
			if v, _, ok := nb.ct(t, reply); !ok || v.Nat != reply || v.Ifindex != endpointIfindex {
				t.Fatalf("reply direction tracked as %+v, %v; want itself, from the endpoint", v, ok)
			}
			ret, out = nb.run(t, nb.dp.Endpoint.FromContainer, segment(6, ap(webAddr, 7777), ap(clientAddr, 40000), false))
			got := verify(t, out)
			if ret != tcActRedirect || got.src != ap(webAddr, 7777) || got.dst != ap(clientAddr, 40000) {
				t.Fatalf("reply: verdict %d, %s -> %s; want it routed unchanged", ret, got.src, got.dst)
			}
			if nb.counter(t, "from_container", "snat") != 0 {
				t.Error("the reply was masqueraded")
			}
		})
	}
}

// A host process's own connection comes before a publication of its port
// (its peer may answer from the published port number); a listener, or an
// unconnected UDP socket, never does: the port is the publication's.
func TestHostSocketsAndPublications(t *testing.T) {
	nb := newNATBed(t)
	for _, proto := range []uint8{6, 17} {
		must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: proto, Addr: webAddr, Port: 80}))
	}
	var l net.Listener
	var u net.PacketConn
	must(t, namespace.Do(nb.ns, func() (err error) {
		if l, err = net.Listen("tcp4", "10.99.0.1:8080"); err != nil {
			return err
		}
		u, err = net.ListenPacket("udp4", "0.0.0.0:8080")
		return err
	}))
	defer l.Close()
	defer u.Close()
	for _, proto := range []uint8{6, 17} {
		if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(proto, ap(clientAddr, 40000), ap(hostAddr, 8080), false)); ret != tcActRedirect {
			t.Errorf("protocol %d: verdict %d; want the flow published past the host's listener", proto, ret)
		}
	}

	// A host connection from the published port to 10.99.0.1:9000.
	var peer net.Listener
	var conn net.Conn
	must(t, namespace.Do(nb.ns, func() (err error) {
		if peer, err = net.Listen("tcp4", "10.99.0.1:9000"); err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 8081}}
		conn, err = d.Dial("tcp4", "10.99.0.1:9000")
		return err
	}))
	defer peer.Close()
	defer conn.Close()
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8081, Proto: 6, Addr: webAddr, Port: 80}))
	in := segment(6, ap(hostAddr, 9000), ap(hostAddr, 8081), false)
	in[47] = 0x10 // an ACK of the established connection
	binary.BigEndian.PutUint16(in[50:], 0)
	binary.BigEndian.PutUint16(in[50:], checksum(in[34:], pseudo(in[14:34], len(in)-34)))
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, in)
	if ret != tcActUnspec || !bytes.Equal(in, out) {
		t.Fatalf("verdict %d; want the packet left to the host's own connection", ret)
	}
	if _, _, ok := nb.ct(t, flowOf(6, ap(hostAddr, 9000), ap(hostAddr, 8081))); ok {
		t.Fatal("a flow owned by a host connection was tracked as published")
	}
}

func TestDropNoNATPort(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 61000})
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	third := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.4"))
	// Three sandboxes, one source port, one destination: the first keeps
	// its port, the second takes the only NAT port, the third finds none.
	for i, ep := range []endpoint{{webAddr, endpointIfindex}, other, third} {
		ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, segment(17, ap(ep.addr, 5000), ap(clientAddr, 53), false), ep.ifindex)
		switch {
		case i == 0 && (ret != tcActRedirect || verify(t, out).src != ap(hostAddr, 5000)):
			t.Fatalf("first flow: verdict %d, from %s; want it masqueraded keeping its port", ret, verify(t, out).src)
		case i == 1 && (ret != tcActRedirect || verify(t, out).src != ap(hostAddr, 61000)):
			t.Fatalf("second flow: verdict %d, from %s; want the NAT port", ret, verify(t, out).src)
		case i == 2 && ret != tcActShot:
			t.Fatalf("third flow with every port taken: verdict %d, want TC_ACT_SHOT", ret)
		}
	}
	if nb.counter(t, "from_container", "drop_no_nat_port") != 1 || nb.counter(t, "from_container", "nat_port_collision") == 0 {
		t.Error("exhaustion or collisions were not counted")
	}
}

func TestDropNoRoute(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	// A client the bed has no route back to.
	far := netip.MustParseAddr("192.0.2.9")
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(6, ap(far, 40000), ap(hostAddr, 8080), false)); ret != tcActRedirect {
		t.Fatalf("inbound: verdict %d", ret)
	}
	ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, segment(6, ap(webAddr, 80), ap(far, 40000), false))
	if ret != tcActShot || nb.counter(t, "from_container", "drop_no_route") != 1 {
		t.Fatalf("reply with no route: verdict %d; want TC_ACT_SHOT counted as drop_no_route", ret)
	}
}

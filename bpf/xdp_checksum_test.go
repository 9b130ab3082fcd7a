package bpf_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/ebpfnet/ebpfnet/maps"
)

// ipTrimmed is a frame cut to its IP packet's length (Ethernet padding
// off), for verify, which sums an IPv4 packet's L4 bytes to the frame's end.
func ipTrimmed(pkt []byte) []byte {
	if binary.BigEndian.Uint16(pkt[12:]) == 0x86dd {
		return pkt[:14+40+int(binary.BigEndian.Uint16(pkt[18:]))]
	}
	return pkt[:14+int(binary.BigEndian.Uint16(pkt[16:]))]
}

// l4Sum is the folded ones' complement sum of a UDP frame's pseudo-header
// and L4 bytes, checksum field left out, as if its addresses were src and
// dst and its destination port dport.
func l4Sum(pkt []byte, src, dst netip.Addr, dport uint16) uint16 {
	pkt = bytes.Clone(ipTrimmed(pkt))
	l3 := 20
	if src.Is6() {
		l3 = 40
	}
	ip, l4 := pkt[14:14+l3], pkt[14+l3:]
	if src.Is6() {
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	} else {
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
	}
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[6:], 0)
	var sum uint32
	if src.Is6() {
		sum = pseudo6(ip, len(l4))
	} else {
		sum = pseudo(ip, len(l4))
	}
	return ^checksum(l4, sum)
}

// setUDPWord writes w at the start of a UDP datagram's payload and
// recomputes its checksum as a sender does (0xffff for a computed 0).
func setUDPWord(pkt []byte, w uint16) {
	pkt = ipTrimmed(pkt)
	l3 := 20
	if binary.BigEndian.Uint16(pkt[12:]) == 0x86dd {
		l3 = 40
	}
	ip, l4 := pkt[14:14+l3], pkt[14+l3:]
	binary.BigEndian.PutUint16(l4[8:], w)
	binary.BigEndian.PutUint16(l4[6:], 0)
	var sum uint32
	if l3 == 40 {
		sum = pseudo6(ip, len(l4))
	} else {
		sum = pseudo(ip, len(l4))
	}
	c := checksum(l4, sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[6:], c)
}

// Every checksum XDP's incremental updates (csum_replace) write is right:
// random addresses and ports of both families, TCP and UDP, published
// flows (destination address and port rewritten, TTL taken down) and
// masqueraded replies; L4 lengths odd and even, at and around the 512-byte
// chunks l4_csum_complete sums by, and frames padded to Ethernet's
// minimum; UDP datagrams whose checksum comes out 0 after the rewrite
// (written 0xffff, as BPF_F_MARK_MANGLED_0 does), whose checksum was 0
// before it (sent 0xffff), and IPv4 ones without a checksum (kept 0).
func TestXDPChecksumsRandom(t *testing.T) {
	nb := newNATBed6(t)
	nb.xdpTargets(t, webAddr6)
	name := nb.ns[len("/run/netns/"):]
	for _, args := range [][]string{
		{"route", "add", "default", "via", "10.99.0.2"},
		{"-6", "route", "add", "default", "via", "2001:db8:99::2"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	seed := uint64(randUint())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	randV4 := func(prefix []byte) netip.Addr {
		for {
			var b [4]byte
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			copy(b[:], prefix)
			if b[0] == 0 || b[0] == 127 || b[0] >= 224 || (prefix == nil && b[0] == 172 && b[1] == 17) || b[3] == 0 || b[3] == 255 {
				continue
			}
			return netip.AddrFrom4(b)
		}
	}
	randV6 := func(prefix []byte) netip.Addr {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		copy(b[:], prefix)
		return netip.AddrFrom16(b)
	}
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			return randV6([]byte{0x20, 0x01, 0x0d, 0xb8, 0x42})
		}
		return randV4(nil)
	}
	hosts := map[bool][]netip.Addr{false: {hostAddr}, true: {hostAddr6}}
	eps := map[bool][]netip.Addr{false: {webAddr}, true: {webAddr6}}
	all := []netip.Addr{hostAddr, bridgeNet.Gateway, hostAddr6, gateway6}
	for range 12 {
		v4, v6 := randAddr(false), randV6([]byte{0x20, 0x01, 0x0d, 0xb8, 0x99})
		hosts[false], hosts[true] = append(hosts[false], v4), append(hosts[true], v6)
		all = append(all, v4, v6)
		e4, e6 := randV4([]byte{172, 17}), randV6(subnet6.Addr().AsSlice()[:8])
		for _, e := range []netip.Addr{e4, e6} {
			must(t, nb.maps.PutEndpoint(maps.Endpoint{Addr: e, Ifindex: 1, Network: 1, MAC: net.HardwareAddr{2, 0x42, 172, 17, 0, 2}}))
		}
		eps[false], eps[true] = append(eps[false], e4), append(eps[true], e6)
	}
	must(t, nb.maps.SyncHost(all, map[uint32]maps.Uplink{uint32(nb.uplink): {Addr: hostAddr, Addr6: hostAddr6}}, nil))

	sizes := []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 17, 484, 485, 487, 488, 489, 491, 492, 493, 495, 500, 503, 504, 505,
		511, 512, 513, 996, 997, 1003, 1004, 1005, 1016, 1017, 1400, 1431, 1432, 1433, 1452, 1515, 1516, 1517, 1528, 2040, 2041, 3000}
	usedPort := map[[2]uint16]bool{}
	pick := func(a []netip.Addr) netip.Addr { return a[rng.IntN(len(a))] }
	port := func() uint16 { return uint16(1024 + rng.UintN(60000-1024)) }
	const (
		plain = iota
		zeroAfter
		zeroBefore
		noChecksum
		kinds
	)
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{6, 17} {
			for i := range 3 * len(sizes) {
				kind := plain
				if proto == 17 {
					kind = i % kinds
				}
				if kind == noChecksum && v6 {
					kind = plain
				}
				size := sizes[i%len(sizes)]
				if kind == zeroAfter || kind == zeroBefore {
					size = max(size, 2)
				}
				client, host, ep := ap(randAddr(v6), port()), pick(hosts[v6]), pick(eps[v6])
				hport := port()
				for usedPort[[2]uint16{uint16(proto), hport}] {
					hport = port()
				}
				usedPort[[2]uint16{uint16(proto), hport}] = true
				target := ap(ep, port())
				all := netip.IPv4Unspecified()
				if v6 {
					all = netip.IPv6Unspecified()
				}
				must(t, nb.maps.PutPublication(maps.Publication{HostAddr: all, HostPort: hport, Proto: proto, Addr: target.Addr(), Port: target.Port()}))
				in := withPayload(segment(proto, client, ap(host, hport), false), size)
				l4 := 34
				if v6 {
					l4 = 54
				}
				switch kind {
				case zeroAfter: // the rewritten datagram sums to 0xffff: its checksum computes to 0
					setUDPWord(in, 0)
					setUDPWord(in, 0xffff-l4Sum(in, client.Addr(), target.Addr(), target.Port()))
				case zeroBefore: // the datagram as sent sums to 0xffff: sent as 0xffff
					setUDPWord(in, 0)
					setUDPWord(in, 0xffff-l4Sum(in, client.Addr(), host, hport))
				case noChecksum:
					binary.BigEndian.PutUint16(in[l4+6:], 0)
				}
				sent := binary.BigEndian.Uint16(in[l4+6:])
				if proto == 6 {
					sent = binary.BigEndian.Uint16(in[l4+16:])
				}
				if len(in) < 60 {
					in = append(in, bytes.Repeat([]byte{0xa5}, 60-len(in))...)
				}
				ret, out := nb.runXDP(t, in)
				if ret != xdpRedirect {
					t.Errorf("%s -> %s (%d, %d bytes, kind %d): verdict %d, want XDP_REDIRECT", client, ap(host, hport), proto, size, kind, ret)
					continue
				}
				out = ipTrimmed(out)
				got := verify(t, out)
				if got.src != client || got.dst != target {
					t.Errorf("%s -> %s: rewritten to %s -> %s, want -> %s", client, ap(host, hport), got.src, got.dst, target)
				}
				if proto == 17 {
					csum := binary.BigEndian.Uint16(out[l4+6:])
					switch {
					case kind == noChecksum && csum != 0:
						t.Errorf("%s -> %s: a datagram without a checksum got %#04x", client, target, csum)
					case kind != noChecksum && csum == 0:
						t.Errorf("%s -> %s (%d bytes, kind %d, sent %#04x): checksum written 0, which says none; want 0xffff", client, target, size, kind, sent)
					case kind == zeroAfter && csum != 0xffff:
						t.Errorf("%s -> %s: checksum %#04x; the test meant a computed 0", client, target, csum)
					}
				}
			}
		}
	}

	// Masqueraded flows' replies, through XDP.
	webs := map[bool]netip.Addr{false: webAddr, true: webAddr6}
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{6, 17} {
			for i := range len(sizes) {
				web, server := ap(webs[v6], port()), ap(randAddr(v6), uint16(1+rng.UintN(65535)))
				ret, outPkt := nb.run(t, nb.dp.Endpoint.FromContainer, segment(proto, web, server, false))
				if ret != tcActRedirect {
					t.Fatalf("masquerade %s -> %s: verdict %d", web, server, ret)
				}
				nat := verify(t, ipTrimmed(outPkt)).src
				reply := segment(proto, server, nat, false)
				if proto == 6 {
					reply = tcpSegment(server, nat, syn|ack, rng.Uint32(), 101)
				}
				reply = withPayload(reply, sizes[i])
				if len(reply) < 60 {
					reply = append(reply, make([]byte, 60-len(reply))...)
				}
				ret, out := nb.runXDP(t, reply)
				if ret != xdpRedirect {
					t.Errorf("reply %s -> %s: verdict %d, want XDP_REDIRECT", server, nat, ret)
					continue
				}
				if got := verify(t, ipTrimmed(out)); got.src != server || got.dst != web {
					t.Errorf("reply %s -> %s rewritten to %s -> %s, want -> %s", server, nat, got.src, got.dst, web)
				}
			}
		}
	}
}

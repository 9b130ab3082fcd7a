package bpf_test

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

// balancedBed is a bed with three sandboxes that share host port 8080
// (publish --balance), each reachable by XDP too.
func balancedBed(t *testing.T) (*natbed, []netip.Addr, maps.Publication) {
	t.Helper()
	nb := newNATBed(t)
	backends := []netip.Addr{webAddr}
	nb.xdpTargets(t, netip.Addr{})
	for _, a := range []netip.Addr{netip.MustParseAddr("172.17.0.3"), netip.MustParseAddr("172.17.0.4")} {
		ep := nb.addEndpoint(t, a)
		must(t, namespace.Do(nb.ns, func() error { // the devmap names interfaces of its namespace
			return nb.maps.PutIface(maps.Iface{Ifindex: uint32(ep.ifindex), Network: bridgeNet.Index, Addr: a, XDPTarget: true})
		}))
		backends = append(backends, a)
	}
	pub := maps.Publication{HostPort: 8080, Proto: 6}
	for _, a := range backends {
		pub.Backends = append(pub.Backends, maps.Backend{Addr: a, Port: 80})
	}
	must(t, nb.maps.PutPublication(pub))
	return nb, backends, pub
}

// tuple is the i-th of the clients outside that the tests spread: 40
// addresses, many ports each.
func tuple(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i%40)}), uint16(10000+i/40))
}

// reach sends pkt to the bed's uplink (TC, or XDP) and gives the
// sandbox address it was delivered to (invalid: not delivered).
func (nb *natbed) reach(t *testing.T, pkt []byte, xdp bool) netip.Addr {
	t.Helper()
	if xdp {
		ret, out := nb.runXDP(t, pkt)
		if ret != xdpRedirect {
			return netip.Addr{}
		}
		return verify(t, out).dst.Addr()
	}
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, pkt)
	if ret != tcActRedirect {
		return netip.Addr{}
	}
	got := verify(t, out)
	if got.dst.Port() != 80 {
		t.Fatalf("delivered to port %d, want 80", got.dst.Port())
	}
	return got.dst.Addr()
}

// checkShares fails unless each backend has a third of n, within 5 points.
func checkShares(t *testing.T, what string, got map[netip.Addr]int, backends []netip.Addr, n int) {
	t.Helper()
	for _, b := range backends {
		if share := float64(got[b]) / float64(n); share < 1.0/3-0.05 || share > 1.0/3+0.05 {
			t.Errorf("%s: %s has %.1f%% of %d flows, want 33.3%% ± 5 points (%v)", what, b, 100*share, n, got)
		}
	}
	if len(got) != len(backends) {
		t.Errorf("%s: flows went to %v, want %v alone", what, got, backends)
	}
}

// flushConntrack empties both conntrack tables, as if every entry was lost.
func (nb *natbed) flushConntrack(t *testing.T) {
	t.Helper()
	for _, m := range []*ebpf.Map{nb.dp.Maps.Ct, nb.dp.Maps.CtNew} {
		var keys [][]byte
		k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		must(t, it.Err())
		for _, k := range keys {
			must(t, m.Delete(k))
		}
	}
}

// New flows to a balanced publication spread over its backends by their
// tuple, a third each within 5 points of 10,000, on TC and on XDP alike:
// a tuple goes where it went on the other path, and where it went before
// its conntrack entries were lost.
func TestBalancedPublicationSpreads(t *testing.T) {
	nb, backends, _ := balancedBed(t)
	const n = 10000
	first := make([]netip.Addr, n)
	shares := map[netip.Addr]int{}
	for i := range n {
		first[i] = nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), syn, 1, 0), false)
		shares[first[i]]++
	}
	checkShares(t, "uplink", shares, backends, n)
	counted, err := nb.maps.BackendFlows()
	must(t, err)
	for _, c := range counted {
		if c.Backend.Port != 80 || c.Proto != "tcp" || c.Flows != uint64(shares[c.Backend.Addr]) {
			t.Errorf("backend_flows counts %d new %s flows for %s, want %d", c.Flows, c.Proto, c.Backend, shares[c.Backend.Addr])
		}
	}
	if len(counted) != len(backends) {
		t.Errorf("backend_flows counts %v, want the %d backends", counted, len(backends))
	}
	nb.flushConntrack(t)
	moved := 0
	for i := range n {
		// A segment mid-stream, as a flow whose entries were lost sends.
		if got := nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), ack, 2, 1), true); got != first[i] {
			moved++
			if moved < 5 {
				t.Errorf("%s: TC delivered to %s, XDP (its entries lost) to %s", tuple(i), first[i], got)
			}
		}
	}
	if moved > 0 {
		t.Errorf("%d of %d flows went elsewhere on XDP, their entries lost", moved, n)
	}
}

// A sandbox reaching the balanced port of a host address (hairpin) is
// spread as a client outside is, itself among the backends.
func TestBalancedPublicationHairpin(t *testing.T) {
	nb, backends, _ := balancedBed(t)
	const n = 1500
	shares := map[netip.Addr]int{}
	for i := range n {
		pkt := tcpSegment(ap(webAddr, uint16(20000+i)), ap(hostAddr, 8080), syn, 1, 0)
		got := nb.mustVerdict(t, "hairpin "+strconv.Itoa(i), nb.dp.Endpoint.FromContainer, pkt, 1, tcActRedirect)
		shares[got.dst.Addr()]++
		if got.dst.Addr() == webAddr && got.src.Addr() != bridgeNet.Gateway {
			t.Fatalf("a sandbox reaching itself from %s, want from its gateway", got.src)
		}
	}
	checkShares(t, "hairpin", shares, backends, n)
}

// A backend that leaves the table takes no new flow at once; its
// established flows go on until they end. The other backends' flows
// whose conntrack entries were lost still reach them, but for the few
// slots the table moved. The last backend's leaving is an unpublish: its
// flows end.
func TestBalancedBackendLeaves(t *testing.T) {
	nb, backends, pub := balancedBed(t)
	const n = 3000
	first := make([]netip.Addr, n)
	for i := range n {
		first[i] = nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), syn, 1, 0), false)
	}
	gone := backends[2]
	pub.Backends = pub.Backends[:2]
	must(t, nb.maps.PutPublication(pub))
	if bs, err := nb.maps.Backends(pub); err != nil || len(bs) != 2 {
		t.Fatalf("the datapath's backends: %v, %v; want 2", bs, err)
	}
	kept := 0
	for i := range n {
		if first[i] != gone {
			continue
		}
		kept++
		if got := nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), ack, 2, 1), false); got != gone {
			t.Fatalf("an established flow of the backend that left went to %v", got)
		}
	}
	if kept == 0 {
		t.Fatal("no flow went to the third backend")
	}
	shares := map[netip.Addr]int{}
	for i := n; i < 2*n; i++ {
		got := nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), syn, 1, 0), false)
		shares[got]++
	}
	if shares[gone] != 0 || shares[backends[0]] < n/3 || shares[backends[1]] < n/3 {
		t.Errorf("new flows after a backend left went to %v, want half each to %v", shares, backends[:2])
	}
	nb.flushConntrack(t)
	moved := 0
	for i := range n {
		got := nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), ack, 2, 1), false)
		switch {
		case got == gone || !got.IsValid():
			t.Fatalf("%s, its entries lost: delivered to %v", tuple(i), got)
		case first[i] != gone && got != first[i]:
			moved++
		}
	}
	if moved > (n-kept)/100 {
		t.Errorf("%d of the %d flows of the backends that stayed moved, their entries lost; want at most 1%%", moved, n-kept)
	}
	t.Logf("%d of the %d flows of the backends that stayed moved, their entries lost", moved, n-kept)
	// The last one's leaving ends its flows.
	must(t, nb.maps.DeletePublications(pub))
	if got := nb.reach(t, tcpSegment(tuple(0), ap(hostAddr, 8080), ack, 3, 1), false); got.IsValid() {
		t.Errorf("a flow of an unpublished port went on to %s", got)
	}
	for _, m := range []*ebpf.Map{nb.dp.Maps.Maglev, nb.dp.Maps.PublishedPorts, nb.dp.Maps.HeldPorts, nb.dp.Maps.BackendFlows} {
		if n := mapEntries(t, m); n != 0 {
			t.Errorf("%s holds %d entries once the port is unpublished", m, n)
		}
	}
}

func mapEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	keys := 0
	var prev any // nil asks for the first key
	for {
		next := make([]byte, m.KeySize())
		if err := m.NextKey(prev, &next); err != nil {
			must(t, ignoreMissing(err))
			return keys
		}
		keys, prev = keys+1, next
	}
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// A port balanced on [::] over a dual-stack sandbox and an IPv4-only one
// spreads IPv6 clients over both: the first reached at its IPv6 address,
// the other translated to IPv4 from its gateway, as one publication that
// is not balanced does.
func TestBalancedPublicationAcrossFamilies(t *testing.T) {
	nb := newNATBed6(t)
	v4only := netip.MustParseAddr("172.17.0.3")
	nb.addEndpoint(t, v4only)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6,
		Backends: []maps.Backend{{Addr: webAddr6, Port: 80}, {Addr: v4only, Port: 80}}}))
	const n = 1000
	shares := map[netip.Addr]int{}
	for i := range n {
		client := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 15: byte(10 + i%40)}), uint16(10000+i/40))
		got := nb.mustVerdict(t, "from "+client.String(), nb.dp.Uplink.UplinkIngress, tcpSegment(client, ap(hostAddr6, 8080), syn, 1, 0), 0, tcActRedirect)
		shares[got.dst.Addr()]++
		switch got.dst.Addr() {
		case webAddr6:
			if got.src != client {
				t.Fatalf("to %s from %s, want the client's own address", got.dst, got.src)
			}
		case v4only:
			if got.src.Addr() != bridgeNet.Gateway {
				t.Fatalf("to %s from %s, want from the gateway", got.dst, got.src)
			}
		default:
			t.Fatalf("delivered to %s", got.dst)
		}
	}
	for _, b := range []netip.Addr{webAddr6, v4only} {
		if share := float64(shares[b]) / n; share < 0.45 || share > 0.55 {
			t.Errorf("%s has %.1f%% of %d flows, want 50%% ± 5 points", b, 100*share, n)
		}
	}
}

// A new connection on the tuple of a closed one (a SYN on its entry in
// CLOSE or TIME_WAIT, which conntrack reopens) is a new flow: a backend
// that left the table takes none. Without the check a client that reuses
// its source port keeps opening connections to a backend that was taken
// out (or unpublished), on TC and on XDP, as long as it reopens within a
// closed state's lifetime, each close leaving another entry to reopen.
func TestBalancedReopenAfterBackendLeft(t *testing.T) {
	for _, xdp := range []bool{false, true} {
		t.Run(map[bool]string{false: "tc", true: "xdp"}[xdp], func(t *testing.T) { testReopenAfterBackendLeft(t, xdp) })
	}
}

func testReopenAfterBackendLeft(t *testing.T, xdp bool) {
	nb, backends, pub := balancedBed(t)
	gone := backends[2]
	i := 0
	for ; nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), syn, 1, 0), xdp) != gone; i++ {
	}
	// The client resets the connection: its flow is closed.
	nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), rst|ack, 2, 0), xdp)
	if st, _ := nb.state(t, flowOf(6, tuple(i), ap(hostAddr, 8080))); st != bpf.DatapathCtStateCT_TCP_CLOSE {
		t.Fatalf("after the reset: state %v, want CLOSE", st)
	}
	pub.Backends = pub.Backends[:2]
	must(t, nb.maps.PutPublication(pub))
	got := nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), syn, 9000, 0), xdp)
	if got != backends[0] && got != backends[1] {
		t.Errorf("xdp %v: a new connection on a closed tuple went to %v, want one of %v (%v left)", xdp, got, backends[:2], gone)
	}
}

// backendFlows sums the new flows backend_flows counted, over every
// backend.
func (nb *natbed) backendFlows(t *testing.T) uint64 {
	t.Helper()
	counted, err := nb.maps.BackendFlows()
	must(t, err)
	var n uint64
	for _, c := range counted {
		n += c.Flows
	}
	return n
}

// ebpfnet_backend_flows_total counts the new flows each backend took:
// packets that start none (a reset to the port, which the host answers)
// count for nothing, on TC or XDP, and a flow XDP claims and TC delivers
// counts once. Otherwise anyone outside inflates a backend's count at
// will, with packets that reach no backend.
func TestBalancedCountsFlowsOnly(t *testing.T) {
	nb, _, _ := balancedBed(t)
	for _, xdp := range []bool{false, true} {
		before := nb.backendFlows(t)
		for i := range 100 {
			nb.reach(t, tcpSegment(tuple(i), ap(hostAddr, 8080), rst, 1, 0), xdp)
		}
		if n := nb.backendFlows(t) - before; n != 0 {
			t.Errorf("xdp %v: 100 resets of no flow counted as %d new flows", xdp, n)
		}
		before = nb.backendFlows(t)
		client := tuple(200)
		if xdp {
			client = tuple(201)
		}
		if got := nb.reach(t, tcpSegment(client, ap(hostAddr, 8080), syn, 1, 0), xdp); !got.IsValid() {
			t.Fatalf("xdp %v: a SYN was not delivered", xdp)
		}
		if n := nb.backendFlows(t) - before; n != 1 {
			t.Errorf("xdp %v: a SYN counted as %d new flows, want 1", xdp, n)
		}
	}
}

// unseededFlowHash is flow_hash (lib/maglev.h) as anyone can compute it
// from the source: MurmurHash3's rounds over the tuple's words, as the
// datapath loads them, from zero.
func unseededFlowHash(src, dst netip.AddrPort, proto uint8) uint32 {
	mix := func(h, k uint32) uint32 {
		k *= 0xcc9e2d51
		k = bits.RotateLeft32(k, 15)
		k *= 0x1b873593
		h ^= k
		h = bits.RotateLeft32(h, 13)
		return h*5 + 0xe6546b64
	}
	var h uint32
	for _, a := range []netip.Addr{src.Addr(), dst.Addr()} {
		b := a.As16()
		for i := 0; i < 16; i += 4 {
			h = mix(h, binary.LittleEndian.Uint32(b[i:]))
		}
	}
	h = mix(h, uint32(bits.ReverseBytes16(src.Port()))<<16|uint32(bits.ReverseBytes16(dst.Port())))
	h = mix(h, uint32(proto))
	h ^= 37
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	return h ^ h>>16
}

// A client must not be able to choose its backend offline: with a hash
// of the tuple that anyone can compute, a client picks the source ports
// whose tuples fall in one slot of the table, and every flow it opens
// from them lands on one backend, whatever the table holds (a flood
// aimed at one backend, N times its share). The hash is keyed with a
// secret of the host's, so those ports spread as any others.
func TestBalancedBackendNotChosenByClient(t *testing.T) {
	nb, backends, _ := balancedBed(t)
	client, host := netip.MustParseAddr("192.0.2.77"), ap(hostAddr, 8080)
	slot := func(port uint16) uint32 {
		return unseededFlowHash(ap(client, port), host, 6) % uint32(bpf.DatapathMaglevSizeMAGLEV_SLOTS)
	}
	var picked []uint16
	for p := 1024; p < 65536; p++ {
		if slot(uint16(p)) == slot(40000) {
			picked = append(picked, uint16(p))
		}
	}
	if len(picked) < 8 {
		t.Fatalf("only %d ports share a slot", len(picked))
	}
	shares := map[netip.Addr]int{}
	for _, p := range picked {
		shares[nb.reach(t, tcpSegment(ap(client, p), host, syn, 1, 0), false)]++
	}
	if len(shares) == 1 {
		t.Errorf("the %d source ports a client picked from the published hash all went to %v; want them spread over %v", len(picked), shares, backends)
	}
}

// Unpublishing a port ends its flows (a publication's entries hold while
// it leads where they do); a balanced publication of the same host port
// afterwards, over other sandboxes, must not bring them back: it leads to
// the flows its own table made, not to every address. Without the check
// a client whose connection to the unpublished sandbox had no packet in
// between keeps it, and the sandbox stays reachable from outside for as
// long as the client keeps the flow alive.
func TestBalancedPortDoesNotReviveUnpublishedFlows(t *testing.T) {
	for _, xdp := range []bool{false, true} {
		t.Run(map[bool]string{false: "tc", true: "xdp"}[xdp], func(t *testing.T) { testNoRevival(t, xdp) })
	}
}

func testNoRevival(t *testing.T, xdp bool) {
	nb := newNATBed(t)
	nb.xdpTargets(t, netip.Addr{})
	others := []netip.Addr{netip.MustParseAddr("172.17.0.3"), netip.MustParseAddr("172.17.0.4")}
	for _, a := range others {
		nb.addEndpoint(t, a)
	}
	alone := maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}
	must(t, nb.maps.PutPublication(alone))
	client := ap(clientAddr, 40000)
	if got := nb.reach(t, tcpSegment(client, ap(hostAddr, 8080), syn, 1, 0), xdp); got != webAddr {
		t.Fatalf("xdp %v: the flow went to %v, want %v", xdp, got, webAddr)
	}
	must(t, nb.maps.DeletePublications(alone))
	balanced := maps.Publication{HostPort: 8080, Proto: 6}
	for _, a := range others {
		balanced.Backends = append(balanced.Backends, maps.Backend{Addr: a, Port: 80})
	}
	must(t, nb.maps.PutPublication(balanced))
	if got := nb.reach(t, tcpSegment(client, ap(hostAddr, 8080), ack, 2, 1), xdp); got == webAddr {
		t.Errorf("xdp %v: a flow of the unpublished sandbox went on to it once the port was balanced over %v", xdp, others)
	}
}

// A table the datapath cannot trust to name a backend sends nothing
// anywhere: a slot naming a backend that left (zero), or an index past
// the 64 backends, drops the flow as having no route, on TC and XDP; no
// flow falls through to the first backend or reads past the table.
func TestBalancedTableWithoutBackend(t *testing.T) {
	nb, backends, _ := balancedBed(t)
	// The key of every IPv4 address: ::ffff:0.0.0.0.
	key := bpf.DatapathPublicationKey{Addr: bpf.DatapathAddr{B: netip.IPv4Unspecified().As16()}, Port: htons(8080), Proto: 6}
	var table bpf.DatapathMaglevTable
	must(t, nb.dp.Maps.Maglev.Lookup(key, &table))
	for _, c := range []struct {
		what string
		slot uint8
	}{{"a backend that left", 2}, {"past the backends", 200}} {
		bad := table
		bad.Backend[2] = bpf.DatapathPublication{}
		for i := range bad.Slot {
			bad.Slot[i] = c.slot
		}
		must(t, nb.dp.Maps.Maglev.Put(key, bad))
		for i := range 50 {
			for _, xdp := range []bool{false, true} {
				if got := nb.reach(t, tcpSegment(tuple(1000+i), ap(hostAddr, 8080), syn, 1, 0), xdp); got.IsValid() {
					t.Fatalf("slots naming %s: xdp %v delivered to %s (backends %v)", c.what, xdp, got, backends)
				}
			}
		}
	}
	if n := nb.counter(t, "uplink", "drop_no_route"); n != 100 {
		t.Errorf("uplink/drop_no_route counted %d, want 100", n)
	}
}

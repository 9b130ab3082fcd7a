package bpf_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

// limit gives the testbed's sender (ifindex 1) the bandwidth limits
// egress and ingress.
func (tb *testbed) limit(t *testing.T, egress, ingress maps.Rate) {
	t.Helper()
	must(t, tb.maps.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1, Addr: netip.MustParseAddr("172.19.5.2"),
		Egress: egress, Ingress: ingress}))
}

// verdicts runs prog on pkt n times, quickly, and counts the passes
// (TC_ACT_UNSPEC) and the drops.
func (tb *testbed) verdicts(t *testing.T, prog *ebpf.Program, pkt []byte, n int) (passed, dropped int) {
	t.Helper()
	for range n {
		switch ret, _ := tb.runOut(t, prog, pkt); ret {
		case tcActUnspec:
			passed++
		case tcActShot:
			dropped++
		default:
			t.Fatalf("verdict %#x", ret)
		}
	}
	return passed, dropped
}

// A sandbox's egress bucket lets its burst through at once, then drops
// what is over the rate (drop_rate_limit), and fills again with time;
// its ingress, limited apart, is not touched by it.
func TestRateLimitBurstThenDrop(t *testing.T) {
	tb := newTestbed(t, false, false)
	out := ipv4Packet("172.19.5.2", "172.19.5.3", 17)
	in := ipv4Packet("10.1.2.3", "172.19.5.2", 17)
	size := uint64(len(out))
	// 10 packets a second, 5 at once: a refill takes 100 ms a packet,
	// far longer than the runs take.
	tb.limit(t, maps.Rate{BytesPerSecond: 10 * size, Burst: 5 * size}, maps.Rate{BytesPerSecond: 1 << 30, Burst: 1 << 20})
	before := tb.counters(t)
	if passed, dropped := tb.verdicts(t, tb.dp.Endpoint.FromContainer, out, 8); passed != 5 || dropped != 3 {
		t.Fatalf("egress: %d passed and %d dropped of 8, want the burst of 5 to pass", passed, dropped)
	}
	if passed, _ := tb.verdicts(t, tb.dp.Endpoint.ToContainer, in, 20); passed != 20 {
		t.Errorf("ingress: %d of 20 passed, want all: the directions have buckets of their own", passed)
	}
	after := tb.counters(t)
	if n := after["from_container/drop_rate_limit"] - before["from_container/drop_rate_limit"]; n != 3 {
		t.Errorf("from_container/drop_rate_limit moved by %d, want 3", n)
	}
	if n := after["to_container/pass"] - before["to_container/pass"]; n != 20 {
		t.Errorf("to_container/pass moved by %d, want 20", n)
	}
	time.Sleep(250 * time.Millisecond) // 2.5 packets' worth
	if passed, dropped := tb.verdicts(t, tb.dp.Endpoint.FromContainer, out, 6); passed < 2 || passed > 3 || dropped == 0 {
		t.Errorf("after 250 ms: %d passed and %d dropped of 6, want 2 (or 3, on a slow run) to pass", passed, dropped)
	}
}

// Ingress is limited on its own, through the bridge (to_container) as on
// the other ways in, and arp and neighbour discovery, which a sandbox at
// its limit still needs, are never limited.
func TestRateLimitIngress(t *testing.T) {
	tb := newTestbed(t, false, false)
	in := ipv4Packet("10.1.2.3", "172.19.5.2", 6)
	size := uint64(len(in))
	tb.limit(t, maps.Rate{}, maps.Rate{BytesPerSecond: size, Burst: 2 * size})
	if passed, dropped := tb.verdicts(t, tb.dp.Endpoint.ToContainer, in, 4); passed != 2 || dropped != 2 {
		t.Fatalf("ingress: %d passed and %d dropped of 4, want the burst of 2 to pass", passed, dropped)
	}
	if passed, _ := tb.verdicts(t, tb.dp.Endpoint.FromContainer, ipv4Packet("172.19.5.2", "172.19.5.3", 6), 10); passed != 10 {
		t.Errorf("egress: %d of 10 passed, want all: it has no limit", passed)
	}
	tb.limit(t, maps.Rate{BytesPerSecond: size, Burst: size}, maps.Rate{BytesPerSecond: size, Burst: size})
	if passed, _ := tb.verdicts(t, tb.dp.Endpoint.FromContainer, arpPacket(), 10); passed != 10 {
		t.Errorf("arp: %d of 10 passed, want all", passed)
	}
}

// A packet bigger than the whole burst (a GSO packet counts by its whole
// length) passes when the bucket is full, and leaves it in debt for as
// long as it takes to send: it would otherwise never pass.
func TestRateLimitPacketOverBurst(t *testing.T) {
	tb := newTestbed(t, false, false)
	big := withPayload(ipv4Packet("172.19.5.2", "172.19.5.3", 17), 3000)
	tb.limit(t, maps.Rate{BytesPerSecond: 1000, Burst: 1000}, maps.Rate{})
	if passed, dropped := tb.verdicts(t, tb.dp.Endpoint.FromContainer, big, 3); passed != 1 || dropped != 2 {
		t.Fatalf("%d passed and %d dropped of 3 packets of %d bytes, want the first to pass", passed, dropped, len(big))
	}
	fullAt := bucketFullAt(t, tb, endpointIfindex, bpf.DatapathRateDirectionRATE_EGRESS)
	if ahead := time.Duration(fullAt - monotonicNow(t)); ahead < 2500*time.Millisecond || ahead > 3100*time.Millisecond {
		t.Errorf("bucket full again in %v, want about 3 s (%d bytes at 1000 bytes/s)", ahead, len(big))
	}
}

// The buckets are an endpoint's own: one in debt slows no other, and a
// limit changed keeps its bucket, while one removed takes it along.
func TestRateLimitOwnBucket(t *testing.T) {
	tb := newTestbed(t, false, false)
	const other = 7
	must(t, tb.maps.PutIface(maps.Iface{Ifindex: other, Network: 1, Addr: netip.MustParseAddr("172.19.5.7"),
		Egress: maps.Rate{BytesPerSecond: 1, Burst: 1}, Ingress: maps.Rate{BytesPerSecond: 1, Burst: 1}}))
	for _, dir := range []bpf.DatapathRateDirection{bpf.DatapathRateDirectionRATE_EGRESS, bpf.DatapathRateDirectionRATE_INGRESS} {
		must(t, tb.dp.Maps.RateBuckets.Put(bpf.DatapathRateKey{Ifindex: other, Direction: uint32(dir)},
			bpf.DatapathRateBucket{FullAt: monotonicNow(t) + uint64(time.Hour)}))
	}
	if passed, _ := tb.verdicts(t, tb.dp.Endpoint.FromContainer, ipv4Packet("172.19.5.2", "172.19.5.3", 17), 50); passed != 50 {
		t.Errorf("egress of an unlimited sandbox: %d of 50 passed", passed)
	}
	if passed, _ := tb.verdicts(t, tb.dp.Endpoint.ToContainer, ipv4Packet("10.1.2.3", "172.19.5.2", 17), 50); passed != 50 {
		t.Errorf("ingress of an unlimited sandbox: %d of 50 passed", passed)
	}
	// A new limit keeps the bucket; no limit takes it.
	must(t, tb.maps.PutIface(maps.Iface{Ifindex: other, Network: 1, Addr: netip.MustParseAddr("172.19.5.7"),
		Egress: maps.Rate{BytesPerSecond: 2, Burst: 1}}))
	var b bpf.DatapathRateBucket
	if err := tb.dp.Maps.RateBuckets.Lookup(bpf.DatapathRateKey{Ifindex: other, Direction: 0}, &b); err != nil {
		t.Errorf("egress bucket after a change of limit: %v", err)
	}
	if err := tb.dp.Maps.RateBuckets.Lookup(bpf.DatapathRateKey{Ifindex: other, Direction: 1}, &b); err == nil {
		t.Errorf("ingress bucket kept after its limit went")
	}
	must(t, tb.maps.DeleteIface(other))
	if err := tb.dp.Maps.RateBuckets.Lookup(bpf.DatapathRateKey{Ifindex: other, Direction: 0}, &b); err == nil {
		t.Errorf("egress bucket kept after its interface went")
	}
}

func bucketFullAt(t *testing.T, tb *testbed, ifindex uint32, dir bpf.DatapathRateDirection) uint64 {
	t.Helper()
	var b bpf.DatapathRateBucket
	must(t, tb.dp.Maps.RateBuckets.Lookup(bpf.DatapathRateKey{Ifindex: ifindex, Direction: uint32(dir)}, &b))
	return b.FullAt
}

// monotonicNow is bpf_ktime_get_ns's clock.
func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	return uint64(ts.Nano())
}

// Ingress is limited on every way into a sandbox that skips the bridge
// (and so to_container): a published port's flows delivered from the
// uplink, by TC and by XDP, and a neighbour's packets delivered from its
// endpoint. Over the limit each is dropped by the program that would
// have redirected it, as drop_rate_limit.
func TestRateLimitEveryWayIn(t *testing.T) {
	webMAC := net.HardwareAddr{2, 0x42, 172, 17, 0, 2}
	// limitWeb gives the bed's sandbox (on loopback) an ingress limit of
	// two packets of size at once, and a refill far too slow to matter.
	limitWeb := func(t *testing.T, nb *natbed, size int, xdp bool) {
		must(t, namespace.Do(nb.ns, func() error {
			return nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr, XDPTarget: xdp,
				Ingress: maps.Rate{BytesPerSecond: 1, Burst: uint64(2 * size)}})
		}))
	}
	for _, c := range []struct {
		name     string
		program  string
		redirect uint32
		drop     uint32
		xdp      bool
		setup    func(t *testing.T, nb *natbed) (run func(i int) uint32, size int)
	}{
		{"published port, tc", "uplink", tcActRedirect, tcActShot, false, func(t *testing.T, nb *natbed) (func(int) uint32, int) {
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 17, Addr: webAddr, Port: 80}))
			return func(i int) uint32 {
				ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(17, ap(clientAddr, uint16(40000+i)), ap(hostAddr, 8080), false))
				return ret
			}, len(segment(17, ap(clientAddr, 40000), ap(hostAddr, 8080), false))
		}},
		{"published port, xdp", "uplink_xdp", xdpRedirect, xdpDrop, true, func(t *testing.T, nb *natbed) (func(int) uint32, int) {
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 17, Addr: webAddr, Port: 80}))
			return func(i int) uint32 {
				ret, _ := nb.runXDP(t, segment(17, ap(clientAddr, uint16(40000+i)), ap(hostAddr, 8080), false))
				return ret
			}, len(segment(17, ap(clientAddr, 40000), ap(hostAddr, 8080), false))
		}},
		{"neighbour", "from_container", tcActRedirect, tcActShot, false, func(t *testing.T, nb *natbed) (func(int) uint32, int) {
			neighbour := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
			pkt := segment(17, ap(neighbour.addr, 1000), ap(webAddr, 2000), false)
			copy(pkt, webMAC)
			return func(int) uint32 {
				ret, _ := nb.runOn(t, nb.dp.Endpoint.FromContainer, pkt, neighbour.ifindex)
				return ret
			}, len(pkt)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBed(t)
			run, size := c.setup(t, nb)
			limitWeb(t, nb, size, c.xdp)
			before := nb.counter(t, c.program, "drop_rate_limit")
			for i, want := range []uint32{c.redirect, c.redirect, c.drop, c.drop} {
				if ret := run(i); ret != want {
					t.Errorf("packet %d: verdict %d, want %d", i, ret, want)
				}
			}
			if n := nb.counter(t, c.program, "drop_rate_limit") - before; n != 2 {
				t.Errorf("%s/drop_rate_limit moved by %d, want 2", c.program, n)
			}
		})
	}
}

// A GSO packet is charged its whole length, not its first segment's: what
// the sandbox sent, as it will leave.
func TestRateLimitChargesGSOWhole(t *testing.T) {
	nb := newNATBed(t)
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr,
		Egress: maps.Rate{BytesPerSecond: 1000, Burst: 100_000}}))
	neighbour := netip.MustParseAddr("172.17.0.3")
	pkt := withPayload(segment(6, ap(webAddr, 1000), ap(neighbour, 2000), false), 3000) // BPF_PROG_RUN takes a page
	if ret, _ := nb.runGSO(t, nb.dp.Endpoint.FromContainer, pkt, 1400); ret != tcActUnspec {
		t.Fatalf("verdict %d, want passed", ret)
	}
	var b bpf.DatapathRateBucket
	must(t, nb.dp.Maps.RateBuckets.Lookup(bpf.DatapathRateKey{Ifindex: 1, Direction: 0}, &b))
	ahead := time.Duration(b.FullAt - monotonicNow(t))
	if want := time.Duration(len(pkt)) * time.Millisecond; ahead < want-100*time.Millisecond || ahead > want {
		t.Errorf("bucket full again in %v, want %v: %d bytes at 1000 bytes/s", ahead, want, len(pkt))
	}
}

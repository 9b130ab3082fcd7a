package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

// BenchmarkPrograms is what the programs cost per packet of a published
// flow (an ACK each way), in both families, as the
// kernel runs them (BPF_PROG_RUN): with the monitor off, as the datapath
// runs unless one listens, and on for every event (the rate limit then
// cuts most of them). The ACK in comes in on TC (uplink) and on XDP
// (uplink-xdp, checksum check included). `make bench` prints it.
func BenchmarkPrograms(b *testing.B) {
	for _, m := range []struct {
		name  string
		types maps.MonitorTypes
	}{{"monitor-off", 0}, {"monitor-on", maps.MonitorAll}} {
		nb := newNATBed6(b)
		must(b, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
		must(b, nb.maps.PutPublication(maps.Publication{HostAddr: hostAddr6, HostPort: 8080, Proto: 6, Addr: webAddr6, Port: 80}))
		must(b, nb.maps.SetMonitor(m.types))
		nb.xdpTargets(b, webAddr6)
		for _, c := range []struct {
			family            string
			client, host, web netip.Addr
		}{
			{"ipv4", clientAddr, hostAddr, webAddr},
			{"ipv6", clientAddr6, hostAddr6, webAddr6},
		} {
			client, host, web := ap(c.client, 40000), ap(c.host, 8080), ap(c.web, 80)
			nb.run(b, nb.dp.Uplink.UplinkIngress, segment(6, client, host, false)) // the SYN makes the flow
			for _, p := range []struct {
				dir  string
				prog *ebpf.Program
				pkt  []byte
			}{
				{"uplink", nb.dp.Uplink.UplinkIngress, tcpSegment(client, host, ack, 2, 1)},
				{"uplink-xdp", nb.dp.UplinkXDP.UplinkXdp, tcpSegment(client, host, ack, 2, 1)},
				{"reply", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 1, 2)},
			} {
				b.Run(m.name+"/"+c.family+"/"+p.dir, func(b *testing.B) { perPacket(b, nb, p.prog, p.pkt) })
			}
		}
	}
}

// perPacket runs prog on pkt b.N times in the bed's namespace and
// reports the time a packet took.
func perPacket(b *testing.B, nb *natbed, prog *ebpf.Program, pkt []byte) {
	var per float64
	must(b, namespace.Do(nb.ns, func() error {
		_, d, err := prog.Benchmark(pkt, b.N, b.ResetTimer)
		per = float64(d.Nanoseconds())
		return err
	}))
	b.ReportMetric(per, "ns/packet")
}

// BenchmarkEgressList is what an egress list costs a sandbox's packet of
// a flow to the outside (a UDP datagram after the first), in both
// families: no list, a list of 1,000 prefixes (the flow's destination in
// the last), and the destination allowed by a name instead. The network
// routes rather than masquerades: BPF_PROG_RUN repeats a program on one
// packet, which a translation would rewrite for the next run.
func BenchmarkEgressList(b *testing.B) {
	for _, list := range []string{"none", "prefixes-1000", "name"} {
		nb := newNATBed6(b)
		routed := bridgeNet
		routed.Subnet6, routed.Gateway6 = subnet6, gateway6
		routed.Masquerade, routed.Masquerade6 = false, false
		must(b, nb.maps.PutNetwork(routed))
		e := maps.Egress{Sources: []netip.Addr{webAddr, webAddr6}}
		switch list {
		case "prefixes-1000":
			for i := range 998 {
				e.Allow = append(e.Allow, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 0}), 24))
			}
			e.Allow = append(e.Allow, netip.MustParsePrefix("10.99.0.0/30"), netip.MustParsePrefix("2001:db8:99::/126"))
		case "name":
			for _, a := range []netip.Addr{clientAddr, clientAddr6} {
				src := webAddr
				if a.Is6() {
					src = webAddr6
				}
				must(b, nb.maps.PutEgressName(maps.EgressName{Source: src, Addr: a, Lapses: maps.Now() + 3600e9}))
			}
		}
		if list != "none" {
			must(b, nb.maps.ReplaceEgress(e, maps.Egress{}))
		}
		for _, c := range []struct {
			family      string
			web, client netip.Addr
		}{{"ipv4", webAddr, clientAddr}, {"ipv6", webAddr6, clientAddr6}} {
			pkt := segment(17, ap(c.web, 40000), ap(c.client, 53), false)
			nb.run(b, nb.dp.Endpoint.FromContainer, pkt) // the first makes the flow
			b.Run(list+"/"+c.family, func(b *testing.B) {
				// As the flow's packets come, on the sandbox's interface
				// (Benchmark gives the program no context to say it), in
				// runs short enough that the hop limit the datapath takes
				// off at each never runs out: BPF_PROG_RUN repeats the
				// program on one packet.
				pkt = withHopLimit(pkt, 255)
				b.ResetTimer()
				must(b, namespace.Do(nb.ns, func() error {
					for done := 0; done < b.N; {
						n := min(b.N-done, 250)
						opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+128), Repeat: uint32(n), Context: skbContext{}}
						ret, err := nb.dp.Endpoint.FromContainer.Run(opts)
						if err != nil {
							return err
						}
						if ret == tcActShot {
							b.Fatal("the packet was dropped")
						}
						done += n
					}
					return nil
				}))
			})
		}
	}
}

// withHopLimit is pkt (Ethernet and IPv4 or IPv6) with its TTL or hop
// limit set to n.
func withHopLimit(pkt []byte, n byte) []byte {
	out := append([]byte(nil), pkt...)
	if out[12] == 0x86 {
		out[14+7] = n
		return out
	}
	out[14+8] = n
	binary.BigEndian.PutUint16(out[14+10:], 0)
	binary.BigEndian.PutUint16(out[14+10:], checksum(out[14:34], 0))
	return out
}

// BenchmarkRateLimit is what a bandwidth limit adds per packet of a
// published flow: the ACK in through the uplink (ingress, judged before
// the redirect into the sandbox) and the reply out (egress, from_container),
// without a limit and with one high enough that every packet passes.
func BenchmarkRateLimit(b *testing.B) {
	for _, limit := range []maps.Rate{{BytesPerSecond: 1 << 40, Burst: 1 << 30}, {}} {
		nb := newNATBed(b)
		must(b, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
		must(b, nb.maps.PutIface(maps.Iface{Ifindex: 1, Network: 1, Addr: webAddr, Egress: limit, Ingress: limit}))
		client, host, web := ap(clientAddr, 40000), ap(hostAddr, 8080), ap(webAddr, 80)
		nb.run(b, nb.dp.Uplink.UplinkIngress, segment(6, client, host, false))
		name := map[bool]string{false: "unlimited", true: "limited"}[limit.BytesPerSecond != 0]
		for _, p := range []struct {
			dir  string
			prog *ebpf.Program
			pkt  []byte
		}{
			{"ingress", nb.dp.Uplink.UplinkIngress, tcpSegment(client, host, ack, 2, 1)},
			{"egress", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 1, 2)},
		} {
			if ret, _ := nb.run(b, p.prog, p.pkt); ret != tcActRedirect {
				b.Fatalf("%s: verdict %d, want the packet delivered", p.dir, ret)
			}
			b.Run(name+"/"+p.dir, func(b *testing.B) { perPacket(b, nb, p.prog, p.pkt) })
		}
	}
}

package bpf_test

import (
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
				b.Run(m.name+"/"+c.family+"/"+p.dir, func(b *testing.B) {
					var per float64
					must(b, namespace.Do(nb.ns, func() error {
						_, d, err := p.prog.Benchmark(p.pkt, b.N, b.ResetTimer)
						per = float64(d.Nanoseconds())
						return err
					}))
					b.ReportMetric(per, "ns/packet")
				})
			}
		}
	}
}

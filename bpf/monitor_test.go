package bpf_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/maps"
)

// The datapath's budget of monitor events (monitor.h).
const (
	monitorRate  = 10000 // a second, per CPU
	monitorBurst = 1000
)

func eventReader(t *testing.T, m *maps.Maps) *maps.EventReader {
	t.Helper()
	r, err := m.NewEventReader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func pending(t *testing.T, r *maps.EventReader) []maps.Event {
	t.Helper()
	evs, err := r.Pending()
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// With no monitor listening nothing is written; with drops asked for, a
// drop is written with what the program saw, and a pass is not.
func TestMonitorEvents(t *testing.T) {
	tb := newTestbed(t, false, false)
	r := eventReader(t, tb.maps)
	cross := ipv4Packet("172.19.5.2", "172.20.0.5", 17) // udp 12345 -> 80
	same := ipv4Packet("172.19.5.2", "172.19.5.3", 6)

	tb.run(t, tb.dp.Endpoint.FromContainer, cross, tcActShot, "from_container/drop_cross_network")
	if evs := pending(t, r); len(evs) != 0 {
		t.Fatalf("monitor off: %d events written: %+v", len(evs), evs)
	}

	must(t, tb.maps.SetMonitor(maps.MonitorDrop))
	start := maps.Now()
	tb.run(t, tb.dp.Endpoint.FromContainer, cross, tcActShot, "from_container/drop_cross_network")
	tb.run(t, tb.dp.Endpoint.FromContainer, same, tcActUnspec, "from_container/pass")
	evs := pending(t, r)
	if len(evs) != 1 {
		t.Fatalf("drops monitored: %d events after a drop and a pass, want the drop's: %+v", len(evs), evs)
	}
	ev := evs[0]
	want := maps.Flow{Src: netip.MustParseAddrPort("172.19.5.2:12345"), Dst: netip.MustParseAddrPort("172.20.0.5:80"), Proto: 17}
	if ev.Program != "from_container" || ev.Verdict != "drop_cross_network" || !ev.Drop || ev.Before != want ||
		ev.Translated || ev.Ifindex != endpointIfindex || ev.Len != uint32(len(cross)) {
		t.Errorf("event %+v, want from_container's drop_cross_network of %+v on ifindex %d", ev, want, endpointIfindex)
	}
	if ev.Time < start || ev.Time > maps.Now() {
		t.Errorf("event time %v, want between %v and now", ev.Time, start)
	}

	must(t, tb.maps.SetMonitor(maps.MonitorAll))
	tb.run(t, tb.dp.Endpoint.FromContainer, same, tcActUnspec, "from_container/pass")
	if evs := pending(t, r); len(evs) != 1 || evs[0].Verdict != "pass" || evs[0].Drop {
		t.Errorf("all monitored: events %+v after a pass, want its trace", evs)
	}

	must(t, tb.maps.SetMonitor(0))
	tb.run(t, tb.dp.Endpoint.FromContainer, cross, tcActShot, "from_container/drop_cross_network")
	if evs := pending(t, r); len(evs) != 0 {
		t.Errorf("monitor switched off again: %d events written", len(evs))
	}
}

// A translated packet's event has both flows: as it came in, and as it
// left.
func TestMonitorEventOfTranslatedFlow(t *testing.T) {
	nb := newNATBed(t)
	r := eventReader(t, nb.maps)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	must(t, nb.maps.SetMonitor(maps.MonitorTrace))
	client := netip.AddrPortFrom(clientAddr, 40000)
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, segment(6, client, netip.AddrPortFrom(hostAddr, 8080), false), nb.uplink); ret != tcActRedirect {
		t.Fatalf("verdict %d, want the published flow redirected", ret)
	}
	evs := pending(t, r)
	if len(evs) != 1 {
		t.Fatalf("%d events, want the DNAT's: %+v", len(evs), evs)
	}
	ev := evs[0]
	before := maps.Flow{Src: client, Dst: netip.AddrPortFrom(hostAddr, 8080), Proto: 6}
	after := maps.Flow{Src: client, Dst: netip.AddrPortFrom(webAddr, 80), Proto: 6}
	if ev.Program != "uplink" || ev.Verdict != "dnat" || ev.Drop || ev.Before != before || !ev.Translated || ev.After != after {
		t.Errorf("event %+v, want uplink's dnat of %+v to %+v", ev, before, after)
	}
}

// A translated ICMP error's event has the error as it came in (from the
// router to the host's address) and as it left (to the sandbox), not the
// rewritten error twice.
func TestMonitorEventOfTranslatedICMPError(t *testing.T) {
	nb := newNATBed(t)
	r := eventReader(t, nb.maps)
	out := nb.mustVerdict(t, "masqueraded SYN", nb.dp.Endpoint.FromContainer,
		tcpSegment(ap(webAddr, 33000), ap(clientAddr, 80), syn, 1, 0), 0, tcActRedirect)
	must(t, nb.maps.SetMonitor(maps.MonitorTrace))
	in := icmpError(routerAddr, hostAddr, 3, 4, 1300, tcpSegment(out.src, out.dst, ack, 2, 1))
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, in, nb.uplink); ret != tcActRedirect {
		t.Fatalf("verdict %d, want the error redirected to the sandbox", ret)
	}
	evs := pending(t, r)
	if len(evs) != 1 {
		t.Fatalf("%d events, want the error's: %+v", len(evs), evs)
	}
	ev := evs[0]
	before := maps.Flow{Src: netip.AddrPortFrom(routerAddr, 0), Dst: netip.AddrPortFrom(hostAddr, 0), Proto: 1}
	after := maps.Flow{Src: netip.AddrPortFrom(routerAddr, 0), Dst: netip.AddrPortFrom(webAddr, 0), Proto: 1}
	if ev.Program != "uplink" || ev.Verdict != "tracked" || ev.Drop || ev.Before != before || !ev.Translated || ev.After != after {
		t.Errorf("event %+v, want uplink's tracked %+v translated to %+v", ev, before, after)
	}
}

// A burst is cut to the budget; what is cut is counted as lost.
func TestMonitorRateLimit(t *testing.T) {
	tb := newTestbed(t, false, false)
	r := eventReader(t, tb.maps)
	must(t, tb.maps.SetMonitor(maps.MonitorDrop))
	const burst = 5000
	pkt := ipv4Packet("172.19.5.2", "172.20.0.5", 17)
	start := time.Now()
	// One run of many repeats stays on one CPU: one budget.
	ret, err := tb.dp.Endpoint.FromContainer.Run(&ebpf.RunOptions{Data: pkt, Repeat: burst})
	elapsed := time.Since(start)
	if err != nil || ret != tcActShot {
		t.Fatalf("run: %d, %v", ret, err)
	}
	written := len(pending(t, r))
	lost := tb.counters(t)["from_container/monitor_lost"]
	if written+int(lost) != burst {
		t.Errorf("%d events written and %d lost, want the %d drops accounted for", written, lost, burst)
	}
	if limit := monitorBurst + int(elapsed.Seconds()*monitorRate) + 1; written < monitorBurst || written > limit {
		t.Errorf("%d events written in %v, want between %d and %d", written, elapsed, monitorBurst, limit)
	}
	t.Logf("%d drops in %v: %d events, %d lost", burst, elapsed, written, lost)
}

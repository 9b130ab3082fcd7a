package bpf_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// A FIN closes nothing unless its sequence number is in the window, as a
// reset's must be: someone who knows only a flow's tuple must not cut an
// established flow's lifetime from five days to FIN_WAIT's two minutes.
// Like an out-of-window reset, the forged FIN passes (the endpoint drops
// it) and changes neither the state nor the lifetime; an in-window FIN
// still closes.
func TestBlindFinLeavesFlowOpen(t *testing.T) {
	nb := newNATBed(t)
	timeouts, err := loader.DefaultCTTimeouts()
	must(t, err)
	nat := establish(t, nb)
	orig := flowOf(6, ap(webAddr, 33000), ap(clientAddr, 80))
	established := time.Duration(timeouts.TcpEstablished) * time.Second
	// seq 0x90000000: nowhere near the server's 5001.
	for _, flags := range []uint8{fin | ack, fin} {
		nb.mustVerdict(t, "forged FIN", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 80), nat, flags, 0x90000000, 101), 0, tcActRedirect)
		if st, _ := nb.state(t, orig); st != bpf.DatapathCtStateCT_TCP_ESTABLISHED {
			t.Fatalf("after an out-of-window FIN (flags %#x): state %v, lifetime %s; want ESTABLISHED (the FIN ignored)",
				flags, st, nb.lifetime(t, orig).Round(time.Second))
		}
		if l := nb.lifetime(t, orig); l < established-5*time.Second {
			t.Fatalf("after an out-of-window FIN (flags %#x): lifetime %s, want the established %s", flags, l.Round(time.Second), established)
		}
	}
	nb.mustVerdict(t, "the server's FIN", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 80), nat, fin|ack, 5001, 101), 0, tcActRedirect)
	if st, _ := nb.state(t, orig); st != bpf.DatapathCtStateCT_TCP_FIN_WAIT {
		t.Fatalf("after an in-window FIN: state %v, want FIN_WAIT", st)
	}
	// Once closing, a forged FIN of the other direction does not finish
	// the close either.
	nb.mustVerdict(t, "forged FIN of the sandbox", nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 33000), ap(clientAddr, 80), fin|ack, 0x90000000, 5002), 0, tcActRedirect)
	if st, _ := nb.state(t, orig); st != bpf.DatapathCtStateCT_TCP_FIN_WAIT {
		t.Fatalf("after an out-of-window FIN of the other side: state %v, want FIN_WAIT", st)
	}
}

// A SYN-ACK moves a handshake on only when it acknowledges the SYN, as
// netfilter's window check has it: a forged SYN-ACK neither moves a
// half-open flow to SYN_RECV nor, once there, replaces the responder's
// sequence number the handshake's ACK must acknowledge.
func TestBlindSynAckLeavesHandshakeAlone(t *testing.T) {
	nb := newNATBed(t)
	web, client := ap(webAddr, 33000), ap(clientAddr, 80)
	orig := flowOf(6, web, client)
	out := nb.mustVerdict(t, "SYN", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, syn, 100, 0), 0, tcActRedirect)
	nb.mustVerdict(t, "forged SYN-ACK", nb.dp.Uplink.UplinkIngress, tcpSegment(client, out.src, syn|ack, 9000, 0x90000000), 0, tcActRedirect)
	if st, _ := nb.state(t, orig); st != bpf.DatapathCtStateCT_TCP_SYN_SENT {
		t.Fatalf("after a SYN-ACK that acknowledges no SYN: state %v, want SYN_SENT", st)
	}
	nb.mustVerdict(t, "SYN-ACK", nb.dp.Uplink.UplinkIngress, tcpSegment(client, out.src, syn|ack, 5000, 101), 0, tcActRedirect)
	// A forged SYN-ACK with another ISN, acknowledging the SYN rightly.
	nb.mustVerdict(t, "forged SYN-ACK", nb.dp.Uplink.UplinkIngress, tcpSegment(client, out.src, syn|ack, 9000, 101), 0, tcActRedirect)
	nb.mustVerdict(t, "ACK", nb.dp.Endpoint.FromContainer, tcpSegment(web, client, ack, 101, 5001), 0, tcActRedirect)
	if st, assured := nb.state(t, orig); st != bpf.DatapathCtStateCT_TCP_ESTABLISHED || !assured {
		t.Fatalf("after the handshake, a forged SYN-ACK in its middle: state %v, in ct %v; want ESTABLISHED in ct", st, assured)
	}
}

// udpExchange runs a masqueraded UDP exchange from src to clientAddr:53,
// answered and answered back, which moves it to ct unless refused; ifindex
// is src's host side.
func (nb *natbed) udpExchange(t *testing.T, src netip.AddrPort, ifindex int) {
	t.Helper()
	dst := ap(clientAddr, 53)
	out := nb.mustVerdict(t, "query", nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), ifindex, tcActRedirect)
	nb.mustVerdict(t, "answer", nb.dp.Uplink.UplinkIngress, segment(17, dst, out.src, false), 0, tcActRedirect)
	nb.mustVerdict(t, "answered back", nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), ifindex, tcActRedirect)
}

// One source cannot fill ct, the table that never evicts: past its share
// its flows stay in ct_new, where they work (and a flood may evict them),
// and the refusals are counted. Other sources' flows, from before and
// after, still get in.
func TestOneSourceCannotFillCT(t *testing.T) {
	const limit = 4
	nb := newNATBedWith(t, loader.Options{CTSourceMax: limit})
	victim := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	dst := ap(clientAddr, 53)
	nb.udpExchange(t, ap(victim.addr, 4000), victim.ifindex)
	for port := uint16(5000); port < 5000+2*limit; port++ {
		nb.udpExchange(t, ap(webAddr, port), 0)
	}
	promoted := 0
	for port := uint16(5000); port < 5000+2*limit; port++ {
		if _, assured := nb.state(t, flowOf(17, ap(webAddr, port), dst)); assured {
			promoted++
		}
	}
	if promoted != limit {
		t.Errorf("one source holds %d flows in ct, want its limit %d", promoted, limit)
	}
	if n := nb.counter(t, "from_container", "ct_source_full"); n < limit {
		t.Errorf("%d refusals counted as ct_source_full, want at least %d", n, limit)
	}
	// A refused flow works from ct_new, both ways.
	refused := ap(webAddr, 5000+2*limit-1)
	got := nb.mustVerdict(t, "a refused flow", nb.dp.Endpoint.FromContainer, segment(17, refused, dst, false), 0, tcActRedirect)
	back := nb.mustVerdict(t, "its answer", nb.dp.Uplink.UplinkIngress, segment(17, dst, got.src, false), 0, tcActRedirect)
	if back.dst != refused {
		t.Errorf("the answer of a refused flow went to %s, want %s", back.dst, refused)
	}
	if _, assured := nb.state(t, flowOf(17, ap(victim.addr, 4000), dst)); !assured {
		t.Errorf("the other source's flow from before is no longer in ct")
	}
	nb.udpExchange(t, ap(victim.addr, 4001), victim.ifindex)
	if _, assured := nb.state(t, flowOf(17, ap(victim.addr, 4001), dst)); !assured {
		t.Errorf("a new flow of the other source was not promoted to ct")
	}
}

// A source's share comes back as its flows leave ct, whoever removes
// them: expired entries the datapath forgets as it finds them, and those
// the daemon reclaims.
func TestSourceShareComesBack(t *testing.T) {
	const limit = 2
	nb := newNATBedWith(t, loader.Options{CTSourceMax: limit})
	dst := ap(clientAddr, 53)
	keys := func(port uint16) []bpf.DatapathFlow {
		return []bpf.DatapathFlow{flowOf(17, ap(webAddr, port), dst), flowOf(17, dst, ap(hostAddr, port))}
	}
	inCT := func(port uint16) bool {
		t.Helper()
		_, assured := nb.state(t, keys(port)[0])
		return assured
	}
	nb.udpExchange(t, ap(webAddr, 5000), 0)
	nb.udpExchange(t, ap(webAddr, 5001), 0)
	nb.udpExchange(t, ap(webAddr, 5002), 0)
	if !inCT(5000) || !inCT(5001) || inCT(5002) {
		t.Fatalf("in ct: %v %v %v, want the first two flows only", inCT(5000), inCT(5001), inCT(5002))
	}
	// The datapath forgets an expired flow as it meets it.
	nb.expire(t, keys(5000)...)
	nb.mustVerdict(t, "a packet of the expired flow", nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 5000), dst, false), 0, tcActRedirect)
	nb.udpExchange(t, ap(webAddr, 5003), 0)
	if !inCT(5003) {
		t.Fatalf("the share of a flow the datapath forgot did not come back")
	}
	// The daemon reclaims another.
	nb.expire(t, keys(5001)...)
	if _, err := nb.maps.ReclaimExpired(maps.Now()); err != nil {
		t.Fatal(err)
	}
	nb.udpExchange(t, ap(webAddr, 5004), 0)
	if !inCT(5004) {
		t.Fatalf("the share of a flow the daemon reclaimed did not come back")
	}
	nb.udpExchange(t, ap(webAddr, 5005), 0)
	if inCT(5005) {
		t.Fatalf("past its limit again, a flow was promoted")
	}
}

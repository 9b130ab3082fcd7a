package bpf_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
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

// An IPv6 client outside picks its addresses from its /64 at will: its
// share of ct is counted per /64, so eight addresses of one /64 hold no
// more than one would. Sandboxes of one network share a /64 but not a
// share: theirs are counted per address.
func TestOneIPv6PrefixCannotFillCT(t *testing.T) {
	const limit = 4
	nb := newNATBedWith6(t, loader.Options{CTSourceMax: limit})
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 17, Addr: webAddr6, Port: 80}))
	host, web := ap(hostAddr6, 8080), ap(webAddr6, 80)
	for i := range 2 * limit {
		client := ap(netip.MustParseAddr(fmt.Sprintf("2001:db8:99::%x", 0x100+i)), 40000)
		if out, err := exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "neigh", "replace", client.Addr().String(), "lladdr", clientMAC.String(), "dev", "up0").CombinedOutput(); err != nil {
			t.Fatalf("neighbour %s: %v: %s", client.Addr(), err, out)
		}
		nb.mustVerdict(t, "query", nb.dp.Uplink.UplinkIngress, segment(17, client, host, false), 0, tcActRedirect)
		nb.mustVerdict(t, "answer", nb.dp.Endpoint.FromContainer, segment(17, web, client, false), 0, tcActRedirect)
		nb.mustVerdict(t, "answered back", nb.dp.Uplink.UplinkIngress, segment(17, client, host, false), 0, tcActRedirect)
	}
	promoted := 0
	for i := range 2 * limit {
		client := ap(netip.MustParseAddr(fmt.Sprintf("2001:db8:99::%x", 0x100+i)), 40000)
		if _, assured := nb.state(t, flowOf(17, client, host)); assured {
			promoted++
		}
	}
	if promoted != limit {
		t.Errorf("eight addresses of one /64 hold %d flows in ct, want the /64's share %d", promoted, limit)
	}

	// Two sandboxes of one /64, each with its share.
	other := netip.MustParseAddr("fd00:17::9")
	if out, err := exec.Command("ip", "-n", nb.ns[len("/run/netns/"):], "link", "add", "ep9", "type", "veth", "peer", "name", "ep9p").CombinedOutput(); err != nil {
		t.Fatalf("add veth: %v: %s", err, out)
	}
	var ifindex int
	must(t, namespace.Do(nb.ns, func() error {
		l, err := net.InterfaceByName("ep9")
		if err == nil {
			ifindex = l.Index
		}
		return err
	}))
	must(t, nb.maps.PutIface(maps.Iface{Ifindex: uint32(ifindex), Network: 1, Addr: netip.MustParseAddr("172.17.0.9"), Addr6: other}))
	must(t, nb.maps.PutEndpoint(maps.Endpoint{Addr: other, Ifindex: uint32(ifindex), Network: 1, MAC: net.HardwareAddr{2, 0x42, 172, 17, 0, 9}}))
	dst := ap(clientAddr6, 53)
	exchange := func(src netip.AddrPort, ifindex int) bool {
		out := nb.mustVerdict(t, "query", nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), ifindex, tcActRedirect)
		nb.mustVerdict(t, "answer", nb.dp.Uplink.UplinkIngress, segment(17, dst, out.src, false), 0, tcActRedirect)
		nb.mustVerdict(t, "answered back", nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), ifindex, tcActRedirect)
		_, assured := nb.state(t, flowOf(17, src, dst))
		return assured
	}
	for port := uint16(5000); port < 5000+limit; port++ {
		if !exchange(ap(webAddr6, port), 0) {
			t.Errorf("the sandbox %s's flow %d is not in ct, within its share", webAddr6, port)
		}
	}
	if !exchange(ap(other, 5000), ifindex) {
		t.Errorf("the sandbox %s's flow is not in ct: it shares a /64 with %s, not its share", other, webAddr6)
	}
}

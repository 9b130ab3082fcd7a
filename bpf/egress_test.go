package bpf_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/maps"
)

// egressBed is a dual-stack bed whose sandbox (webAddr, webAddr6) has an
// egress list allowing allow.
func egressBed(t *testing.T, allow ...netip.Prefix) *natbed {
	t.Helper()
	nb := newNATBed6(t)
	must(t, nb.maps.ReplaceEgress(maps.Egress{Sources: []netip.Addr{webAddr, webAddr6}, Allow: allow}, maps.Egress{}))
	return nb
}

// refused runs from_container on pkt from ifindex and reports whether the
// egress list refused it (dropped and counted as drop_egress_policy, once).
func (nb *natbed) refused(t *testing.T, pkt []byte, ifindex int) bool {
	t.Helper()
	before := nb.counter(t, "from_container", "drop_egress_policy")
	ret, _ := nb.runOn(t, nb.dp.Endpoint.FromContainer, pkt, ifindex)
	n := nb.counter(t, "from_container", "drop_egress_policy") - before
	if n > 1 || (n == 1) != (ret == tcActShot) {
		t.Fatalf("verdict %d with drop_egress_policy counted %d", ret, n)
	}
	return n == 1
}

var (
	outside  = netip.MustParseAddr("10.99.0.9")
	outside6 = netip.MustParseAddr("2001:db8:99::9")
)

// A sandbox with a list reaches the allowed prefixes of both families and
// nothing else outside its network; its network (a neighbour, its gateway)
// and the groups of its link stay open.
func TestEgressListPrefixes(t *testing.T) {
	nb := egressBed(t, netip.MustParsePrefix("10.99.0.0/30"), netip.MustParsePrefix("2001:db8:99::/126"))
	for _, c := range []struct {
		pkt    []byte
		refuse bool
	}{
		{segment(6, ap(webAddr, 40000), ap(clientAddr, 80), false), false},
		{segment(17, ap(webAddr, 40001), ap(clientAddr, 53), false), false},
		{segment(6, ap(webAddr6, 40000), ap(clientAddr6, 80), false), false},
		{segment(6, ap(webAddr, 40002), ap(outside, 80), false), true},
		{segment(17, ap(webAddr, 40003), ap(outside, 53), false), true}, // another resolver
		{segment(6, ap(webAddr6, 40004), ap(outside6, 80), false), true},
		{segment(6, ap(webAddr, 40006), ap(bridgeNet.Gateway, 80), false), false},
		{segment(6, ap(webAddr6, 40007), ap(gateway6, 80), false), false},
		{segment(6, ap(webAddr, 40008), ap(netip.MustParseAddr("172.17.0.3"), 80), false), false},
		{segment(17, ap(webAddr, 40009), ap(netip.MustParseAddr("224.0.0.251"), 5353), false), false},
		{segment(17, ap(webAddr, 40010), ap(netip.MustParseAddr("239.1.1.1"), 5353), false), true},
	} {
		if got := nb.refused(t, c.pkt, 0); got != c.refuse {
			t.Errorf("packet %x: refused %v, want %v", c.pkt[14:], got, c.refuse)
		}
	}
}

// An IPv6 packet to a v4-mapped address never reaches an IPv4 destination
// the list refuses (nor one it allows: it is a martian).
func TestEgressListNoV4MappedHole(t *testing.T) {
	nb := egressBed(t, netip.MustParsePrefix("10.99.0.0/30"))
	mapped := netip.AddrFrom16(outside.As16())
	if ret, _ := nb.run(t, nb.dp.Endpoint.FromContainer, segment(6, ap(webAddr6, 40000), ap(mapped, 80), false)); ret != tcActShot {
		t.Fatalf("IPv6 to %s: verdict %d, want TC_ACT_SHOT", mapped, ret)
	}
}

// Addresses the DNS answered for an allowed name are reachable until their
// answer lapses, in either family, by the sandbox whose list allowed them.
func TestEgressListNamedAddresses(t *testing.T) {
	nb := egressBed(t)
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	must(t, nb.maps.ReplaceEgress(maps.Egress{Sources: []netip.Addr{other.addr}}, maps.Egress{}))
	now := maps.Now()
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr, Addr: clientAddr, Lapses: now + 10*time.Second}))
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr6, Addr: clientAddr6, Lapses: now + 10*time.Second}))
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr, Addr: outside, Lapses: now - time.Second}))
	if nb.refused(t, segment(6, ap(webAddr, 40000), ap(clientAddr, 80), false), 0) {
		t.Error("an address answered for an allowed name was refused")
	}
	if nb.refused(t, segment(6, ap(webAddr6, 40000), ap(clientAddr6, 80), false), 0) {
		t.Error("an IPv6 address answered for an allowed name was refused")
	}
	if !nb.refused(t, segment(6, ap(webAddr, 40001), ap(outside, 80), false), 0) {
		t.Error("an address whose answer lapsed was let through")
	}
	if !nb.refused(t, segment(6, ap(other.addr, 40002), ap(clientAddr, 80), false), other.ifindex) {
		t.Error("another listed sandbox reached an address answered to the first")
	}
	// A longer answer renews it; a shorter one never shortens it.
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr, Addr: outside, Lapses: now + 10*time.Second}))
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr, Addr: outside, Lapses: now - time.Second}))
	if nb.refused(t, segment(6, ap(webAddr, 40003), ap(outside, 80), false), 0) {
		t.Error("an address answered again was refused")
	}
	if n, err := nb.maps.ReclaimEgressNames(now + time.Hour); err != nil || n != 3 {
		t.Errorf("reclaimed %d lapsed addresses (%v), want 3", n, err)
	}
	if !nb.refused(t, segment(6, ap(webAddr, 40004), ap(clientAddr, 80), false), 0) {
		t.Error("a reclaimed address was let through")
	}
}

// ICMP leaves a listed sandbox only as echo requests to allowed addresses.
func TestEgressListICMP(t *testing.T) {
	nb := egressBed(t, netip.MustParsePrefix("10.99.0.0/30"), netip.MustParsePrefix("2001:db8:99::/126"))
	if nb.refused(t, segment(1, ap(webAddr, 7), ap(clientAddr, 0), false), 0) {
		t.Error("an echo request to an allowed address was refused")
	}
	if nb.refused(t, segment(58, ap(webAddr6, 7), ap(clientAddr6, 0), false), 0) {
		t.Error("an ICMPv6 echo request to an allowed address was refused")
	}
	if !nb.refused(t, segment(1, ap(webAddr, 8), ap(outside, 0), false), 0) {
		t.Error("an echo request to a refused address went out")
	}
	// A timestamp request (13) and an unsolicited echo reply carry data
	// as well as an echo does.
	ts := segment(1, ap(webAddr, 9), ap(clientAddr, 0), false)
	ts[34] = 13
	fixICMPChecksum(ts)
	if !nb.refused(t, ts, 0) {
		t.Error("an ICMP timestamp request to an allowed address went out")
	}
	if !nb.refused(t, echoReply(1, webAddr, clientAddr, 10), 0) {
		t.Error("an echo reply of no tracked ping went out")
	}
	if !nb.refused(t, echoReply(58, webAddr6, clientAddr6, 10), 0) {
		t.Error("an ICMPv6 echo reply of no tracked ping went out")
	}
}

// fixICMPChecksum recomputes an IPv4 ICMP message's checksum.
func fixICMPChecksum(pkt []byte) {
	pkt[36], pkt[37] = 0, 0
	c := checksum(pkt[34:], 0)
	pkt[36], pkt[37] = byte(c>>8), byte(c)
}

// A fragment whose first was not seen goes where its address may go: to a
// refused address it is refused, whatever it claims to carry.
func TestEgressListFragments(t *testing.T) {
	nb := egressBed(t, netip.MustParsePrefix("10.99.0.0/30"), netip.MustParsePrefix("2001:db8:99::/126"))
	later := fragments(bigDatagram(ap(webAddr, 5000), ap(outside, 53), 64), 77, 32)[1]
	if !nb.refused(t, later, 0) {
		t.Error("a later IPv4 fragment to a refused address went out")
	}
	later6 := ipv6Fragments(segment(17, ap(webAddr6, 5000), ap(outside6, 53), false), 78, 8)[1]
	if !nb.refused(t, later6, 0) {
		t.Error("a later IPv6 fragment to a refused address went out")
	}
	allowed := fragments(bigDatagram(ap(webAddr, 5000), ap(clientAddr, 53), 64), 79, 32)
	for i, f := range allowed {
		if nb.refused(t, f, 0) {
			t.Errorf("fragment %d to an allowed address was refused", i)
		}
	}
}

// The replies of flows opened to the sandbox (a published port's client)
// go out whatever the list says; a new flow to the same client does not.
func TestEgressListRepliesOfPublishedFlows(t *testing.T) {
	nb := egressBed(t, netip.MustParsePrefix("192.0.2.0/24"))
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv4Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), syn, 1, 0)); ret != tcActRedirect {
		t.Fatalf("inbound SYN: verdict %d", ret)
	}
	if nb.refused(t, tcpSegment(ap(webAddr, 80), ap(clientAddr, 40000), syn|ack, 100, 2), 0) {
		t.Error("the reply of a published flow was refused")
	}
	if !nb.refused(t, segment(6, ap(webAddr, 80), ap(clientAddr, 40001), false), 0) {
		t.Error("a new flow to the published flow's client went out")
	}
	// An ICMP error about a packet of a flow opened to it goes out (path
	// MTU discovery, a closed port); one about a packet of no flow it
	// holds carries what the list keeps in.
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv4Unspecified(), HostPort: 8053, Proto: 17, Addr: webAddr, Port: 53}))
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(17, ap(clientAddr, 40053), ap(hostAddr, 8053), false)); ret != tcActRedirect {
		t.Fatalf("inbound datagram: verdict %d", ret)
	}
	quoted := segment(17, ap(clientAddr, 40053), ap(webAddr, 53), false)
	if nb.refused(t, icmpError(webAddr, clientAddr, 3, 3, 0, quoted), 0) {
		t.Error("a port unreachable about a published flow's datagram was refused")
	}
	forged := segment(17, ap(clientAddr, 40054), ap(webAddr, 53), false)
	if !nb.refused(t, icmpError(webAddr, clientAddr, 3, 3, 0, forged), 0) {
		t.Error("an ICMP error about a packet of no flow went out")
	}
	// The host's own addresses are outside the sandbox's network: its
	// published ports too (a hairpin).
	if !nb.refused(t, segment(6, ap(webAddr, 40002), ap(hostAddr, 8080), false), 0) {
		t.Error("a hairpin to the host's uplink address went out")
	}
}

// A sandbox without a list is refused nothing, and a list cleared lets
// everything out again, forgetting what the DNS answered.
func TestEgressListUnlisted(t *testing.T) {
	nb := egressBed(t)
	other := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))
	if nb.refused(t, segment(6, ap(other.addr, 40000), ap(outside, 80), false), other.ifindex) {
		t.Error("a sandbox without a list was refused")
	}
	must(t, nb.maps.PutEgressName(maps.EgressName{Source: webAddr, Addr: clientAddr, Lapses: maps.Now() + time.Minute}))
	must(t, nb.maps.ReplaceEgress(maps.Egress{}, maps.Egress{Sources: []netip.Addr{webAddr, webAddr6}}))
	if nb.refused(t, segment(6, ap(webAddr, 40001), ap(outside, 80), false), 0) {
		t.Error("a sandbox whose list was cleared was refused")
	}
	if names, err := nb.maps.EgressNames(); err != nil || len(names) != 0 {
		t.Errorf("addresses answered before the list was cleared: %v (%v)", names, err)
	}
}

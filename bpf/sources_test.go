package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/maps"
)

// A publication's source lists decide who opens flows to it, on TC and on
// XDP uplinks, in both families: the most specific prefix wins, an
// address no prefix holds is refused once there is an allowed prefix, and
// a refused flow is dropped and counted as drop_source_range.
func TestPublicationSourceLists(t *testing.T) {
	pfx := netip.MustParsePrefix
	lists := maps.Sources{
		Allow: []netip.Prefix{pfx("10.99.0.0/28"), pfx("2001:db8:99::/120")},
		Deny:  []netip.Prefix{pfx("10.99.0.4/30"), pfx("2001:db8:99::2/128")},
	}
	for _, c := range []struct {
		client netip.Addr
		host   netip.Addr
		open   bool
	}{
		{netip.MustParseAddr("10.99.0.2"), hostAddr, true},
		{netip.MustParseAddr("10.99.0.5"), hostAddr, false},  // a more specific deny
		{netip.MustParseAddr("10.99.0.17"), hostAddr, false}, // outside every allow
		{netip.MustParseAddr("192.0.2.1"), hostAddr, false},
		{netip.MustParseAddr("2001:db8:99::3"), hostAddr6, true},
		{netip.MustParseAddr("2001:db8:99::2"), hostAddr6, false},
		{netip.MustParseAddr("2001:db8:98::3"), hostAddr6, false},
	} {
		for _, xdp := range []bool{false, true} {
			nb := newNATBed6(t)
			nb.xdpTargets(t, webAddr6)
			for _, all := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
				web := webAddr
				if all.Is6() {
					web = webAddr6
				}
				must(t, nb.maps.PutPublication(maps.Publication{HostAddr: all, HostPort: 8080, Proto: 6, Addr: web, Port: 80, Sources: lists}))
			}
			syn := tcpSegment(ap(c.client, 40000), ap(c.host, 8080), syn, 1, 0)
			program, ret, want := "uplink", uint32(0), uint32(tcActShot)
			if xdp {
				program, want = "uplink_xdp", xdpDrop
			}
			before := nb.counter(t, program, "drop_source_range")
			if xdp {
				ret, _ = nb.runXDP(t, syn)
			} else {
				ret, _ = nb.run(t, nb.dp.Uplink.UplinkIngress, syn)
			}
			if c.open {
				want = tcActRedirect
				if xdp {
					want = xdpRedirect
				}
			}
			if ret != want {
				t.Errorf("%s from %s: verdict %d, want %d (open %v)", program, c.client, ret, want, c.open)
			}
			refused := uint64(1)
			if c.open {
				refused = 0
			}
			if n := nb.counter(t, program, "drop_source_range") - before; n != refused {
				t.Errorf("%s from %s: %s/drop_source_range counted %d, want %d", program, c.client, program, n, refused)
			}
		}
	}
}

// The daemon's default lists hold for the publications without lists of
// their own; one with lists, even a deny alone, never falls through to
// them; and a sandbox reaching a published port (hairpin) is checked as
// a client outside is.
func TestDefaultSourceListsAndHairpin(t *testing.T) {
	nb := newNATBed(t)
	pfx := netip.MustParsePrefix
	must(t, nb.maps.PutDefaultSources(maps.Sources{Allow: []netip.Prefix{pfx("10.99.0.0/24")}}, maps.Sources{}))
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8081, Proto: 6, Addr: webAddr, Port: 81,
		Sources: maps.Sources{Deny: []netip.Prefix{pfx("10.99.0.3/32")}}}))
	outside := netip.MustParseAddr("192.0.2.1")
	for _, c := range []struct {
		client netip.Addr
		port   uint16
		want   uint32
	}{
		{clientAddr, 8080, tcActRedirect},                   // in the default's allow
		{outside, 8080, tcActShot},                          // not in it
		{outside, 8081, tcActRedirect},                      // its own list lets all but one in
		{netip.MustParseAddr("10.99.0.3"), 8081, tcActShot}, // that one
	} {
		if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, tcpSegment(ap(c.client, 40000), ap(hostAddr, c.port), syn, 1, 0)); ret != c.want {
			t.Errorf("from %s to port %d: verdict %d, want %d", c.client, c.port, ret, c.want)
		}
	}
	// The sandbox's own address is outside the default's allow.
	before := nb.counter(t, "from_container", "drop_source_range")
	nb.mustVerdict(t, "hairpin to 8080", nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 5000), ap(hostAddr, 8080), syn, 1, 0), 1, tcActShot)
	if n := nb.counter(t, "from_container", "drop_source_range") - before; n != 1 {
		t.Errorf("from_container/drop_source_range counted %d, want 1", n)
	}
	// Without a default, everyone.
	must(t, nb.maps.PutDefaultSources(maps.Sources{}, maps.Sources{Allow: []netip.Prefix{pfx("10.99.0.0/24")}}))
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, tcpSegment(ap(outside, 40001), ap(hostAddr, 8080), syn, 1, 0)); ret != tcActRedirect {
		t.Errorf("with no default lists: verdict %d, want TC_ACT_REDIRECT", ret)
	}
	if n := sourceEntries(t, nb.dp.Maps.SourceRanges); n != 2 {
		t.Errorf("source_ranges holds %d entries, want 2: 8081's deny and its rest", n)
	}
}

// A list changed applies to new flows at once; the flows it let in keep
// going until they end. A publication removed takes its lists with it.
func TestSourceListsChangeForNewFlows(t *testing.T) {
	nb := newNATBed(t)
	pfx := netip.MustParsePrefix
	open := maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}
	must(t, nb.maps.PutPublication(open))
	first := func(port uint16) []byte { return tcpSegment(ap(clientAddr, port), ap(hostAddr, 8080), syn, 1, 0) }
	nb.mustVerdict(t, "before the list", nb.dp.Uplink.UplinkIngress, first(40000), 0, tcActRedirect)

	closed := open
	closed.Sources = maps.Sources{Allow: []netip.Prefix{pfx("192.0.2.0/24")}}
	must(t, nb.maps.ReplaceSources(closed, open.Sources))
	nb.mustVerdict(t, "a new flow after the list", nb.dp.Uplink.UplinkIngress, first(40001), 0, tcActShot)
	nb.mustVerdict(t, "the flow let in before", nb.dp.Uplink.UplinkIngress, tcpSegment(ap(clientAddr, 40000), ap(hostAddr, 8080), ack, 2, 1),
		0, tcActRedirect)

	must(t, nb.maps.ReplaceSources(open, closed.Sources))
	nb.mustVerdict(t, "a new flow once the list is gone", nb.dp.Uplink.UplinkIngress, first(40002), 0, tcActRedirect)
	must(t, nb.maps.ReplaceSources(closed, open.Sources))
	must(t, nb.maps.DeletePublications(closed))
	if n := sourceEntries(t, nb.dp.Maps.SourceRanges); n != 0 {
		t.Errorf("source_ranges holds %d entries after the publication went, want none", n)
	}
}

// sourceEntries counts the entries of source_ranges m.
func sourceEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var (
		n int
		k bpf.DatapathSourceKey
		v bpf.DatapathSourceAction
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	must(t, it.Err())
	return n
}

// A publication whose lists do not fit in source_ranges (262 144 entries,
// shared by every publication) is refused with one short error and
// leaves nothing behind: the entries it did write, its rest among them
// (written first), would otherwise decide for the next publication of
// the same host port, which then never falls through to the daemon's
// default. Here a port published on [::] with a deny list fails for want
// of room, leaving its "rest: allow"; once room is made, the same port
// published without lists of its own must refuse the IPv6 client the
// default refuses (an allow of IPv4's 10.99.0.0/24 alone).
func TestPublicationWhoseListsDoNotFitLeavesNothing(t *testing.T) {
	nb := newNATBed6(t)
	pfx := netip.MustParsePrefix
	must(t, nb.maps.PutDefaultSources(maps.Sources{Allow: []netip.Prefix{pfx("10.99.0.0/24")}}, maps.Sources{}))
	// The default holds 4 entries; fill the rest of the trie but for one
	// slot with another publication's prefixes.
	m := nb.dp.Maps.SourceRanges
	filler := bpf.DatapathSourceKey{Prefixlen: 8 * 36, Pub: bpf.DatapathPublicationKey{Port: 9, Proto: 17}}
	filler.Addr.B[0], filler.Addr.B[1] = 0x20, 0x01
	free := int(m.MaxEntries()) - sourceEntries(t, m) - 1
	for i := range free {
		binary.BigEndian.PutUint32(filler.Addr.B[12:], uint32(i))
		must(t, m.Put(filler, bpf.DatapathSourceActionSOURCE_DENY))
	}
	pub := maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr6, Port: 80}
	listed := pub
	listed.Sources = maps.Sources{Deny: []netip.Prefix{pfx("2001:db8:bad::/48"), pfx("2001:db8:bad1::/48"), pfx("2001:db8:bad2::/48")}}
	before := sourceEntries(t, m)
	err := nb.maps.PutPublication(listed)
	if err == nil {
		t.Fatal("a publication whose lists do not fit: no error")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error of %d lines, want one: %v", strings.Count(err.Error(), "\n")+1, err)
	}
	if n := sourceEntries(t, m) - before; n != 0 {
		t.Errorf("the failed publication left %d entries in source_ranges, want none", n)
	}
	// Room again (as once other publications went), and the port
	// published without lists: the daemon's default decides.
	for i := range free {
		binary.BigEndian.PutUint32(filler.Addr.B[12:], uint32(i))
		must(t, m.Delete(filler))
	}
	must(t, nb.maps.PutPublication(pub))
	nb.mustVerdict(t, "an IPv6 client the default refuses", nb.dp.Uplink.UplinkIngress,
		tcpSegment(ap(clientAddr6, 40000), ap(hostAddr6, 8080), syn, 1, 0), 0, tcActShot)
}

// The flows a list let in go on until they end; a new connection is a new
// flow, even on the tuple of one that ended. Here a client's connection
// closes (both FINs: TIME_WAIT), its address is then refused, and it
// opens a new connection from the same port: conntrack reopens the closed
// entry on the SYN, as netfilter does, but netfilter makes that a new
// flow that meets the rules again. Without the check a refused client
// keeps opening connections as long as it reuses a tuple still in
// conntrack (and each reuse leaves another closed entry to reuse).
func TestReopenedConnectionIsANewFlow(t *testing.T) {
	nb := newNATBed(t)
	open := maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}
	must(t, nb.maps.PutPublication(open))
	client, host, web := ap(clientAddr, 40000), ap(hostAddr, 8080), ap(webAddr, 80)
	in := func(what string, flags uint8, seq, ackSeq uint32, want uint32) {
		t.Helper()
		nb.mustVerdict(t, what, nb.dp.Uplink.UplinkIngress, tcpSegment(client, host, flags, seq, ackSeq), 0, want)
	}
	out := func(what string, flags uint8, seq, ackSeq uint32) {
		t.Helper()
		nb.mustVerdict(t, what, nb.dp.Endpoint.FromContainer, tcpSegment(web, client, flags, seq, ackSeq), 0, tcActRedirect)
	}
	in("SYN", syn, 100, 0, tcActRedirect)
	out("SYN-ACK", syn|ack, 5000, 101)
	in("ACK", ack, 101, 5001, tcActRedirect)
	in("FIN", fin|ack, 101, 5001, tcActRedirect)
	out("FIN", fin|ack, 5001, 102)
	if st, _ := nb.state(t, flowOf(6, client, host)); st != bpf.DatapathCtStateCT_TCP_TIME_WAIT {
		t.Fatalf("after both FINs: state %v, want TIME_WAIT", st)
	}

	closed := open
	closed.Sources = maps.Sources{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	must(t, nb.maps.ReplaceSources(closed, open.Sources))
	before := nb.counter(t, "uplink", "drop_source_range")
	in("a new connection from the same port, after the list", syn, 9000, 0, tcActShot)
	if d := nb.counter(t, "uplink", "drop_source_range") - before; d != 1 {
		t.Errorf("uplink/drop_source_range counted %d, want 1", d)
	}
}

package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/pools"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// A removed endpoint's flows go with it: the conntrack entries whose
// tuple or translation holds its address are gone before the next
// sandbox given that address is attached, whether the endpoint went with
// its sandbox or by a disconnect; the entries of other flows stay.
func TestRemovedEndpointConntrackFlushed(t *testing.T) {
	te := newTestEngine(t)
	app := te.name("app")
	if _, err := te.CreateNetwork(NetworkSpec{Name: app, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	addr, other := netip.MustParseAddr("172.19.0.7"), netip.MustParseAddr("172.19.0.8")
	host, server, client := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.9"), netip.MustParseAddr("10.99.0.2")
	flow := func(src, dst netip.AddrPort) bpf.DatapathFlow {
		return bpf.DatapathFlow{Saddr: bpf.DatapathAddr{B: src.Addr().As16()}, Daddr: bpf.DatapathAddr{B: dst.Addr().As16()},
			Sport: src.Port(), Dport: dst.Port(), Proto: 17}
	}
	v4 := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(v4(a), port) }
	expires := uint64(dpmaps.Now() + time.Hour)
	// A masqueraded flow of the endpoint (both directions), a published
	// one, and a neighbour's masqueraded flow.
	seed := func() {
		for _, c := range []struct {
			table    *ebpf.Map
			key, nat bpf.DatapathFlow
		}{
			{te.dp.Maps.Ct, flow(ap(addr, 5000), ap(server, 53)), flow(ap(host, 5000), ap(server, 53))},
			{te.dp.Maps.Ct, flow(ap(server, 53), ap(host, 5000)), flow(ap(server, 53), ap(addr, 5000))},
			{te.dp.Maps.CtNew, flow(ap(client, 40000), ap(host, 8080)), flow(ap(client, 40000), ap(addr, 80))},
			{te.dp.Maps.Ct, flow(ap(other, 5000), ap(server, 53)), flow(ap(host, 5001), ap(server, 53))},
		} {
			if err := c.table.Put(c.key, bpf.DatapathCtEntry{Nat: c.nat, Expires: expires, Ifindex: 99}); err != nil {
				t.Fatal(err)
			}
		}
	}
	left := func(what string) {
		t.Helper()
		var n int
		for _, table := range []*ebpf.Map{te.dp.Maps.Ct, te.dp.Maps.CtNew} {
			var k bpf.DatapathFlow
			var v bpf.DatapathCtEntry
			for it := table.Iterate(); it.Next(&k, &v); {
				for _, a := range []bpf.DatapathAddr{k.Saddr, k.Daddr, v.Nat.Saddr, v.Nat.Daddr} {
					if dpmaps.Addr(a) == addr {
						t.Errorf("%s: %s still has the entry %+v -> %+v", what, table, k, v.Nat)
					}
				}
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d entries left, want the neighbour's flow alone", what, n)
		}
	}

	a, b, c := te.name("a"), te.name("b"), te.name("c")
	if _, err := te.CreateSandbox(SandboxSpec{Name: a, Networks: []string{app}, IP: addr}); err != nil {
		t.Fatal(err)
	}
	seed()
	if err := te.RemoveSandbox(a, false); err != nil {
		t.Fatal(err)
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: b, Networks: []string{app}, IP: addr}); err != nil {
		t.Fatal(err)
	}
	left("a sandbox removed")

	seed()
	if err := te.Disconnect(app, b); err != nil {
		t.Fatal(err)
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: c, Networks: []string{app}, IP: addr}); err != nil {
		t.Fatal(err)
	}
	left("a network disconnected")
}

package engine

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/pools"
)

// egressEntries reads egress_allow: the prefixes of each listed source,
// its listing entry as the invalid prefix.
func (te testEngine) egressEntries(t *testing.T) map[netip.Addr][]string {
	t.Helper()
	out := map[netip.Addr][]string{}
	var (
		k bpf.DatapathEgressKey
		v bpf.DatapathEgressAction
	)
	it := te.dp.Maps.EgressAllow.Iterate()
	for it.Next(&k, &v) {
		src := netip.AddrFrom16(k.Src.B).Unmap()
		dst := netip.AddrFrom16(k.Dst.B).Unmap()
		bits := int(k.Prefixlen) - 128
		if dst.Is4() {
			bits -= 96
		}
		entry := "listed"
		if v == bpf.DatapathEgressActionEGRESS_ALLOW {
			entry = netip.PrefixFrom(dst, bits).String()
		}
		out[src] = append(out[src], entry)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A sandbox's egress list is written for each of its addresses as it is
// created, replaced and cleared live by UpdateSandbox, refused whole when
// bad, and goes with the sandbox; a network's list holds for its
// sandboxes without one. The maps always hold what reconcile would write.
func TestEgressListLifecycle(t *testing.T) {
	te := newTestEngine(t)
	app, ci := te.name("app"), te.name("ci")
	enable := true
	if _, err := te.CreateNetwork(NetworkSpec{Name: app, EnableIPv6: &enable, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")},
		IPv6: pools.Spec{Subnet: netip.MustParsePrefix("fd00:19::/64")}}); err != nil {
		t.Fatal(err)
	}
	list, err := egress.Parse("a.test", "10.90.0.0/28", "2001:db8::/64")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := te.CreateSandbox(SandboxSpec{Name: ci, Networks: []string{app}, EgressAllow: list})
	if err != nil {
		t.Fatal(err)
	}
	ep := sb.Endpoints[0]
	check := func(what string, want map[netip.Addr]int) {
		t.Helper()
		got := te.egressEntries(t)
		for src, n := range want {
			if len(got[src]) != n {
				t.Errorf("%s: %s has %v, want %d entries", what, src, got[src], n)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: egress_allow lists %d sources, want %d", what, len(got), len(want))
		}
		if d, err := te.Drift(); err != nil || d.MapWrites != 0 {
			t.Errorf("%s: a reconcile would write %d entries (%v), want none", what, d.MapWrites, err)
		}
	}
	check("created", map[netip.Addr]int{ep.Addr: 2, ep.Addr6: 2})

	only := egress.List{"192.0.2.0/24"}
	if _, err := te.UpdateSandbox(ci, SandboxUpdate{EgressAllow: &only}); err != nil {
		t.Fatal(err)
	}
	check("updated", map[netip.Addr]int{ep.Addr: 2, ep.Addr6: 1})

	// The default network has no resolver to learn names by.
	names := egress.List{"a.test"}
	if _, err := te.CreateSandbox(SandboxSpec{Name: te.name("plain"), EgressAllow: names}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a name on the default network: %v, want it refused", err)
	}
	check("refused", map[netip.Addr]int{ep.Addr: 2, ep.Addr6: 1})

	var none egress.List
	if _, err := te.UpdateSandbox(ci, SandboxUpdate{EgressAllow: &none}); err != nil {
		t.Fatal(err)
	}
	check("cleared", map[netip.Addr]int{})

	listed := te.name("listed")
	if _, err := te.CreateNetwork(NetworkSpec{Name: listed, Options: map[string]string{OptEgressAllow: "10.90.0.0/28"}}); err != nil {
		t.Fatal(err)
	}
	member, err := te.CreateSandbox(SandboxSpec{Name: te.name("member"), Networks: []string{listed}})
	if err != nil {
		t.Fatal(err)
	}
	check("a network's list", map[netip.Addr]int{member.Endpoints[0].Addr: 2})
	if _, err := te.UpdateSandbox(ci, SandboxUpdate{EgressAllow: &list}); err != nil {
		t.Fatal(err)
	}
	if err := te.RemoveSandbox(ci, true); err != nil {
		t.Fatal(err)
	}
	check("removed", map[netip.Addr]int{member.Endpoints[0].Addr: 2})
}

// No source holds more than maxEgressAnswers live answers: past them a
// new address is refused (the resolver answers SERVFAIL), an address it
// holds is renewed, and another source is not held back.
func TestEgressAnswersBounded(t *testing.T) {
	te := newTestEngine(t)
	src, other := netip.MustParseAddr("172.19.0.9"), netip.MustParseAddr("172.19.0.10")
	addrs := make([]netip.Addr, 0, 4096)
	for i := range 4096 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
	}
	if err := te.wiring.LearnEgress([]netip.Addr{src}, "many.test.", addrs, time.Minute); err != nil {
		t.Fatal(err)
	}
	more := []netip.Addr{netip.MustParseAddr("10.2.0.1")}
	if err := te.wiring.LearnEgress([]netip.Addr{src}, "more.test.", more, time.Minute); err == nil {
		t.Error("a source past its bound learnt a new address")
	}
	if err := te.wiring.LearnEgress([]netip.Addr{src}, "many.test.", addrs[:1], time.Minute); err != nil {
		t.Errorf("an address the source holds was not renewed: %v", err)
	}
	if err := te.wiring.LearnEgress([]netip.Addr{other}, "more.test.", more, time.Minute); err != nil {
		t.Errorf("another source was held back: %v", err)
	}
	answers, err := te.EgressAnswers(src)
	if err != nil || len(answers) != 4096 || answers[0].Name != "many.test." {
		t.Errorf("%d answers of %s (%v), want 4096 named many.test.", len(answers), src, err)
	}
}

package maps_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/maps"
)

// Reconcile rebuilds the egress lists from the records: a sync writes
// each source's listing entry and prefixes of its family, removes the
// lists no record has, and leaves the addresses answered by name, which
// the datapath lets lapse, alone.
func TestSyncEgressLists(t *testing.T) {
	m := privateMaps(t)
	v4, v6 := netip.MustParseAddr("172.19.0.2"), netip.MustParseAddr("fd00:19::2")
	gone := netip.MustParseAddr("172.19.0.3")
	list := maps.Egress{Sources: []netip.Addr{v4, v6},
		Allow: []netip.Prefix{netip.MustParsePrefix("10.90.0.0/28"), netip.MustParsePrefix("2001:db8::/64")}}
	if err := m.ReplaceEgress(maps.Egress{Sources: []netip.Addr{gone}}, maps.Egress{}); err != nil {
		t.Fatal(err)
	}
	if err := m.PutEgressName(maps.EgressName{Source: v4, Addr: netip.MustParseAddr("192.0.2.1"), Lapses: maps.Now() + time.Minute}); err != nil {
		t.Fatal(err)
	}
	want := maps.Desired{Egress: []maps.Egress{list}}
	p, err := m.PlanSync(want)
	if err != nil {
		t.Fatal(err)
	}
	// Two listing entries and a prefix each written, the stale source's
	// listing deleted.
	if got := p.Writes(); got != 5 {
		t.Errorf("the plan writes %d entries, want 5", got)
	}
	if _, err := m.ApplySync(p, maps.Changed{}); err != nil {
		t.Fatal(err)
	}
	if p, err = m.PlanSync(want); err != nil || p.Writes() != 0 {
		t.Errorf("after the sync a plan writes %d entries (%v), want none", p.Writes(), err)
	}
	if names, err := m.EgressNames(); err != nil || len(names) != 1 {
		t.Errorf("answered addresses after the sync: %v (%v), want the one", names, err)
	}
	if err := m.DeleteEgress(v4, v6); err != nil {
		t.Fatal(err)
	}
	if p, err = m.PlanSync(maps.Desired{}); err != nil || p.Writes() != 0 {
		t.Errorf("after DeleteEgress a plan for no lists writes %d entries (%v), want none", p.Writes(), err)
	}
	if names, _ := m.EgressNames(); len(names) != 0 {
		t.Errorf("answered addresses after DeleteEgress: %v", names)
	}
}

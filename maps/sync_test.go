package maps_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// A sync plan writes only what differs from the maps, and its writes
// leave alone the entries of records that changed after it was made.
func TestSyncPlanWritesOnlyWhatDiffers(t *testing.T) {
	m := privateMaps(t)

	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	network := maps.Network{Index: 1, Subnet: netip.MustParsePrefix("172.19.0.0/16"), Gateway: netip.MustParseAddr("172.19.0.1")}
	endpoint := func(last byte, ifindex uint32) maps.Endpoint {
		return maps.Endpoint{Addr: netip.AddrFrom4([4]byte{172, 19, 0, last}), Ifindex: ifindex, Network: 1, MAC: mac}
	}
	pub := maps.Publication{HostPort: 8080, Proto: 6, Addr: endpoint(2, 0).Addr, Port: 80}
	want := maps.Desired{Networks: []maps.Network{network}, Endpoints: []maps.Endpoint{endpoint(2, 7), endpoint(3, 8)},
		Publications: []maps.Publication{pub}}

	plan := func(d maps.Desired) maps.SyncPlan {
		t.Helper()
		p, err := m.PlanSync(d)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	apply := func(p maps.SyncPlan, changed maps.Changed) {
		t.Helper()
		if _, err := m.ApplySync(p, changed); err != nil {
			t.Fatal(err)
		}
	}
	// Network, subnet, two endpoints, publication, its held port and target.
	if got := plan(want).Writes(); got != 7 {
		t.Errorf("a plan for empty maps writes %d entries, want 7", got)
	}
	apply(plan(want), maps.Changed{})
	if got := plan(want).Writes(); got != 0 {
		t.Errorf("a plan for maps that hold what is wanted writes %d entries, want none", got)
	}

	// A change writes 172.19.0.4 and removes 172.19.0.3 after the records
	// were read: a plan from those records and the maps as they are now
	// deletes the one and writes the other back.
	if err := m.PutEndpoint(endpoint(4, 9)); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteEndpoint(endpoint(3, 8).Addr); err != nil {
		t.Fatal(err)
	}
	// Behind everyone's back: an entry the plan repairs.
	if err := m.PutEndpoint(endpoint(2, 99)); err != nil {
		t.Fatal(err)
	}
	stale := plan(want)
	if got := stale.Writes(); got != 3 {
		t.Fatalf("the stale plan writes %d entries, want 3", got)
	}
	apply(stale, maps.Changed{Then: maps.Desired{Endpoints: []maps.Endpoint{endpoint(3, 8)}}, Now: maps.Desired{Endpoints: []maps.Endpoint{endpoint(4, 9)}}})
	now := want
	now.Endpoints = []maps.Endpoint{endpoint(2, 7), endpoint(4, 9)}
	if got := plan(now).Writes(); got != 0 {
		t.Errorf("after the plan's writes, the maps differ in %d entries from the changes' and the repair's", got)
	}
}

// A host port's count that a changed record shares with another is
// written as the plan wants it, less the changed record's count then,
// plus its count now: neither left as it was nor planned without it.
func TestSyncPlanCountsSharedPortsWithTheChanges(t *testing.T) {
	m := privateMaps(t)
	web := func(host string) maps.Publication {
		return maps.Publication{HostAddr: netip.MustParseAddr(host), HostPort: 443, Proto: 6, Addr: netip.MustParseAddr("172.19.0.2"), Port: 443}
	}
	a, b := web("10.0.0.1"), web("10.0.0.2")
	// a's publication went missing behind the daemon's back; b's is there.
	if err := m.PutPublication(b); err != nil {
		t.Fatal(err)
	}
	p, err := m.PlanSync(maps.Desired{Publications: []maps.Publication{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	// b is unpublished before the plan is applied.
	if err := m.DeletePublications(b); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ApplySync(p, maps.Changed{Then: maps.Desired{Publications: []maps.Publication{b}}}); err != nil {
		t.Fatal(err)
	}
	after, err := m.PlanSync(maps.Desired{Publications: []maps.Publication{a}})
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Writes(); n != 0 {
		t.Errorf("after the plan repaired a's publication while b was unpublished, the maps differ from a alone in %d entries", n)
	}
}

// privateMaps are the maps of a private datapath.
func privateMaps(t *testing.T) *maps.Maps {
	t.Helper()
	testenv.RequirePrivileges(t)
	dp, err := loader.LoadUnpinned()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	return maps.New(&dp.Maps)
}

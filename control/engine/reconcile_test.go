package engine

import (
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Reconcile works out the maps' writes from the store and the maps read
// without the engine's lock, and writes them under it. A sandbox created
// and one removed between those reads must keep what their changes
// wrote: the new one its entries, interface and published port, the
// removed one none (issue 24).
func TestReconcileLeavesWhatChangesWroteMeanwhile(t *testing.T) {
	te := newTestEngine(t)
	n := te.name("n")
	if _, err := te.CreateNetwork(NetworkSpec{Name: n, IPv4: PoolSpec{Subnet: netip.MustParsePrefix("172.25.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	create := func(name string, port uint16) {
		t.Helper()
		if _, err := te.CreateSandbox(SandboxSpec{Name: name, Networks: []string{n},
			Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: port, Port: 80}}}); err != nil {
			t.Fatal(err)
		}
	}
	gone, kept, fresh := te.name("gone"), te.name("kept"), te.name("fresh")
	create(gone, 18001)
	create(kept, 18002)
	beforeMapsRead = func() {
		beforeMapsRead = func() {}
		create(fresh, 18003)
		if err := te.RemoveSandbox(gone, true); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { beforeMapsRead = func() {} })
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}

	host, err := te.readHost()
	if err != nil {
		t.Fatal(err)
	}
	s, err := te.readState()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := te.planWhole(s, host)
	if err != nil {
		t.Fatal(err)
	}
	if n := plan.maps.Writes(); n != 0 {
		t.Errorf("after a reconcile during which %s was created and %s removed, the maps differ from the store in %d entries", fresh, gone, n)
	}
	if len(plan.leftovers) != 0 || len(plan.strayPins) != 0 {
		t.Errorf("after the reconcile, interfaces %v and pins %v are left that no record names", plan.leftovers, plan.strayPins)
	}
	var sb = s.sbs[0]
	for _, x := range s.sbs {
		if x.Name == fresh {
			sb = x
		}
	}
	if sb.Name != fresh {
		t.Fatalf("%s is not in the store", fresh)
	}
	if _, err := te.link(t, sb.Endpoints[0].HostSide); err != nil {
		t.Errorf("the reconcile removed the host side of %s, created during it: %v", fresh, err)
	}
}

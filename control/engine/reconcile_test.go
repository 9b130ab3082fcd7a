package engine

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/reconcile"
)

// Reconcile works out the maps' writes from the store and the maps read
// without the engine's lock, and writes them under it. A sandbox created
// and one removed between those reads must keep what their changes
// wrote: the new one its entries, interface and published port, the
// removed one none (issue 24).
func TestReconcileLeavesWhatChangesWroteMeanwhile(t *testing.T) {
	te := newTestEngine(t)
	n := te.name("n")
	if _, err := te.CreateNetwork(NetworkSpec{Name: n, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.25.0.0/16")}}); err != nil {
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

	drift := te.drift(t)
	if n := drift.MapWrites; n != 0 {
		t.Errorf("after a reconcile during which %s was created and %s removed, the maps differ from the store in %d entries", fresh, gone, n)
	}
	if len(drift.Leftovers) != 0 || len(drift.StrayPins) != 0 {
		t.Errorf("after the reconcile, interfaces %v and pins %v are left that no record names", drift.Leftovers, drift.StrayPins)
	}
	_, sbs, err := te.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sb = sbs[0]
	for _, x := range sbs {
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

// A CNI DEL and ADD of the same container and interface (a restart) make
// its host side again under the same name, with another ifindex: a
// reconcile that read the host before must leave the new interface's
// entries, not delete them as unknown (issue 24).
func TestReconcileLeavesAnInterfaceMadeAgainMeanwhile(t *testing.T) {
	te := newTestEngine(t)
	n := te.name("n")
	if _, err := te.CreateNetwork(NetworkSpec{Name: n, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.26.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	ns := containerNS(t, te, "c1")
	attach := func() {
		t.Helper()
		if _, _, _, err := te.External().Attach(attachment("c1", n), ns, nil, ports.Sources{}, false); err != nil {
			t.Fatal(err)
		}
	}
	attach()
	t.Cleanup(func() { te.External().DeleteEndpoint(attachment("c1", n).ID) })
	beforeMapsRead = func() {
		beforeMapsRead = func() {}
		if err := te.External().DeleteEndpoint(attachment("c1", n).ID); err != nil {
			t.Fatal(err)
		}
		attach()
	}
	t.Cleanup(func() { beforeMapsRead = func() {} })
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if drift := te.drift(t); drift.MapWrites != 0 {
		t.Errorf("after a reconcile during which c1's attachment was made again, the maps differ from the store in %d entries", drift.MapWrites)
	}
}

// drift is what a reconcile would write now: nothing, when the maps and
// interfaces are as the store has them.
func (te testEngine) drift(t *testing.T) reconcile.Drift {
	t.Helper()
	d, err := te.reconciler.Drift()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Reconciles wait for each other: one's repairs of an endpoint, which no
// store change records, would be undone by another's plan made before
// them.
func TestReconcilesWaitForEachOther(t *testing.T) {
	te := newTestEngine(t)
	var inside atomic.Int32
	var overlapped atomic.Bool
	var start sync.Once
	second := make(chan error, 1)
	beforeMapsRead = func() {
		if inside.Add(1) > 1 {
			overlapped.Store(true)
		}
		defer inside.Add(-1)
		start.Do(func() { // the first: start another and give it time to overlap
			go func() { second <- te.Reconcile() }()
			time.Sleep(time.Second)
		})
	}
	t.Cleanup(func() { beforeMapsRead = func() {} })
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if overlapped.Load() {
		t.Error("two reconciles worked out their plans at once")
	}
}

package engine

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// An address refused on an overlay network is said once, naming the
// network once, as on a bridge network: not "network X: network X: …".
func TestOverlayAddressErrorNamesTheNetworkOnce(t *testing.T) {
	te := newClusterEngine(t)
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.7.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = te.CreateSandbox(SandboxSpec{Name: te.name("web"), Networks: []string{n.Name}, IP: netip.MustParseAddr("10.7.0.1")})
	if err == nil || strings.Count(err.Error(), "network "+n.Name) != 1 || !strings.Contains(err.Error(), "10.7.0.1") {
		t.Errorf("the gateway's address asked for: %v; want the network and the address named once", err)
	}
}

// While the store is out of reach, bringing the host in line with a state
// (here: addresses to take again after a lapsed lease) waits one
// request's budget at most, not one per endpoint: following the cluster
// waits for it.
func TestApplyClusterDuringOutageHoldsTheLockBriefly(t *testing.T) {
	te, etcd := newClusterEngineAndStore(t)
	ctx := context.Background()
	n := te.overlayNetwork(t)
	for _, name := range []string{"a", "b"} {
		if _, err := te.CreateSandbox(SandboxSpec{Name: te.name(name), Networks: []string{n.Name}}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Addresses[n.ID]) != 2 {
		t.Fatalf("addresses in the cluster: %v, want 2", st.Addresses[n.ID])
	}
	st.Addresses = map[string][]cluster.Address{} // as after the lease lapsed
	etcd.Stop(0)
	t0 := time.Now()
	te.clusterSync.Apply(ctx, st)
	if d := time.Since(t0); d > 6*time.Second {
		t.Errorf("applying a state with the store out of reach took %s", d.Round(100*time.Millisecond))
	}
}

// webOnOverlay creates an overlay network "ov" and a sandbox "web" on it.
func (te testEngine) webOnOverlay(t *testing.T) (store.Network, store.Sandbox) {
	t.Helper()
	n := te.overlayNetwork(t)
	sb, err := te.CreateSandbox(SandboxSpec{Name: te.name("web"), Networks: []string{n.Name}})
	if err != nil {
		t.Fatal(err)
	}
	return n, sb
}

// An endpoint removed while the store does not answer gives its address
// back once the store answers again: the request to do it (nudgeCluster)
// is not dropped because the one read it makes failed.
func TestAddressReleasedAfterABlip(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	n, sb := te.webOnOverlay(t)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(te.cfg.NetNS)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "set", "lo", "down") // etcd listens there: a blip
	if err := te.RemoveSandbox(sb.Name, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second) // the nudge's read of the store fails
	ip("link", "set", "lo", "up")
	for deadline := time.Now().Add(6 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		as, err := te.cluster.Addresses(ctx, n.ID)
		if err == nil && len(as) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("6 s after the store answered again, the removed endpoint's address is still held: %v, %v", as, err)
		}
	}
}

// While the store is out of reach, what the cluster asks of this host
// (the address of a removed sandbox to give back) waits for it without
// holding the engine: local changes go on at their own pace.
func TestClusterOutageLeavesLocalChangesAlone(t *testing.T) {
	te, etcd := newClusterEngineAndStore(t)
	ov, sb := te.name("ov"), te.name("sb")
	if _, err := te.CreateNetwork(NetworkSpec{Name: ov, Driver: store.DriverOverlay}); err != nil {
		t.Fatal(err)
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: sb, Networks: []string{ov}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the watch brings the sandbox's address
	etcd.Stop(0)
	if err := te.RemoveSandbox(sb, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // giving its address back is under way
	start := time.Now()
	if _, err := te.CreateNetwork(NetworkSpec{Name: te.name("local")}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a bridge network took %s to create while the store was out of reach", d.Round(time.Millisecond))
	}
}

// While the store is out of reach, a sandbox being created on an overlay
// network waits for it (and fails, saying so, leaving nothing) without
// holding the engine: local changes meanwhile go on at their own pace.
func TestOverlayCreateDuringOutageLeavesLocalChangesAlone(t *testing.T) {
	te, etcd := newClusterEngineAndStore(t)
	ov, sb := te.name("ov"), te.name("sb")
	if _, err := te.CreateNetwork(NetworkSpec{Name: ov, Driver: store.DriverOverlay}); err != nil {
		t.Fatal(err)
	}
	etcd.Stop(0)
	created := make(chan error, 1)
	go func() {
		_, err := te.CreateSandbox(SandboxSpec{Name: sb, Networks: []string{ov}})
		created <- err
	}()
	time.Sleep(300 * time.Millisecond) // the create waits for the store
	start := time.Now()
	if _, err := te.CreateNetwork(NetworkSpec{Name: te.name("local")}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a bridge network took %s to create while a sandbox on an overlay waited for the store", d.Round(time.Millisecond))
	}
	if err := <-created; err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), ov) {
		t.Errorf("create on %s with the store out of reach: %v; want it unreachable, naming the network", ov, err)
	}
	if err := te.store.View(func(tx *store.Tx) error { _, err := tx.Sandbox(sb); return err }); err == nil {
		t.Errorf("the failed create left sandbox %s", sb)
	}
}

// An address another host took while this host's lease had lapsed cannot
// be taken again until that host gives it up: this host says so once,
// naming the sandbox, the address and the host that has it, and in its
// status, but does not try again on a timer, only when the cluster
// changes. Once the address is free, it is taken again, and the status
// clears.
func TestAddressTakenMeanwhileIsReportedNotRetried(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	n, sb := te.webOnOverlay(t)
	ep := sb.Endpoints[0]
	far := te.joinFar(t)
	// What a lapse and another host's create leave, while this host does
	// not follow (it waits for the engine's lock).
	te.mu.Lock()
	err := te.cluster.ReleaseAddress(ctx, n.ID, ep.Addr, ep.ID)
	if err == nil {
		_, err = far.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "far-ep", Addr: ep.Addr, Sandbox: "intruder"})
	}
	te.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	conflicts := func() []string {
		st, err := te.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Cluster.Conflicts
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c := conflicts(); len(c) == 1 && strings.Contains(c[0], sb.Name) && strings.Contains(c[0], ep.Addr.String()) &&
			strings.Contains(c[0], "intruder") && strings.Contains(c[0], "192.0.2.9") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("status conflicts 5 s after another host took %s: %q; want one naming %s, the address, intruder and 192.0.2.9", ep.Addr, c, sb.Name)
		}
	}
	st, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if te.clusterSync.Apply(ctx, st) {
		t.Error("an address another host has is tried again on a timer")
	}
	if err := far.ReleaseAddress(ctx, n.ID, ep.Addr, "far-ep"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		as, err := te.cluster.Addresses(ctx, n.ID)
		if err == nil && len(as) == 1 && as[0].Owner == ep.ID && len(conflicts()) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("5 s after the address was free: held %+v (%v), conflicts %q; want it %s's again, and none", as, err, conflicts(), sb.Name)
		}
	}
}

// stopFollowing stops te's following of the cluster, so the test applies
// states itself.
func (te testEngine) stopFollowing() { te.clusterSync.Stop() }

// mirrored is the ID of te's network called name, "" for none.
func (te testEngine) mirrored(t *testing.T, name string) string {
	t.Helper()
	var id string
	te.store.View(func(tx *store.Tx) error {
		n, err := tx.Network(name)
		if err == nil {
			id = n.ID
		}
		return nil
	})
	return id
}

// An overlay network removed and another created in its stead (same
// name; and, being the lowest free, the same /24 and VNI), seen by this
// host in one state (the daemon restarted meanwhile, or the watch
// coalesced them), is mirrored in that pass: the old mirror, in its way
// (name, pool, route, VXLAN device), goes first. It was mirrored first,
// and its conflict with the old one was not tried again on the timer.
func TestRecreatedOverlayIsMirroredInOnePass(t *testing.T) {
	for _, sameName := range []bool{true, false} {
		t.Run(map[bool]string{true: "same name", false: "other name"}[sameName], func(t *testing.T) {
			te := newClusterEngine(t)
			te.stopFollowing()
			ctx := context.Background()
			apply := func() bool {
				st, err := te.cluster.State(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return te.clusterSync.Apply(ctx, st)
			}
			// As another host would: straight into the cluster.
			old, err := te.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: store.NewID(), Name: te.name("ov")})
			if err != nil {
				t.Fatal(err)
			}
			apply()
			if te.mirrored(t, old.Name) != old.ID {
				t.Fatalf("network %s not mirrored", old.Name)
			}
			if err := te.cluster.RemoveNetwork(ctx, old.ID); err != nil {
				t.Fatal(err)
			}
			name := old.Name
			if !sameName {
				name = te.name("ov2")
			}
			cn, err := te.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: store.NewID(), Name: name})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("old: %s %s VNI %d; new: %s %s VNI %d", old.Name, old.Subnet, old.VNI, cn.Name, cn.Subnet, cn.VNI)
			failed := apply()
			if te.mirrored(t, cn.Name) != cn.ID {
				conflicts := te.clusterSync.Conflicts()
				t.Errorf("network %s, in place of %s, not mirrored (to be tried again on the timer: %v); conflicts %q", cn.Name, old.Name, failed, conflicts)
			}
		})
	}
}

// The cluster advertise address missing for a moment from the host's
// interfaces (DHCP renewing it, the interface being brought up at boot)
// is a failure tried again on the timer, not a conflict waiting for a
// change: a network another host creates meanwhile is mirrored once the
// address is back.
func TestAdvertiseAddressBackIsRetried(t *testing.T) {
	te := newClusterEngine(t)
	te.stopFollowing()
	ctx := context.Background()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(te.cfg.NetNS)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("addr", "del", "192.0.2.1/24", "dev", "under0")
	cn, err := te.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: store.NewID(), Name: te.name("ov")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failed := te.clusterSync.Apply(ctx, st)
	ip("addr", "add", "192.0.2.1/24", "dev", "under0")
	conflicts := te.clusterSync.Conflicts()
	if te.mirrored(t, cn.Name) == "" && !failed {
		t.Errorf("network %s not mirrored while the advertise address was missing, and not to be tried again on the timer once it is back; conflicts %q",
			cn.Name, conflicts)
	}
}

// A state older than this host's own latest write (skipped: it waited
// for the engine's lock while this host created a network) leaves the
// conflicts as they are; it cleared them, logging each "resolved", and
// the next state logged them again as new.
func TestStaleStateKeepsConflicts(t *testing.T) {
	te := newClusterEngine(t)
	te.stopFollowing()
	ctx := context.Background()
	// A conflict: a network on this host's underlay (as in
	// TestOverlayOverAHostRouteIsNotMirrored).
	if _, err := te.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: store.NewID(), Name: te.name("ov"), Subnet: netip.MustParsePrefix("192.0.2.0/25")}); err != nil {
		t.Fatal(err)
	}
	before, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	te.clusterSync.Apply(ctx, before)
	conflicts := func() []string {
		st, err := te.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Cluster.Conflicts
	}
	if c := conflicts(); len(c) != 1 {
		t.Fatalf("conflicts: %q; want one", c)
	}
	if _, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov2"), Driver: store.DriverOverlay}); err != nil {
		t.Fatal(err)
	}
	te.clusterSync.Apply(ctx, before) // skipped: older than what this host wrote
	if c := conflicts(); len(c) != 1 {
		t.Errorf("after a state older than this host's write was skipped, conflicts: %q; want the one still there", c)
	}
}

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
	"github.com/ebpfnet/ebpfnet/control/store"
)

// An address refused on an overlay network is said once, naming the
// network once, as on a bridge network: not "network X: network X: …".
func TestOverlayAddressErrorNamesTheNetworkOnce(t *testing.T) {
	te := newClusterEngine(t)
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay, IPv4: PoolSpec{Subnet: netip.MustParsePrefix("10.7.0.0/24")}})
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
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay})
	if err != nil {
		t.Fatal(err)
	}
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
	te.applyCluster(ctx, st)
	if d := time.Since(t0); d > 6*time.Second {
		t.Errorf("applying a state with the store out of reach took %s", d.Round(100*time.Millisecond))
	}
}

// An endpoint removed while the store does not answer gives its address
// back once the store answers again: the request to do it (nudgeCluster)
// is not dropped because the one read it makes failed.
func TestAddressReleasedAfterABlip(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := te.CreateSandbox(SandboxSpec{Name: te.name("web"), Networks: []string{n.Name}})
	if err != nil {
		t.Fatal(err)
	}
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

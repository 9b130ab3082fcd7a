package engine

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// newClusterEngine is a test engine that joined a one-member cluster of
// its own, running in its host namespace, with an underlay interface
// holding the advertise address.
func newClusterEngine(t *testing.T, tune ...func(*cluster.Config)) testEngine {
	t.Helper()
	te, _ := newClusterEngineAndStore(t, tune...)
	return te
}

// newClusterEngineAndStore is newClusterEngine, with its etcd.
func newClusterEngineAndStore(t *testing.T, tune ...func(*cluster.Config)) (te testEngine, etcd *testbed.Etcd) {
	t.Helper()
	te = newTestEngineWith(t, func(hostNS string) *cluster.Config {
		advertise := netip.MustParseAddr("192.0.2.1")
		for _, args := range [][]string{
			{"link", "add", "under0", "type", "veth", "peer", "name", "under1"},
			{"addr", "add", advertise.String() + "/24", "dev", "under0"},
			{"link", "set", "under0", "up"},
			{"link", "set", "under1", "up"},
		} {
			if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(hostNS)}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
		etcd = testbed.StartEtcd(t, testbed.EtcdMember{NetNS: hostNS, Addr: netip.MustParseAddr("127.0.0.1")})
		c := &cluster.Config{Endpoints: etcd.Endpoints(), Advertise: advertise}
		for _, f := range tune {
			f(c)
		}
		return c
	})
	return te, etcd
}

// joinFar makes another host (192.0.2.9) join te's cluster, over te's
// host namespace; the test's cleanup leaves.
func (te testEngine) joinFar(t *testing.T) *cluster.Cluster {
	t.Helper()
	far, err := cluster.Join(cluster.Config{Endpoints: te.cfg.Cluster.Endpoints, Advertise: netip.MustParseAddr("192.0.2.9"),
		Dial: func(ctx context.Context, address string) (net.Conn, error) { return te.dialInHost(ctx, "tcp", address) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	return far
}

// overlayNetwork creates the overlay network "ov".
func (te testEngine) overlayNetwork(t *testing.T) store.Network {
	t.Helper()
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A state of the cluster read before this host's own change, applied
// after it (it waited for the engine's lock while the change was made),
// neither drops the mirror of a network just created here nor brings
// back one just removed: it is older than what this host wrote.
func TestStaleClusterState(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	before, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := te.overlayNetwork(t)
	te.clusterSync.Apply(ctx, before)
	if err := te.store.View(func(tx *store.Tx) error { _, err := tx.Network(n.Name); return err }); err != nil {
		t.Errorf("network %s after an older state was applied: %v", n.Name, err)
	}
	withNet, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := te.RemoveNetwork(n.Name); err != nil {
		t.Fatal(err)
	}
	te.clusterSync.Apply(ctx, withNet)
	if err := te.store.View(func(tx *store.Tx) error { _, err := tx.Network(n.Name); return err }); err == nil {
		t.Errorf("network %s is back after an older state was applied", n.Name)
	}
}

// An overlay network created without a subnet gets one clear of this
// host's routes and networks, as a bridge network does: an underlay in
// 10.0.0.0/24 under the default pool 10.0.0.0/8 took its first /24.
func TestOverlaySubnetAvoidsHostRoutes(t *testing.T) {
	te := newClusterEngine(t)
	for _, args := range [][]string{
		{"link", "add", "lan0", "type", "veth", "peer", "name", "lan1"},
		{"addr", "add", "10.0.0.5/24", "dev", "lan0"},
		{"link", "set", "lan0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(te.cfg.NetNS)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	local, err := te.CreateNetwork(NetworkSpec{Name: te.name("br"), IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.0.1.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	n := te.overlayNetwork(t)
	for _, p := range []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), local.Pool.Subnet} {
		if n.Pool.Subnet.Overlaps(p) {
			t.Errorf("overlay network got subnet %s, over %s of this host", n.Pool.Subnet, p)
		}
	}
}

// Another host's endpoint is reached whatever its record names, but gives
// the resolvers only the names it has: a record without a sandbox name
// (another writer's) names nothing, not ".".
func TestRemoteNamesNeedAName(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	n := te.overlayNetwork(t)
	far := te.joinFar(t)
	for _, a := range []cluster.Address{{Owner: "nameless"}, {Owner: "named", Sandbox: "web", Aliases: []string{"", "www"}}} {
		if _, err := far.AllocateAddress(ctx, n.ID, a); err != nil {
			t.Fatal(err)
		}
	}
	st, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	te.clusterSync.Apply(ctx, st)
	te.mu.Lock()
	records := te.remoteRecords(n)
	te.mu.Unlock()
	if len(records) != 1 || !slices.Equal(records[0].Names, []string{"web", "www"}) {
		t.Errorf("remote names: %+v, want web and www only", records)
	}
}

// An overlay network another host made on a subnet that is a route of
// this host is not mirrored here: its bridge would take the route over.
// This host says so and makes nothing.
func TestOverlayOverAHostRouteIsNotMirrored(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	// As another host would: straight into the cluster, on this host's
	// underlay subnet (192.0.2.0/24).
	cn, err := te.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: store.NewID(), Name: te.name("ov"), Subnet: netip.MustParsePrefix("192.0.2.0/25")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := te.cluster.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if te.clusterSync.Apply(ctx, st) {
		t.Error("a network that cannot be mirrored here is tried again on a timer")
	}
	if err := te.store.View(func(tx *store.Tx) error { _, err := tx.Network(cn.Name); return err }); err == nil {
		t.Errorf("network %s on this host's underlay was mirrored", cn.Name)
	}
	if st, err := te.Status(); err != nil || len(st.Cluster.Conflicts) != 1 || !strings.Contains(st.Cluster.Conflicts[0], "192.0.2.0/24") {
		t.Errorf("status conflicts: %q (%v); want one naming the route", st.Cluster.Conflicts, err)
	}
	out, _ := exec.Command("ip", "-n", filepath.Base(te.cfg.NetNS), "-o", "link").CombinedOutput()
	if strings.Contains(string(out), "ebx-") || strings.Contains(string(out), "ebo-") {
		t.Errorf("devices made for it:\n%s", out)
	}
	if _, err := te.mirrorOverlay(cn); err == nil || !strings.Contains(err.Error(), "192.0.2.0/24") {
		t.Errorf("mirror: %v, want the route named", err)
	}
}

// Removing an overlay network removes its tunnel device's entry in the
// ifaces map with it, not at the next reconcile: the entry would name an
// ifindex the kernel hands to the next interface made.
func TestOverlayRemovalDropsTheTunnelsEntry(t *testing.T) {
	te := newClusterEngine(t)
	n := te.overlayNetwork(t)
	dev, _ := drivers.Tunnel(n)
	l, err := te.link(t, dev)
	if err != nil {
		t.Fatal(err)
	}
	var info bpf.DatapathIfaceInfo
	if err := te.dp.Maps.Ifaces.Lookup(uint32(l.Attrs().Index), &info); err != nil {
		t.Fatalf("tunnel device %s of %s has no ifaces entry: %v", dev, n.Name, err)
	}
	if err := te.RemoveNetwork(n.Name); err != nil {
		t.Fatal(err)
	}
	if err := te.dp.Maps.Ifaces.Lookup(uint32(l.Attrs().Index), &info); err == nil {
		t.Errorf("the ifaces entry of removed %s's tunnel device (ifindex %d) is still there", n.Name, l.Attrs().Index)
	}
}

// A runtime's attachment to an overlay network (CNI's ADD) takes its
// address in the cluster: not one another host holds, the same when asked
// again, under a record that names nothing (its runtime names it); DEL
// gives it back to the cluster.
func TestAttachmentOnOverlayTakesTheClustersAddress(t *testing.T) {
	te := newClusterEngine(t)
	ctx := context.Background()
	n := te.overlayNetwork(t)
	far := te.joinFar(t)
	farAddr, err := far.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "far", Sandbox: "far"})
	if err != nil {
		t.Fatal(err)
	}
	ns := containerNS(t, te, "c1")
	req := attachment("c1", n.Name)
	sb, _, _, err := te.External().Attach(req, ns, nil, ports.Sources{}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { te.External().DeleteEndpoint(req.ID) })
	a := sb.Endpoints[0].Addr
	if a == farAddr || !n.Pool.Subnet.Contains(a) {
		t.Fatalf("the attachment has %s; the other host holds %s", a, farAddr)
	}
	if again, _, _, err := te.External().Attach(req, ns, nil, ports.Sources{}, false); err != nil || again.Endpoints[0].Addr != a {
		t.Errorf("asked again: %v, %v; want %s", again.Endpoints, err, a)
	}
	held := func() []cluster.Address {
		st, err := te.cluster.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(slices.Clone(st.Addresses[n.ID]), func(c cluster.Address) bool { return c.Owner == "far" })
	}
	if h := held(); len(h) != 1 || h[0].Addr != a || h[0].Sandbox != "" || len(h[0].Aliases) != 0 {
		t.Errorf("this host's records in the cluster: %+v, want one of %s naming nothing", h, a)
	}
	if err := te.External().DeleteEndpoint(req.ID); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(held()) != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after DEL the cluster still holds %+v", held())
		}
	}
}

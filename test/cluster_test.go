package test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// peers is the advertise addresses of the hosts h's daemon sees in the
// cluster, sorted.
func peers(t *testing.T, h *testbed.Host) []netip.Addr {
	t.Helper()
	st, err := h.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster == nil {
		t.Fatal("status shows no cluster")
	}
	if st.Cluster.Error != "" {
		t.Fatalf("status: %s", st.Cluster.Error)
	}
	var out []netip.Addr
	for _, p := range st.Cluster.Hosts {
		out = append(out, p.Advertise)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// waitPeers waits until h sees exactly want.
func waitPeers(t *testing.T, h *testbed.Host, within time.Duration, want ...netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := peers(t, h)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %s sees hosts %v, want %v", within, h.Prefix, got, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Three hosts join one etcd cluster, one member each, over TLS with
// client certificates, as a production etcd asks. Every host sees the
// three; a host killed for good drops out after its lease; the cluster
// keeps working with one etcd member down; a restarted daemon joins
// again. Flags that cannot work are refused, naming the value, and so is
// a host that gives another's advertise address.
func TestClusterMembership(t *testing.T) {
	t.Parallel()
	c := testbed.NewSecureCluster(t, 3)
	all := []netip.Addr{testbed.UnderlayAddr(0), testbed.UnderlayAddr(1), testbed.UnderlayAddr(2)}
	for _, h := range c.Hosts {
		waitPeers(t, h, 5*time.Second, all...)
	}
	st, err := c.Hosts[0].Client.Status(context.Background())
	if err != nil || st.Cluster.LeaseTTL <= 0 || st.Cluster.Advertise != all[0] || st.Cluster.Lease == "" {
		t.Errorf("status: %+v, %v", st.Cluster, err)
	}
	out := c.Hosts[0].MustCLI("status")
	for _, want := range []string{"cluster store: " + c.Etcd.Store(), "this host: " + all[0].String(), all[1].String(), all[2].String()} {
		if !strings.Contains(out, want) {
			t.Errorf("ebpfnet status lacks %q:\n%s", want, out)
		}
	}

	// A daemon killed for good: the others drop it once its lease runs
	// out (10 s).
	c.Hosts[2].Stop(syscall.SIGKILL)
	waitPeers(t, c.Hosts[0], 20*time.Second, all[0], all[1])

	// One etcd member of three down: the others still read and write.
	c.Etcd.Stop(0)
	waitPeers(t, c.Hosts[1], 10*time.Second, all[0], all[1])
	c.Hosts[2].Start()
	waitPeers(t, c.Hosts[1], 10*time.Second, all...)
	c.Etcd.Start(0)
	c.Etcd.WaitHealthy(0)

	// Flags that cannot work: the daemon does not start, and says why.
	h := c.Hosts[2]
	h.Stop(syscall.SIGTERM)
	for _, bad := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--cluster-store", "consul://" + all[0].String() + ":8500", "--cluster-advertise", all[2].String()}, "consul://"},
		{[]string{"--cluster-store", c.Etcd.Store()}, "--cluster-advertise"},
		{[]string{"--cluster-store", c.Etcd.Store(), "--cluster-advertise", "eth0"}, `"eth0"`},
		{[]string{"--cluster-store", c.Etcd.Store(), "--cluster-advertise", "127.0.0.1"}, "127.0.0.1"},
		{append(c.DaemonFlags(2), "--cluster-store-opt", "kv.timeout=5"), `"kv.timeout"`},
		{append(c.DaemonFlags(2), "--cluster-store-opt", "kv.cacertfile=/nonexistent/ca.pem"), "/nonexistent/ca.pem"},
		{append(c.DaemonFlags(2), "--cluster-store-opt", "discovery.ttl=10", "--cluster-store-opt", "discovery.heartbeat=20"), "discovery.heartbeat 20 s must be shorter than discovery.ttl 10 s"},
		{[]string{"--cluster-store-opt", c.Etcd.StoreOptions()[0]}, "--cluster-store"},
		{c.DaemonFlags(0), all[0].String()}, // host 0's advertise address
		{[]string{"--cluster-store", c.Etcd.Store(), "--cluster-advertise", all[2].String()}, "speaks TLS"},
	} {
		h.DaemonFlags(bad.flags...)
		if out := h.StartFails(); !strings.Contains(out, bad.want) {
			t.Errorf("daemon %s: %s, want an error naming %s", strings.Join(bad.flags, " "), out, bad.want)
		}
	}
	h.DaemonFlags(c.DaemonFlags(2)...)
	h.Start()
	waitPeers(t, c.Hosts[0], 10*time.Second, all...)
}

package engine

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
)

// The peers of a VXLAN device are all written again now and then (once a
// minute; every 2 s here), which puts back what something else removed:
// also on a cluster where nothing changes meanwhile.
func TestPeersPutBackOnAQuietCluster(t *testing.T) {
	const recheck = 2 * time.Second
	te := newClusterEngine(t, func(c *cluster.Config) { c.PeersRecheck = recheck })
	ctx := context.Background()
	n := te.overlayNetwork(t)
	far := te.joinFar(t)
	addr, err := far.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "remote", Sandbox: "web"})
	if err != nil {
		t.Fatal(err)
	}
	ns, dev := filepath.Base(te.cfg.NetNS), overlay.Device(n)
	hasPeer := func() bool {
		out, err := exec.Command("ip", "-n", ns, "neigh", "show", "dev", dev).CombinedOutput()
		if err != nil {
			t.Fatalf("ip neigh show dev %s: %v: %s", dev, err, out)
		}
		return strings.Contains(string(out), addr.String()+" ")
	}
	await := func(what string, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); !hasPeer(); time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no neighbour %s on %s after %s", what, addr, dev, within)
			}
		}
	}
	await("the other host's endpoint", 5*time.Second)
	if out, err := exec.Command("ip", "-n", ns, "neigh", "del", addr.String(), "dev", dev).CombinedOutput(); err != nil {
		t.Fatalf("ip neigh del: %v: %s", err, out)
	}
	await("removed by something else, nothing changed in the cluster", recheck+15*time.Second)
}

package test

import (
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// ptpPlugins are the reference ptp plugin on subnet, in the host's
// namespace, masquerading, and ebpfnet chained after it in place of
// portmap.
func ptpPlugins(t *testing.T, h *testbed.Host, subnet string) []map[string]any {
	return []map[string]any{
		{"type": "ptp", "ipMasq": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": [][]map[string]string{{{"subnet": subnet}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}},
		{"type": "ebpfnet", "socket": h.Socket(), "capabilities": map[string]bool{"portMappings": true}},
	}
}

// waitMapEntries fails unless the host's map entries come back to want
// within a few seconds: host_addrs follows the host's interfaces (the
// ptp plugin's host sides have addresses) a moment after they change.
func waitMapEntries(t *testing.T, h *testbed.Host, when string, want map[string]int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		now := mapEntries(t, h)
		if maps.Equal(now, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: map entries %v, want %v", when, now, want)
		}
	}
}

// TestCNIChainedAfterPtp chains ebpfnet after the reference ptp plugin (a
// veth per container, its host side holding the gateway's address, a
// host route per container, no bridge), as the reference portmap's own
// integration test does, at its spec versions: hostPorts reached from
// outside with the client's address kept, over UDP too, from the host on
// 127.0.0.1 and its own address, from the container itself and from a
// neighbour (hairpin); containers reach each other; the container goes
// out masqueraded (ptp's ipMasq); a second container takes the host port
// once the first is deleted, and keeps it across a kill -9 of the daemon;
// DEL leaves nothing of ebpfnet's, and no host side of ptp's is made an
// uplink.
func TestCNIChainedAfterPtp(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	c.In = filepath.Base(h.NetNS) // ptp builds in the namespace it runs in
	before := mapEntries(t, h)
	for i, spec := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		c.Spec = spec
		name := "ptp" + strings.ReplaceAll(spec, ".", "")
		c.Conflist(name, ptpPlugins(t, h, fmt.Sprintf("10.93.%d.0/24", i))...)
		ns := containerNS(t, h, name+"a")
		c.Must("add", name, ns, testbed.PortMappings("8080:7777/tcp", "8080:7777/udp"))
		if uplinks := h.Status().Uplinks; len(uplinks) != 1 {
			t.Errorf("spec %s: uplinks %+v, want uplink0 alone", spec, uplinks)
		}
		servesPublished(t, h, out, ns)
		mustWork(t, "spec "+spec+": the container to itself through the host (hairpin)", testbed.TCPTo(ns, hostIP+":8080"))
		// A neighbour without ports: containers reach each other, and the
		// port through the host.
		other := containerNS(t, h, name+"c")
		otherIP := cniAddress(t, c.Must("add", name, other))
		testbed.Serve(t, other)
		mustWork(t, "spec "+spec+": a neighbour to the port through the host (hairpin)", testbed.TCPTo(other, hostIP+":8080"))
		mustWork(t, "spec "+spec+": container to container", testbed.TCP(ns, otherIP))
		c.Must("del", name, other)
		if peer := peerOf(t, ns, "tcp4", out.IP+":7777"); peer.Addr().String() != hostIP {
			t.Errorf("spec %s: the outside saw the container as %s, want the host's address %s", spec, peer.Addr(), hostIP)
		}
		assertNoRuleNorProxy(t, h, "8080")
		if spec != "0.3.1" { // CHECK came with 0.4.0
			c.Must("check", name, ns)
		}
		c.Must("del", name, ns)
		mustFail(t, "spec "+spec+": outside to 8080 after DEL", testbed.TCPTo(out.NS, hostIP+":8080"))

		// A second container on the host port the first had.
		ns2 := containerNS(t, h, name+"b")
		c.Must("add", name, ns2, testbed.PortMappings("8080:7777/tcp"))
		testbed.Serve(t, ns2)
		if spec == "1.0.0" {
			// The attachment outlives the daemon's kill -9, and its host
			// side is no uplink after the start either.
			h.Stop(syscall.SIGKILL)
			h.Start()
			if uplinks := h.Status().Uplinks; len(uplinks) != 1 {
				t.Errorf("after a restart: uplinks %+v, want uplink0 alone", uplinks)
			}
		}
		if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
			t.Errorf("spec %s: the second container saw %s, want %s", spec, peer.Addr(), out.IP)
		}
		c.Must("del", name, ns2)
		c.Must("del", name, ns2) // again
		assertNothingLeft(t, h, "spec "+spec+": after DEL")
		waitMapEntries(t, h, "spec "+spec+": after DEL", before)
	}
}

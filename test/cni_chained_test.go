package test

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A previous plugin is a reference plugin that makes the container's
// interface, which ebpfnet chains after in place of portmap.
type previousPlugin struct {
	name string
	// plugins are the configuration list for the i-th spec version: the
	// plugin, masquerading, then ebpfnet.
	plugins func(t *testing.T, h *testbed.Host, i int) []map[string]any
	// interfaces is how many interfaces its result names: ebpfnet's
	// result passes them on.
	interfaces int
	// leaves are the map entries of what it keeps in the host once made:
	// the bridge's address, a host address, and its subnet, another
	// runtime's (NETWORK_FOREIGN).
	leaves map[string]int
}

var (
	// afterPtp is a veth per container, its host side holding the
	// gateway's address, a host route per container, no bridge.
	afterPtp = previousPlugin{name: "ptp", interfaces: 2, plugins: func(t *testing.T, h *testbed.Host, i int) []map[string]any {
		return ptpPlugins(t, h, fmt.Sprintf("10.93.%d.0/24", i))
	}}
	// afterBridge is a veth per container on one bridge holding the
	// gateway's address (which allows one IPv4 subnet).
	afterBridge = previousPlugin{name: "bridge", interfaces: 3, leaves: map[string]int{"host_addrs": 1, "subnets": 1},
		plugins: func(t *testing.T, h *testbed.Host, i int) []map[string]any { return chainedPlugins(t, h) }}
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

// TestCNIChainedAfterPtp chains ebpfnet after the reference ptp plugin,
// as the reference portmap's own integration test does (chainedAfter).
func TestCNIChainedAfterPtp(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	chainedAfter(t, h, out, newCNI(t), afterPtp)
}

// chainedAfter runs the reference portmap's integration scenarios with
// ebpfnet chained after prev, at the spec versions portmap's test runs:
// hostPorts reached from outside with the client's address kept, over
// UDP too, from the host on 127.0.0.1 and its own address, from the
// container itself and from a neighbour (hairpin), with no rule, proxy
// or route_localnet; containers reach each other; the container goes out
// masqueraded (prev's ipMasq); a second container takes the host port
// once the first is deleted, and keeps it across a kill -9 of the
// daemon; DEL leaves nothing of ebpfnet's (no attachment, publication,
// map entry or network), and no host side of prev's is made an uplink.
func chainedAfter(t *testing.T, h *testbed.Host, out testbed.Outside, c *testbed.CNI, prev previousPlugin) {
	t.Helper()
	c.In = filepath.Base(h.NetNS) // the plugins build in the namespace they run in
	want := mapEntries(t, h)
	for i, spec := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		c.Spec = spec
		name := prev.name + strings.ReplaceAll(spec, ".", "")
		when := func(what string) string { return fmt.Sprintf("after %s, spec %s: %s", prev.name, spec, what) }
		c.Conflist(name, prev.plugins(t, h, i)...)
		ns := containerNS(t, h, name+"a")
		res := c.Must("add", name, ns, testbed.PortMappings("8080:7777/tcp", "8080:7777/udp"))
		var result struct{ Interfaces []struct{ Name string } }
		if err := json.Unmarshal([]byte(res), &result); err != nil || len(result.Interfaces) != prev.interfaces {
			t.Fatalf("%s: %v\n%s", when("ADD's result, want the previous plugin's interfaces"), err, res)
		}
		if uplinks := h.Status().Uplinks; len(uplinks) != 1 {
			t.Errorf("%s: uplinks %+v, want uplink0 alone", when("ADD"), uplinks)
		}
		servesPublished(t, h, out, ns)
		mustWork(t, when("the container to itself through the host (hairpin)"), testbed.TCPTo(ns, hostIP+":8080"))
		// A neighbour without ports: containers reach each other, and the
		// port through the host.
		other := containerNS(t, h, name+"c")
		otherIP := cniAddress(t, c.Must("add", name, other))
		testbed.Serve(t, other)
		mustWork(t, when("a neighbour to the port through the host (hairpin)"), testbed.TCPTo(other, hostIP+":8080"))
		mustWork(t, when("container to container"), testbed.TCP(ns, otherIP))
		c.Must("del", name, other)
		if peer := peerOf(t, ns, "tcp4", out.IP+":7777"); peer.Addr().String() != hostIP {
			t.Errorf("%s: the outside saw the container as %s, want the host's address %s", when("masquerade"), peer.Addr(), hostIP)
		}
		assertNoRuleNorProxy(t, h, "8080")
		assertNoRouteLocalnet(t, h)
		if spec != "0.3.1" { // CHECK came with 0.4.0
			c.Must("check", name, ns)
		}
		c.Must("del", name, ns)
		mustFail(t, when("outside to 8080 after DEL"), testbed.TCPTo(out.NS, hostIP+":8080"))

		// A second container on the host port the first had.
		ns2 := containerNS(t, h, name+"b")
		c.Must("add", name, ns2, testbed.PortMappings("8080:7777/tcp"))
		testbed.Serve(t, ns2)
		if spec == "1.0.0" {
			// The attachment outlives the daemon's kill -9, and prev's
			// host side is no uplink after the start either.
			h.Stop(syscall.SIGKILL)
			h.Start()
			if uplinks := h.Status().Uplinks; len(uplinks) != 1 {
				t.Errorf("%s: uplinks %+v, want uplink0 alone", when("a restart"), uplinks)
			}
		}
		if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
			t.Errorf("%s: the second container saw %s, want %s", when("the first's DEL"), peer.Addr(), out.IP)
		}
		c.Must("del", name, ns2)
		c.Must("del", name, ns2) // again
		assertNothingLeft(t, h, when("DEL"))
		if slices.Contains(listedNames(t, h, "network"), "cni-"+name) {
			t.Errorf("%s: the chained network cni-%s outlived its last attachment", when("DEL"), name)
		}
		if i == 0 {
			for m, n := range prev.leaves {
				want[m] += n
			}
		}
		waitMapEntries(t, h, when("DEL"), want)
	}
}

// assertNoRouteLocalnet fails when an interface of the host routes
// 127.0.0.1 (route_localnet, which the reference portmap turns on for
// its DNAT of 127.0.0.1): ebpfnet connects host sockets straight to the
// container.
func assertNoRouteLocalnet(t *testing.T, h *testbed.Host) {
	t.Helper()
	for line := range strings.Lines(h.InHost("sysctl", "-a", "--pattern", `route_localnet$`)) {
		if strings.HasSuffix(strings.TrimSpace(line), "= 1") {
			t.Errorf("route_localnet is on: %s", strings.TrimSpace(line))
		}
	}
}

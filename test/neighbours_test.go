package test

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A sandbox knows its gateways' MAC from the start, as a permanent
// neighbour entry: the bridge's MAC is fixed, so the entry never goes
// stale, and permanent entries are outside the kernel's neighbour garbage
// collection, whose thresholds (gc_thresh3: 1,024 by default) every
// namespace of the host shares. With the gateway learnt by ARP, a
// thousand sandboxes each holding one filled them: past it the kernel
// evicts and refuses entries, and sandboxes lose packets.
func TestGatewayNeighboursArePermanent(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	dual, internal := h.Name("dual"), h.Name("int")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "172.31.0.0/24", "--subnet", "fd12:3456:789b::/64", dual)
	h.MustCLI("network", "create", "--internal", "--subnet", "172.31.1.0/24", internal)
	a := h.Name("a")
	h.MustCLI("sandbox", "create", a, "--network", dual, "--network", internal)
	neighbours := h.MustRun("ip", "-n", strings.TrimPrefix(h.NS(a), "/run/netns/"), "neigh", "show", "nud", "permanent")
	for _, want := range []string{"172.31.0.1 dev eth0 lladdr 02:42:ac:1f:00:01 PERMANENT",
		"fd12:3456:789b::1 dev eth0 lladdr 02:42:ac:1f:00:01 PERMANENT", "172.31.1.1 dev eth1 lladdr 02:42:ac:1f:01:01 PERMANENT"} {
		if !strings.Contains(neighbours, want) {
			t.Errorf("the sandbox has no neighbour entry %q:\n%s", want, neighbours)
		}
	}
	mustWork(t, "the outside through the gateway", testbed.TCP(h.NS(a), out.IP))
}

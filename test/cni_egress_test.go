package test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// CNI's "egressAllow" holds for its attachment's container in main and
// chained mode: the allowed prefix is reached, an address in none is
// refused and counted. A name is refused at ADD in one line, and nothing
// is attached: the runtime resolves the container's names, not ebpfnet.
func TestCNIEgressAllow(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	offList := "10.99.0.40"
	h.MustRun("ip", "-n", filepath.Base(out.NS), "addr", "add", offList+"/24", "dev", "eth0")
	c := newCNI(t)
	c.Spec = "1.0.0"              // the reference bridge's newest, for the chained list
	c.In = filepath.Base(h.NetNS) // the plugins build in the namespace they run in
	h.MustCLI("network", "create", "--subnet", "10.96.0.0/24", h.Name("cninet"))
	main := func(allow string) map[string]any {
		return map[string]any{"type": "ebpfnet", "network": h.Name("cninet"), "socket": h.Socket(), "egressAllow": []string{allow}}
	}
	c.Conflist("egmain", main(out.IP))
	chained := chainedPlugins(t, h)
	chained[1]["egressAllow"] = []string{out.IP + "/32"}
	c.Conflist("egchained", chained...)
	for _, network := range []string{"egmain", "egchained"} {
		ns := containerNS(t, h, network)
		c.Must("add", network, ns)
		before := h.ProgramCounter("from_container", "drop_egress_policy")
		mustWork(t, network+": tcp to the allowed address", testbed.TCP(ns, out.IP))
		mustFail(t, network+": tcp to an address in no prefix", testbed.TCP(ns, offList))
		if n := h.ProgramCounter("from_container", "drop_egress_policy") - before; n == 0 {
			t.Errorf("%s: drop_egress_policy counted nothing", network)
		}
		c.Must("del", network, ns)
	}
	c.Conflist("egnamed", main("a.test"))
	ns := containerNS(t, h, "named")
	if msg, err := c.Run("add", "egnamed", ns); err == nil || !strings.Contains(msg, `egress rule "a.test"`) {
		t.Errorf("ADD with a name in egressAllow: %v %q, want it refused naming it", err, msg)
	}
	assertNothingLeft(t, h, "after DEL and a refused ADD")
}

package test

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/control"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

const gatewayMode = control.OptGatewayMode + "="

func TestIsolatedGatewayMode(t *testing.T) {
	h := testbed.NewHost(t)
	iso := h.Name("iso")
	testbed.Serve(t, h.NetNS) // a host service the sandboxes must not reach

	// Refused without --internal, or with a gateway: nothing is created.
	before := snapshot(t, h)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "-o", gatewayMode + "isolated", iso},
			"option " + gatewayMode + "isolated needs --internal"},
		{[]string{"network", "create", "--internal", "--subnet", "172.30.0.0/16", "--gateway", "172.30.0.1", "-o", gatewayMode + "isolated", iso},
			"--gateway 172.30.0.1: a network in gateway mode isolated has no gateway"},
	} {
		msg, err := h.CLI(c.args...)
		if err == nil || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("ebpfnet %s: %v %q; want one line with %q", strings.Join(c.args, " "), err, msg, c.want)
		}
		if after := snapshot(t, h); after != before {
			t.Fatalf("ebpfnet %s changed state:\nbefore %s\nafter  %s", strings.Join(c.args, " "), before, after)
		}
	}

	h.MustCLI("network", "create", "--internal", "-o", gatewayMode+"isolated", iso)
	n := h.Network(iso)
	if n.Options[control.OptGatewayMode] != "isolated" || !n.Internal || n.IPAM.Config[0].Gateway != "" {
		t.Fatalf("inspect: options %v, internal %t, IPAM %+v; want mode isolated, internal, no gateway", n.Options, n.Internal, n.IPAM.Config)
	}
	bridge := n.Options[control.OptBridgeName]
	wouldBeGateway := netip.MustParsePrefix(n.IPAM.Config[0].Subnet).Addr().Next().String()
	bridgeAddrs := func() string { return strings.TrimSpace(h.InHost("ip", "-4", "-o", "addr", "show", "dev", bridge)) }
	if addrs := bridgeAddrs(); addrs != "" {
		t.Fatalf("the isolated bridge %s has IPv4 addresses: %s", bridge, addrs)
	}

	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", iso)
	h.MustCLI("sandbox", "create", b, "--network", iso)
	testbed.Serve(t, h.NS(a))
	if gw := h.Sandbox(a).NetworkSettings.Networks[iso].Gateway; gw != "" {
		t.Errorf("sandbox inspect shows gateway %q on an isolated network", gw)
	}
	if routes := h.MustCLI("exec", a, "--", "ip", "-4", "route"); strings.Contains(routes, "default") {
		t.Fatalf("a sandbox on an isolated network has a default route: %s", routes)
	}
	aIP := h.IP(a, iso)
	// The sandboxes of the network still reach each other...
	mustWork(t, "b to a on the isolated network", testbed.TCP(h.NS(b), aIP))
	// ...but host and sandboxes cannot reach each other at all.
	mustFail(t, "host to a sandbox on the isolated network", testbed.TCP(h.NetNS, aIP))
	mustFail(t, "a sandbox to the pool's gateway address", testbed.TCP(h.NS(b), wouldBeGateway))
	mustFail(t, "a sandbox to the host's address on the default network",
		testbed.TCP(h.NS(b), h.Network("bridge").IPAM.Config[0].Gateway))

	// The reconciler keeps it so: an address put on the bridge goes again.
	h.InHost("ip", "addr", "add", wouldBeGateway+"/16", "dev", bridge)
	h.Stop(syscall.SIGTERM)
	h.Start()
	if addrs := bridgeAddrs(); addrs != "" {
		t.Fatalf("after a restart the isolated bridge %s has addresses: %s", bridge, addrs)
	}
	mustWork(t, "b to a after the restart", testbed.TCP(h.NS(b), aIP))
}

func TestGatewayModeInInspect(t *testing.T) {
	h := testbed.NewHost(t)
	for _, mode := range []string{"nat", "nat-unprotected", "routed"} {
		name := h.Name(mode)
		h.MustCLI("network", "create", "-o", gatewayMode+mode, name)
		n := h.Network(name)
		if got := n.Options[control.OptGatewayMode]; got != mode {
			t.Errorf("network %s: options %v, want %s=%s", name, n.Options, control.OptGatewayMode, mode)
		}
		if n.IPAM.Config[0].Gateway == "" {
			t.Errorf("network %s (%s) shows no gateway", name, mode)
		}
	}
	// Not chosen, not listed, as with Docker: the default network and a
	// plain user-defined one are nat without saying so.
	plain := h.Name("plain")
	h.MustCLI("network", "create", plain)
	for _, name := range []string{"bridge", plain} {
		if got, ok := h.Network(name).Options[control.OptGatewayMode]; ok {
			t.Errorf("network %s lists gateway mode %q; want it unlisted", name, got)
		}
	}
}

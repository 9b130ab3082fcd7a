package test

import (
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// disableIPv6 is a sysctl of an interface in a sandbox, "1" when IPv6 is off.
func disableIPv6(h *testbed.Host, sandbox, ifname string) string {
	return strings.TrimSpace(h.MustCLI("exec", sandbox, "--", "cat", "/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6"))
}

// A dual-stack network: the bridge holds both gateways, each endpoint an
// address of each family with a default route per family, IPv6 is on only
// on the interfaces of dual-stack networks, inspect shows both families,
// and the reconciler restores what was lost.
func TestIPv6NetworkAndEndpoints(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	dual, v4 := h.Name("dual"), h.Name("v4")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd12:3456:789a::/64", "--subnet", "172.30.0.0/16",
		"--ip-range", "fd12:3456:789a::/80", "-o", "com.docker.network.bridge.name="+h.Prefix+"d", dual)
	h.MustCLI("network", "create", v4)

	n := h.Network(dual)
	want := []api.IPAMConfig{{Subnet: "172.30.0.0/16", Gateway: "172.30.0.1"},
		{Subnet: "fd12:3456:789a::/64", Gateway: "fd12:3456:789a::1", IPRange: "fd12:3456:789a::/80"}}
	if !n.EnableIPv6 || !slices.Equal(n.IPAM.Config, want) {
		t.Fatalf("network inspect: EnableIPv6 %t, IPAM %+v", n.EnableIPv6, n.IPAM.Config)
	}
	if n := h.Network(v4); n.EnableIPv6 || len(n.IPAM.Config) != 1 {
		t.Fatalf("IPv4-only network: %+v", n)
	}
	if n := h.Network("bridge"); n.EnableIPv6 {
		t.Fatal("the default network has IPv6 without --default-ipv6")
	}
	br := h.Prefix + "d"
	if out := h.InHost("ip", "-6", "-o", "addr", "show", "dev", br, "scope", "global", "-tentative"); !strings.Contains(out, "fd12:3456:789a::1/64") {
		t.Fatalf("bridge %s has no usable IPv6 gateway:\n%s", br, out)
	}
	// IPv4-only bridges have no IPv6 at all, not even link-local.
	if v := strings.TrimSpace(h.InHost("cat", "/proc/sys/net/ipv6/conf/ebpf0/disable_ipv6")); v != "1" {
		t.Errorf("ebpf0 (IPv4-only) has disable_ipv6=%s", v)
	}

	a, b, c := h.Name("a"), h.Name("b"), h.Name("c")
	h.MustCLI("sandbox", "create", a, "--network", dual, "--ip6", "fd12:3456:789a::10")
	h.MustCLI("sandbox", "create", b, "--network", dual)
	h.MustCLI("sandbox", "create", c, "--network", v4)
	ep := h.Sandbox(a).NetworkSettings.Networks[dual]
	if ep.GlobalIPv6Address != "fd12:3456:789a::10" || ep.GlobalIPv6PrefixLen != 64 || ep.IPv6Gateway != "fd12:3456:789a::1" ||
		ep.IPAddress == "" || ep.Gateway != "172.30.0.1" {
		t.Fatalf("sandbox inspect: %+v", ep)
	}
	if got := h.Sandbox(b).NetworkSettings.Networks[dual].GlobalIPv6Address; got != "fd12:3456:789a::2" {
		t.Fatalf("dynamic IPv6 address %s, want fd12:3456:789a::2 (::1 is the gateway)", got)
	}
	if got := h.Network(dual).Containers[h.Sandbox(a).ID].IPv6Address; got != "fd12:3456:789a::10/64" {
		t.Fatalf("network inspect: IPv6Address %q", got)
	}
	checkInside := func(when string) {
		t.Helper()
		if out := h.MustCLI("exec", a, "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global", "-tentative"); !strings.Contains(out, "fd12:3456:789a::10/64") {
			t.Errorf("%s: eth0 of %s:\n%s", when, a, out)
		}
		if out := h.MustCLI("exec", a, "--", "ip", "-6", "route"); !strings.Contains(out, "default via fd12:3456:789a::1 dev eth0") {
			t.Errorf("%s: IPv6 routes of %s:\n%s", when, a, out)
		}
		if out := h.MustCLI("exec", a, "--", "ip", "-4", "route"); !strings.Contains(out, "default via 172.30.0.1 dev eth0") {
			t.Errorf("%s: IPv4 routes of %s:\n%s", when, a, out)
		}
		if out := h.MustCLI("exec", a, "--", "ip", "-6", "addr", "show", "dev", "lo"); !strings.Contains(out, "::1/128") {
			t.Errorf("%s: lo of a dual-stack sandbox has no ::1:\n%s", when, out)
		}
	}
	checkInside("created")
	if addrs := ipv6Addrs(h, c); addrs != "" {
		t.Errorf("sandbox %s of an IPv4-only network has IPv6 addresses:\n%s", c, addrs)
	}

	// c joins the dual-stack network too: IPv6 on its eth1 alone.
	h.MustCLI("network", "connect", "--ip6", "fd12:3456:789a::20", dual, c)
	if disableIPv6(h, c, "eth0") != "1" || disableIPv6(h, c, "eth1") != "0" {
		t.Errorf("IPv6 of %s: eth0 disable_ipv6=%s, eth1 disable_ipv6=%s; want it on eth1 alone", c, disableIPv6(h, c, "eth0"), disableIPv6(h, c, "eth1"))
	}
	if out := h.MustCLI("exec", c, "--", "ip", "-6", "route"); !strings.Contains(out, "default via fd12:3456:789a::1 dev eth1") {
		t.Errorf("IPv6 routes of %s:\n%s", c, out)
	}
	// ... and leaves it: no IPv6 left, lo included; the address is free again.
	h.MustCLI("network", "disconnect", dual, c)
	if addrs := ipv6Addrs(h, c); addrs != "" {
		t.Errorf("after disconnect %s has IPv6 addresses:\n%s", c, addrs)
	}
	h.MustCLI("network", "connect", "--ip6", "fd12:3456:789a::20", dual, c)

	// The reconciler restores the IPv6 addresses and route that were lost.
	h.InHost("ip", "-6", "addr", "del", "fd12:3456:789a::1/64", "dev", br)
	h.MustCLI("exec", a, "--", "ip", "-6", "addr", "del", "fd12:3456:789a::10/64", "dev", "eth0")
	h.Stop(syscall.SIGTERM)
	h.Start()
	if out := h.InHost("ip", "-6", "addr", "show", "dev", br); !strings.Contains(out, "fd12:3456:789a::1/64") {
		t.Errorf("after a restart bridge %s has no IPv6 gateway:\n%s", br, out)
	}
	checkInside("after a restart")

	// An address goes back to the pool with its sandbox.
	h.MustCLI("sandbox", "rm", a)
	h.MustCLI("sandbox", "create", a, "--network", dual, "--ip6", "fd12:3456:789a::10")
}

// Bad IPv6 settings get a one-line error naming the value, and leave
// nothing: no network, no bridge, no pool (the next network takes the
// default pool the failed ones would have).
func TestIPv6NetworkErrors(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	bad := h.Name("bad")
	ok := h.Name("ok")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:1::/64", ok)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--subnet", "fd00:2::/64"}, "subnet fd00:2::/64: the network has no IPv6 (add --ipv6"},
		{[]string{"-o", "com.docker.network.enable_ipv6=false", "--subnet", "fd00:2::/64"}, "subnet fd00:2::/64: the network has no IPv6"},
		{[]string{"--ipv6", "--subnet", "fd00:2::/64", "--subnet", "fd00:3::/64"}, "subnet fd00:3::/64: the network has subnet fd00:2::/64 already"},
		{[]string{"--ipv6", "--subnet", "fd00:2::/64", "--gateway", "fd00:3::1"}, "gateway fd00:3::1 is outside subnet fd00:2::/64"},
		{[]string{"--ipv6", "--subnet", "172.30.0.0/16", "--gateway", "fd00:3::1"}, "gateway fd00:3::1 needs a subnet to lie in"},
		{[]string{"--ipv6", "--subnet", "fd00:2::/64", "--ip-range", "fd00:3::/80"}, "ip-range fd00:3::/80 is outside subnet fd00:2::/64"},
		{[]string{"--ipv6", "--subnet", "fd00:2::/127"}, "subnet fd00:2::/127 is too small"},
		{[]string{"--ipv6", "--subnet", "fd00:1::/80"}, "subnet fd00:1::/80 overlaps subnet fd00:1::/64 of network " + ok},
		{[]string{"--ipv6", "-o", "com.docker.network.bridge.gateway_mode_ipv6=isolated"}, "gateway_mode_ipv6=isolated needs --internal"},
		{[]string{"--ipv6", "-o", "com.docker.network.bridge.gateway_mode_ipv6=bogus"}, `unknown gateway mode "bogus"`},
		// Fails after both pools are chosen: they go with the transaction.
		{[]string{"--ipv6", "-o", "com.docker.network.bridge.name=ebpf0"}, "bridge ebpf0 is already used by network bridge"},
	} {
		out, err := h.CLI(append(append([]string{"network", "create"}, c.args...), bad)...)
		if err == nil || !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("network create %v: %v\n%s\nwant one line containing %q", c.args, err, out, c.want)
		}
		if _, err := h.CLI("network", "inspect", bad); err == nil {
			t.Fatalf("network create %v failed but left the network", c.args)
		}
	}
	// No pool was left behind: the next networks take the pools the
	// failed ones chose.
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:2::/64", bad)
	cfg := h.Network(bad).IPAM.Config
	if len(cfg) != 2 || cfg[0].Subnet != "172.19.0.0/16" {
		t.Fatalf("after the failures the next network got %+v, want 172.19.0.0/16 (ok has 172.18.0.0/16)", cfg)
	}

	sb := h.Name("sb")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ip6", "fd00:1::10"}, "IPv6 address fd00:1::10: network bridge has no IPv6"},
		{[]string{"--network", ok, "--ip6", "fd00:9::10"}, "address fd00:9::10 is outside subnet fd00:1::/64"},
		{[]string{"--network", ok, "--ip6", "fd00:1::1"}, "address fd00:1::1 is the gateway"},
		{[]string{"--network", ok, "--ip6", "172.18.0.9"}, `invalid IPv6 address "172.18.0.9"`},
	} {
		out, err := h.CLI(append(append([]string{"sandbox", "create"}, c.args...), sb)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("sandbox create %v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
	if out, err := h.CLI("sandbox", "inspect", sb); err == nil {
		t.Fatalf("failed creates left sandbox %s: %s", sb, out)
	}
}

// Without a subnet an IPv6 network takes a /64 of the host's ULA /48
// (Docker 27's default IPv6 pool), skipping those routes use.
func TestIPv6DefaultULAPool(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	first, second := h.Name("first"), h.Name("second")
	h.MustCLI("network", "create", "--ipv6", first)
	s1 := netip.MustParsePrefix(h.Network(first).IPAM.Config[1].Subnet)
	if a := s1.Addr().As16(); a[0] != 0xfd || s1.Bits() != 64 || a[6] != 0 || a[7] != 0 {
		t.Fatalf("default IPv6 subnet %s: want the first /64 of a ULA fdXX:XXXX:XXXX::/48", s1)
	}
	h.MustCLI("network", "rm", first)
	h.InHost("ip", "-6", "route", "add", "blackhole", s1.String())
	h.MustCLI("network", "create", "--ipv6", second)
	s2 := h.Network(second).IPAM.Config[1].Subnet
	a := s1.Addr().As16()
	a[7] = 1
	if want := netip.PrefixFrom(netip.AddrFrom16(a), 64).String(); s2 != want {
		t.Fatalf("with %s routed, the next network got %s, want %s", s1, s2, want)
	}
}

// --default-ipv6 makes the default network dual-stack, as Docker's
// default-network-opts with enable_ipv6 does.
func TestIPv6DefaultNetworkFlag(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t, "--default-ipv6")
	n := h.Network("bridge")
	if !n.EnableIPv6 || len(n.IPAM.Config) != 2 || !strings.HasPrefix(n.IPAM.Config[1].Subnet, "fd") {
		t.Fatalf("default network: %+v", n)
	}
	a := h.Name("a")
	h.MustCLI("sandbox", "create", a)
	ep := h.Sandbox(a).NetworkSettings.Networks["bridge"]
	if ep.GlobalIPv6Address == "" || ep.IPv6Gateway != strings.TrimSuffix(n.IPAM.Config[1].Subnet, "/64")+"1" {
		t.Fatalf("endpoint on the default network: %+v", ep)
	}
	if out := h.MustCLI("exec", a, "--", "ip", "-6", "route"); !strings.Contains(out, "default via "+ep.IPv6Gateway) {
		t.Fatalf("IPv6 routes:\n%s", out)
	}
}

// Sandboxes of a dual-stack network reach each other and the gateway over
// IPv6. Expected to fail until the datapath carries IPv6 (it drops it at
// the sandboxes' veths, DROP_NO_IPV6).
func TestIPv6SandboxToSandboxTraffic(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	dual := h.Name("dual")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd12:3456:789a::/64", dual)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", dual)
	h.MustCLI("sandbox", "create", b, "--network", dual)
	for _, dst := range []string{h.Sandbox(b).NetworkSettings.Networks[dual].GlobalIPv6Address, "fd12:3456:789a::1"} {
		if out, err := h.CLI("exec", a, "--", "busybox", "ping", "-6", "-c1", "-W2", dst); err != nil {
			t.Errorf("ping6 %s from %s: %v\n%s", dst, a, err, out)
		}
	}
}

package test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

func TestDefaultNetwork(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	var nets []api.Network
	if err := json.Unmarshal([]byte(h.MustCLI("network", "ls", "-o", "json")), &nets); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nets {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"bridge", "host", "none"}) {
		t.Fatalf("networks %v, want the predefined bridge, host, none", names)
	}
	br := nets[0]
	if br.Options["com.docker.network.bridge.name"] != "ebpf0" || br.IPAM.Config[0].Subnet != "172.17.0.0/16" {
		t.Fatalf("default network: %+v", br)
	}
	if out := h.InHost("ip", "-4", "-o", "addr", "show", "ebpf0"); !strings.Contains(out, "172.17.0.1/16") {
		t.Fatalf("ebpf0 has no gateway address: %s", out)
	}
	// Without --network, a sandbox joins the default network, like docker run.
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a)
	h.MustCLI("sandbox", "create", b)
	if ip := h.IP(a, "bridge"); ip != "172.17.0.2" {
		t.Fatalf("first sandbox got %s, want 172.17.0.2", ip)
	}
	testbed.Serve(t, h.NS(b))
	h.MustReach(a, h.IP(b, "bridge"))
}

// The default network skips pools that overlap a route of the host.
func TestDefaultNetworkAvoidsRoutes(t *testing.T) {
	t.Parallel()
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		// 172.17.0.0/16 is connected and 172.18.0.0/16 routed.
		h.InHost("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
		h.InHost("ip", "addr", "add", "172.17.5.1/16", "dev", "up0")
		h.InHost("ip", "link", "set", "up0", "up")
		h.InHost("ip", "link", "set", "up1", "up")
		h.InHost("ip", "route", "add", "172.18.0.0/16", "via", "172.17.0.9")
	})
	n, err := h.Client.Network(t.Context(), "bridge")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.IPAM.Config[0].Subnet; got != "172.19.0.0/16" {
		t.Fatalf("default network on %s, want 172.19.0.0/16 (first pool free of routes)", got)
	}
	// A user network without --subnet takes the next free pool.
	h.MustCLI("network", "create", h.Name("auto"))
	n, _ = h.Client.Network(t.Context(), h.Name("auto"))
	if got := n.IPAM.Config[0].Subnet; got != "172.20.0.0/16" {
		t.Fatalf("user network on %s, want 172.20.0.0/16", got)
	}
}

func TestUserNetworkWithRangeAndStaticIP(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	net := h.Name("app")
	h.MustCLI("network", "create", "--subnet", "172.19.0.0/16", "--gateway", "172.19.0.1", "--ip-range", "172.19.5.0/24", net)
	web, job := h.Name("web"), h.Name("job")
	h.MustCLI("sandbox", "create", web, "--network", net, "--ip", "172.19.5.10", "--alias", "www")
	h.MustCLI("sandbox", "create", job, "--network", net)
	if ip := h.IP(web, net); ip != "172.19.5.10" {
		t.Fatalf("static address: got %s", ip)
	}
	if ip := h.IP(job, net); ip != "172.19.5.0" {
		t.Fatalf("dynamic address from the range: got %s, want 172.19.5.0", ip)
	}
	sb := h.Sandbox(web)
	ep := sb.NetworkSettings.Networks[net]
	if ep.MacAddress != "02:42:ac:13:05:0a" || ep.Interface != "eth0" || !slices.Equal(ep.Aliases, []string{"www"}) {
		t.Fatalf("endpoint: %+v", ep)
	}
	// The sandbox side matches the record: MAC, address, default route.
	out := h.MustCLI("exec", web, "--", "ip", "-o", "link", "show", "eth0")
	if !strings.Contains(out, "02:42:ac:13:05:0a") {
		t.Fatalf("eth0 MAC: %s", out)
	}
	if out := h.MustCLI("exec", web, "--", "ip", "route"); !strings.Contains(out, "default via 172.19.0.1 dev eth0") {
		t.Fatalf("routes: %s", out)
	}
	if out := h.MustCLI("exec", web, "--", "cat", "/etc/hosts"); !strings.Contains(out, "172.19.5.10\t"+web) {
		t.Fatalf("/etc/hosts in the sandbox: %s", out)
	}
	var inspect []api.Network
	json.Unmarshal([]byte(h.MustCLI("network", "inspect", net)), &inspect)
	c := inspect[0].Containers[sb.ID]
	if c.Name != web || c.IPv4Address != "172.19.5.10/16" || inspect[0].IPAM.Config[0].IPRange != "172.19.5.0/24" {
		t.Fatalf("network inspect: %+v", inspect[0])
	}
	testbed.Serve(t, h.NS(web))
	h.MustReach(job, "172.19.5.10")
	// An address goes back to the pool on rm, and is not reused before the pool wraps.
	h.MustCLI("sandbox", "rm", job)
	h.MustCLI("sandbox", "create", job, "--network", net)
	if ip := h.IP(job, net); ip != "172.19.5.1" {
		t.Fatalf("recreated sandbox got %s, want 172.19.5.1 (no reuse before wrap)", ip)
	}
}

func TestICCDisabled(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	net := h.Name("noicc")
	h.MustCLI("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", net)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", net)
	h.MustCLI("sandbox", "create", b, "--network", net)
	testbed.Serve(t, h.NS(b))
	before := h.Counter("drop_icc")
	h.MustNotReach(a, h.IP(b, net))
	if after := h.Counter("drop_icc"); after <= before {
		t.Fatalf("drop_icc counter did not move: %d -> %d", before, after)
	}
	// The host (gateway) is still reachable.
	gw := h.Sandbox(a).NetworkSettings.Networks[net].Gateway
	if err := h.Ping(a, gw); err != nil {
		t.Fatal(err)
	}
}

func TestNetworksAreIsolatedUntilConnected(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	n1, n2 := h.Name("n1"), h.Name("n2")
	h.MustCLI("network", "create", n1)
	h.MustCLI("network", "create", n2)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", n1)
	h.MustCLI("sandbox", "create", b, "--network", n2)
	testbed.Serve(t, h.NS(a))
	testbed.Serve(t, h.NS(b))
	bIP, aIP := h.IP(b, n2), h.IP(a, n1)

	before := h.Counter("drop_cross_network")
	h.MustNotReach(a, bIP)
	h.MustNotReach(b, aIP)
	if after := h.Counter("drop_cross_network"); after < before+6 {
		t.Fatalf("drop_cross_network moved %d -> %d, want at least one drop per attempt", before, after)
	}

	h.MustCLI("network", "connect", n2, a)
	if sb := h.Sandbox(a); sb.NetworkSettings.Networks[n2].Interface != "eth1" {
		t.Fatalf("second network's interface: %+v", sb.NetworkSettings.Networks)
	}
	h.MustReach(a, bIP)

	h.MustCLI("network", "disconnect", n2, a)
	h.MustNotReach(a, bIP)
	if out := h.MustCLI("exec", a, "--", "ip", "-o", "link"); strings.Contains(out, "eth1") {
		t.Fatalf("eth1 survived disconnect: %s", out)
	}
	// The default route stayed with the first network.
	if out := h.MustCLI("exec", a, "--", "ip", "route"); !strings.Contains(out, "default via") {
		t.Fatalf("no default route after disconnect: %s", out)
	}
}

func TestInternalNetwork(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	outside := h.AddOutside()
	testbed.Serve(t, outside.NS)
	in, open := h.Name("int"), h.Name("open")
	h.MustCLI("network", "create", "--internal", in)
	h.MustCLI("network", "create", open)
	a, b, c := h.Name("a"), h.Name("b"), h.Name("c")
	h.MustCLI("sandbox", "create", a, "--network", in)
	h.MustCLI("sandbox", "create", b, "--network", in)
	h.MustCLI("sandbox", "create", c, "--network", open)
	testbed.Serve(t, h.NS(a))

	// Routing to the outside works from an ordinary network...
	h.MustReach(c, outside.IP)
	// ...but not from an internal one, in either direction.
	h.MustReach(b, h.IP(a, in))
	h.MustNotReach(a, outside.IP)
	if err := testbed.TCP(outside.NS, h.IP(a, in)); err == nil {
		t.Fatal("the outside reached a sandbox on an internal network")
	}
	if h.Counter("drop_internal") == 0 {
		t.Fatal("drop_internal did not count")
	}
	if out := h.MustCLI("exec", a, "--", "ip", "route"); strings.Contains(out, "default") {
		t.Fatalf("a sandbox on an internal network got a default route: %s", out)
	}
}

func TestContainerHostAndNoneModes(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	web, side, hst, none := h.Name("web"), h.Name("side"), h.Name("h"), h.Name("n")
	h.MustCLI("sandbox", "create", web)
	h.MustCLI("sandbox", "create", side, "--network", "container:"+web)
	h.MustCLI("sandbox", "create", hst, "--network", "host")
	h.MustCLI("sandbox", "create", none, "--network", "none")

	// container: shares the namespace: the same single eth0 with the same address.
	webAddrs := h.MustCLI("exec", web, "--", "ip", "-4", "-o", "addr")
	sideAddrs := h.MustCLI("exec", side, "--", "ip", "-4", "-o", "addr")
	if webAddrs != sideAddrs || strings.Count(sideAddrs, ": eth0 ") != 1 {
		t.Fatalf("container mode does not share the namespace:\nweb:  %s\nside: %s", webAddrs, sideAddrs)
	}
	testbed.Serve(t, h.NS(web))
	if err := testbed.TCP(h.NS(side), "127.0.0.1"); err != nil {
		t.Fatalf("side cannot reach web's server on localhost: %v", err)
	}
	if got := h.Sandbox(side).HostConfig.NetworkMode; got != "container:"+web {
		t.Fatalf("network mode %q", got)
	}
	// web cannot go while side shares its namespace.
	if out, err := h.CLI("sandbox", "rm", web); err == nil || !strings.Contains(out, "in use by "+side) {
		t.Fatalf("rm of a shared sandbox: %v %s", err, out)
	}

	// host sees the host's interfaces.
	if out := h.MustCLI("exec", hst, "--", "ip", "-o", "link"); !strings.Contains(out, "ebpf0") {
		t.Fatalf("host mode does not see the host's bridge: %s", out)
	}
	// none has only lo.
	out := h.MustCLI("exec", none, "--", "ip", "-o", "link")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "lo:") {
		t.Fatalf("none mode interfaces: %s", out)
	}
	for _, sb := range []string{side, hst, none, web} {
		h.MustCLI("sandbox", "rm", sb)
	}
	if out := h.MustCLI("sandbox", "ls", "-o", "json"); out != "[]" {
		t.Fatalf("sandboxes left: %s", out)
	}
}

func TestMacvlan(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	// The parent is a veth whose peer is up (macvlan children need carrier).
	h.InHost("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	h.InHost("ip", "link", "set", "lan0", "up")
	h.InHost("ip", "link", "set", "lan1", "up")
	lan := h.Name("lan")
	h.MustCLI("network", "create", "-d", "macvlan", "--subnet", "192.168.57.0/24", "--gateway", "192.168.57.1", "-o", "parent=lan0", lan)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", lan)
	h.MustCLI("sandbox", "create", b, "--network", lan, "--ip", "192.168.57.50")
	testbed.Serve(t, h.NS(b))
	h.MustReach(a, "192.168.57.50")
	if out := h.MustCLI("exec", a, "--", "ip", "-d", "-o", "link", "show", "eth0"); !strings.Contains(out, "macvlan mode bridge") {
		t.Fatalf("eth0 is not a bridge-mode macvlan: %s", out)
	}
	h.MustCLI("sandbox", "rm", a, b)
	h.MustCLI("network", "rm", lan)
}

func TestRunAndExec(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	job := h.Name("job")
	out := h.MustCLI("run", "--rm", "--name", job, "--", "sh", "-c", "ip -4 -o addr show eth0; exit 0")
	if !strings.Contains(out, "172.17.0.2/16") {
		t.Fatalf("run output: %s", out)
	}
	if out := h.MustCLI("sandbox", "ls", "-o", "json"); out != "[]" {
		t.Fatalf("--rm left %s", out)
	}
	// The command's exit status comes back.
	if _, err := h.CLI("run", "--rm", "--name", job, "--", "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit status: %v", err)
	}
}

func TestRemoveSandboxWithProcesses(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	sb := h.Name("busy")
	h.MustCLI("sandbox", "create", sb)
	bg := h.StartInSandbox(sb, "sleep", "60")
	out, err := h.CLI("sandbox", "rm", sb)
	if err == nil || !strings.Contains(out, "has running processes") {
		t.Fatalf("rm without -f: %v %s", err, out)
	}
	h.MustCLI("sandbox", "rm", "-f", sb)
	if err := bg.Wait(); err == nil {
		t.Fatal("the process in the sandbox survived rm -f")
	}
}

package test

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// newCNI is cnitool for a test, its network configurations in a
// directory of the test's own.
func newCNI(t testing.TB) *testbed.CNI { return testbed.NewCNI(t) }

// containerNS makes a namespace standing for a container, removed when
// the test ends.
func containerNS(t testing.TB, h *testbed.Host, name string) string {
	t.Helper()
	ns := h.Name(name)
	h.MustRun("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	h.MustRun("ip", "-n", ns, "link", "set", "lo", "up")
	return "/run/netns/" + ns
}

// assertNothingLeft fails when the daemon still holds an endpoint, a
// published port or a CNI sandbox.
func assertNothingLeft(t *testing.T, h *testbed.Host, when string) {
	t.Helper()
	st := h.Status()
	if len(st.Endpoints) != 0 || st.HeldPorts != 0 {
		t.Errorf("%s: %d endpoints and %d held ports left", when, len(st.Endpoints), st.HeldPorts)
	}
	if sbs := sandboxNames(t, h); len(sbs) != 0 {
		t.Errorf("%s: sandboxes left: %v", when, sbs)
	}
}

// sandboxNames lists the names of the host's sandboxes.
func sandboxNames(t *testing.T, h *testbed.Host) []string { return listedNames(t, h, "sandbox") }

// listedNames are the names `ebpfnet KIND ls` lists (sandbox, network).
func listedNames(t *testing.T, h *testbed.Host, kind string) []string {
	t.Helper()
	var listed []struct{ Name string }
	if err := json.Unmarshal([]byte(h.MustCLI(kind, "ls", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range listed {
		names = append(names, l.Name)
	}
	return names
}

// servesPublished runs the echo server in the container at ns and checks
// its port published on 8080 from everywhere it answers: an outside client,
// whose own address the container sees, over TCP and UDP, and the host
// through 127.0.0.1 and through its own address.
func servesPublished(t *testing.T, h *testbed.Host, out testbed.Outside, ns string) {
	t.Helper()
	testbed.Serve(t, ns)
	if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
		t.Errorf("the container saw %s, want the client's own address %s", peer, out.IP)
	}
	mustWork(t, "udp from outside", testbed.UDPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to 127.0.0.1:8080", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))
	mustWork(t, "host to its own address", testbed.TCPTo(h.NetNS, hostIP+":8080"))
}

// TestCNIMainMode drives ebpfnet's CNI plugin with cnitool: ADD attaches a
// namespace to an ebpfnet network and publishes its port mappings, CHECK
// finds damage, DEL leaves nothing, also twice, after a kill -9 of the
// daemon, and when the namespace is gone; GC and STATUS answer.
func TestCNIMainMode(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	h.MustCLI("network", "create", "--subnet", "10.96.0.0/24", h.Name("cninet"))
	h.MustCLI("network", "create", "--subnet", "10.95.0.0/24", h.Name("second"))
	plugin := func(network string) map[string]any {
		return map[string]any{"type": "ebpfnet", "network": network, "socket": h.Socket(),
			"capabilities": map[string]bool{"portMappings": true, "ips": true, "mac": true, "aliases": true}}
	}
	c.Conflist("ebnet", plugin(h.Name("cninet")))
	c.Conflist("second", plugin(h.Name("second")))
	ns := containerNS(t, h, "c1")

	res := c.Must("add", "ebnet", ns, testbed.PortMappings("8080:7777/tcp", "8080:7777/udp"))
	var result struct {
		Interfaces []struct{ Name, Mac, Sandbox string }
		IPs        []struct{ Address, Gateway string }
		Routes     []struct{ Dst, GW string }
	}
	if err := json.Unmarshal([]byte(res), &result); err != nil || len(result.IPs) != 1 || len(result.Routes) != 1 {
		t.Fatalf("ADD's result: %v\n%s", err, res)
	}
	addr := netip.MustParsePrefix(result.IPs[0].Address)
	if !netip.MustParsePrefix("10.96.0.0/24").Contains(addr.Addr()) || result.IPs[0].Gateway != "10.96.0.1" ||
		result.Routes[0].GW != "10.96.0.1" || result.Interfaces[1].Name != "eth0" || result.Interfaces[1].Sandbox != ns {
		t.Errorf("ADD's result is not the attachment:\n%s", res)
	}
	servesPublished(t, h, out, ns)
	mustWork(t, "container to the outside", testbed.TCP(ns, out.IP))
	assertNoRuleNorProxy(t, h, "8080")
	names := sandboxNames(t, h)
	if len(names) != 1 || !strings.HasPrefix(names[0], "cnitool-") || !strings.HasSuffix(names[0], ":eth0") {
		t.Fatalf("the attachment's sandboxes are %q, want one CONTAINERID:eth0", names)
	}
	if got := h.MustCLI("port", strings.TrimSuffix(names[0], ":eth0")); !strings.Contains(got, "7777/tcp -> 0.0.0.0:8080") {
		t.Errorf("ebpfnet port CONTAINERID:\n%s", got)
	}

	// A second interface of the same container on a second network.
	c.Must("add", "second", ns, "CNI_IFNAME=eth1")
	mustWork(t, "the container on its second network to the outside", testbed.TCP(ns, out.IP))

	c.Must("check", "ebnet", ns)
	c.Must("check", "second", ns, "CNI_IFNAME=eth1")
	h.MustRun("ip", "-n", filepath.Base(ns), "route", "del", "default")
	if msg, err := c.Run("check", "ebnet", ns); err == nil || !strings.Contains(msg, "no default route") {
		t.Errorf("CHECK after the default route was removed: %v %s", err, msg)
	}
	h.MustRun("ip", "-n", filepath.Base(ns), "addr", "flush", "dev", "eth0")
	if msg, err := c.Run("check", "ebnet", ns); err == nil || !strings.Contains(msg, addr.Addr().String()) {
		t.Errorf("CHECK after the address was removed: %v %s, want a failure naming %s", err, msg, addr.Addr())
	}

	c.Must("status", "ebnet", ns)
	for _, network := range []string{"ebnet", "second"} {
		c.Must("del", network, ns, "CNI_IFNAME="+map[string]string{"ebnet": "eth0", "second": "eth1"}[network])
	}
	c.Must("del", "ebnet", ns) // again
	assertNothingLeft(t, h, "after DEL")
	mustFail(t, "outside to 8080 after DEL", testbed.TCPTo(out.NS, hostIP+":8080"))

	// DEL after the daemon's kill -9, with the namespace gone already.
	c.Must("add", "ebnet", ns, testbed.PortMappings("8080:7777/tcp"))
	h.Stop(syscall.SIGKILL)
	if _, err := c.Run("status", "ebnet", ns); err == nil {
		t.Error("STATUS succeeded with the daemon dead")
	}
	h.Start()
	h.MustRun("ip", "netns", "del", filepath.Base(ns))
	c.Must("del", "ebnet", ns)
	assertNothingLeft(t, h, "after DEL of a dead namespace")

	// GC removes what the runtime no longer names: here, everything. The
	// first asks for a MAC of its own (the mac capability).
	g1 := containerNS(t, h, "g1")
	c.Must("add", "ebnet", g1, `CAP_ARGS={"mac":"02:00:00:00:00:99","aliases":{"ebnet":["db"]}}`)
	if link := h.MustRun("ip", "-n", filepath.Base(g1), "link", "show", "eth0"); !strings.Contains(link, "02:00:00:00:00:99") {
		t.Errorf("the mac capability was not honoured:\n%s", link)
	}
	mustWork(t, "the container with a MAC of its own to the outside", testbed.TCP(g1, out.IP))
	if sbs := h.MustCLI("sandbox", "ls", "-o", "json"); !strings.Contains(sbs, `"db"`) {
		t.Errorf("the aliases capability was not recorded:\n%s", sbs)
	}
	c.Must("add", "ebnet", containerNS(t, h, "g2"))
	c.Must("gc", "ebnet", ns)
	assertNothingLeft(t, h, "after GC")

	// The oldest spec version with CHECK: 0.4.0's result shape.
	c.Spec = "0.4.0"
	c.Conflist("old", plugin(h.Name("cninet")))
	old := containerNS(t, h, "old")
	if res := c.Must("add", "old", old); !strings.Contains(res, `"cniVersion": "0.4.0"`) && !strings.Contains(res, `"cniVersion":"0.4.0"`) {
		t.Errorf("ADD at 0.4.0 answered:\n%s", res)
	}
	c.Must("check", "old", old)
	c.Must("del", "old", old)
	c.Spec = "1.1.0"

	// Bad input changes nothing.
	ns2 := containerNS(t, h, "c2")
	for _, bad := range []struct{ env, want string }{
		{testbed.PortMappings("0:7777/tcp"), "invalid port mapping 0:7777/tcp"},
		{testbed.PortMappings("8080:7777/sctp"), `protocol "sctp"`},
		{`CAP_ARGS={"ips":["10.0.0.5/24"]}`, "10.0.0.5"},
	} {
		if msg, err := c.Run("add", "ebnet", ns2, bad.env); err == nil || !strings.Contains(msg, bad.want) {
			t.Errorf("ADD with %s: %v %s, want a refusal naming %q", bad.env, err, msg, bad.want)
		}
	}
	assertNothingLeft(t, h, "after refused ADDs")
}

// TestCNIChainedMode chains ebpfnet after the reference bridge plugin, in
// place of portmap, through the scenarios of portmap's own integration
// test (chainedAfter); and publishes within the source lists of its
// configuration.
func TestCNIChainedMode(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	chainedAfter(t, h, out, c, afterBridge)

	// Source lists from the configuration: the client outside is refused,
	// the container reaching itself is not.
	plugins := chainedPlugins(t, h)
	plugins[1]["publishAllow"] = []string{"10.94.0.0/24"}
	c.Conflist("chainlists", plugins...)
	ns := containerNS(t, h, "lists")
	c.Must("add", "chainlists", ns, testbed.PortMappings("8080:7777/tcp"))
	testbed.Serve(t, ns)
	mustFail(t, "outside to 8080, which the configuration's lists refuse", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "the container to itself through the host, which they allow", testbed.TCPTo(ns, hostIP+":8080"))
	c.Must("del", "chainlists", ns)
	assertNothingLeft(t, h, "after DEL of the attachment with lists")
}

// TestNerdctl runs a container with nerdctl on containerd, attached by
// ebpfnet's CNI plugin: -p publishes through the datapath, the client's
// address is kept, and nerdctl rm -f leaves nothing.
func TestNerdctl(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	c := newCNI(t)
	nerdctl := testbed.Nerdctl.MustBuild(t)
	h.MustCLI("network", "create", "--subnet", "10.89.0.0/24", h.Name("nnet"))
	c.Spec = "1.0.0"
	c.Conflist("ebnet", map[string]any{"type": "ebpfnet", "network": h.Name("nnet"), "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	state := t.TempDir()
	// nerdctl takes one plugin directory, and makes its default network
	// with the reference plugins.
	plugins := c.PluginDir()
	run := func(args ...string) (string, error) {
		cmd := exec.Command(nerdctl, append([]string{"--address", d.Containerd, "--namespace", "ebpfnet-test", "--data-root", state,
			"--cni-path", plugins, "--cni-netconfpath", c.Dir, "--snapshotter", "native"}, args...)...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("nerdctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	t.Cleanup(func() { run("rm", "-f", "n1") })
	image := filepath.Join(t.TempDir(), "busybox.tar")
	d.MustCLI("save", "-o", image, "busybox")
	must("load", "-i", image)

	must("run", "-d", "--name", "n1", "--network", "ebnet", "-p", "8080:7777", "busybox", "sleep", "600")
	pid := must("inspect", "-f", "{{.State.Pid}}", "n1")
	testbed.Serve(t, "/proc/"+pid+"/ns/net")
	if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
		t.Errorf("the container saw %s, want the client's own address %s", peer, out.IP)
	}
	mustWork(t, "host to 127.0.0.1:8080", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))
	must("rm", "-f", "n1")
	assertNothingLeft(t, h, "after nerdctl rm -f")
}

// TestCNIMainModeIPv6 attaches a container to a dual-stack network: ADD
// returns an address, a gateway and a default route per family, and
// publishes on both families, on every address and on an IPv6 hostIP.
func TestCNIMainModeIPv6(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "10.96.0.0/24", "--subnet", "fd00:c1::/64", h.Name("cninet6"))
	c.Conflist("ebnet6", map[string]any{"type": "ebpfnet", "network": h.Name("cninet6"), "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	ns := containerNS(t, h, "c6")
	res := c.Must("add", "ebnet6", ns, testbed.PortMappings("8080:7777/tcp", "[::]:8080:7777/tcp", "[::1]:8081:7777/tcp"))
	var result struct {
		IPs    []struct{ Address, Gateway string }
		Routes []struct{ Dst, GW string }
	}
	if err := json.Unmarshal([]byte(res), &result); err != nil || len(result.IPs) != 2 || len(result.Routes) != 2 {
		t.Fatalf("ADD's result, want an address and a route per family: %v\n%s", err, res)
	}
	if a := netip.MustParsePrefix(result.IPs[1].Address); !netip.MustParsePrefix("fd00:c1::/64").Contains(a.Addr()) ||
		result.IPs[1].Gateway != "fd00:c1::1" || result.Routes[1].Dst != "::/0" || result.Routes[1].GW != "fd00:c1::1" {
		t.Errorf("ADD's IPv6 address and route:\n%s", res)
	}
	testbed.Serve(t, ns)
	if peer := peerOf(t, out.NS, "tcp6", net.JoinHostPort(out.HostIP6, "8080")); peer.Addr().String() != out.IP6 {
		t.Errorf("the container saw %s over IPv6, want the client's own address %s", peer, out.IP6)
	}
	mustWork(t, "outside over IPv4", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to [::1]:8081", testbed.TCPTo(h.NetNS, "[::1]:8081"))
	mustFail(t, "outside to [::1]:8081's port on the host's address", testbed.TCPTo(out.NS, net.JoinHostPort(out.HostIP6, "8081")))
	mustWork(t, "container to the outside over IPv6", testbed.TCP(ns, out.IP6))
	// CHECK sees both families.
	c.Must("check", "ebnet6", ns)
	h.MustRun("ip", "-n", filepath.Base(ns), "-6", "route", "del", "default")
	if msg, err := c.Run("check", "ebnet6", ns); err == nil || !strings.Contains(msg, "no default route") {
		t.Errorf("CHECK after the IPv6 default route was removed: %v %s", err, msg)
	}
	v6 := netip.MustParsePrefix(result.IPs[1].Address)
	h.MustRun("ip", "-n", filepath.Base(ns), "addr", "del", v6.String(), "dev", "eth0")
	if msg, err := c.Run("check", "ebnet6", ns); err == nil || !strings.Contains(msg, v6.Addr().String()) {
		t.Errorf("CHECK after the IPv6 address was removed: %v %s, want a failure naming %s", err, msg, v6.Addr())
	}
	c.Must("del", "ebnet6", ns)
	assertNothingLeft(t, h, "after DEL")
}

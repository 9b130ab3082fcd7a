package test

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// dockerHost is a publishing host with a real dockerd in its namespace and
// a busybox image; its ebpfnet daemon is Docker's plugin h.Prefix.
func dockerHost(t *testing.T, dockerdFlags ...string) (*testbed.Host, testbed.Outside, *testbed.Docker) {
	t.Helper()
	testenv.RequirePrivileges(t)
	if !testbed.DockerInstalled() {
		t.Skip("needs dockerd, containerd and Debian's docker client (docker.io)")
	}
	h, out := newPublishingHost(t)
	d := testbed.StartDocker(t, h.NetNS, dockerdFlags...)
	d.ImportImage(testbed.BusyboxRootfs(t), "busybox")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log:\n%s", d.Log())
		}
	})
	return h, out, d
}

// endpointOf is the ebpfnet sandbox that holds a container's endpoint on
// a network.
func endpointOf(t *testing.T, h *testbed.Host, d *testbed.Docker, container, network string) api.Sandbox {
	t.Helper()
	id := d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \""+network+"\").EndpointID}}", container)
	return h.Sandbox(id)
}

// TestDockerPlugin walks a Docker user's story on an ebpfnet network: docker
// run -p publishes through the datapath, with no rule and no proxy.
func TestDockerPlugin(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	plugin := h.Prefix
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.97.0.0/24", "web")
	d.MustCLI("run", "-d", "--name", "w1", "--network", "web", "-p", "8080:7777", "-p", "9000:7777/udp", "busybox", "sleep", "600")
	key := d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "w1")
	testbed.Serve(t, key)

	if ip := d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \"web\").IPAddress}}", "w1"); !netip.MustParsePrefix("10.97.0.0/24").Contains(netip.MustParseAddr(ip)) {
		t.Fatalf("w1 has address %s, want one of 10.97.0.0/24 from ebpfnet's IPAM", ip)
	}
	// Docker took the gateway from Join: no second network for it.
	if nets := d.MustCLI("inspect", "-f", "{{len .NetworkSettings.Networks}}", "w1"); nets != "1" {
		t.Errorf("w1 is on %s networks, want only web (no docker_gwbridge)", nets)
	}

	peer := peerOf(t, out.NS, "tcp4", hostIP+":8080")
	if peer.Addr().String() != out.IP {
		t.Errorf("the container saw %s, want the client's own address %s", peer, out.IP)
	}
	mustWork(t, "udp from outside", testbed.UDPTo(out.NS, hostIP+":9000"))
	mustWork(t, "tcp from the host to 127.0.0.1", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))

	ep := endpointOf(t, h, d, "w1", "web")
	if got := ep.NetworkSettings.Ports["7777/tcp"]; len(got) != 1 || got[0].HostPort != "8080" {
		t.Errorf("ebpfnet publishes %v for 7777/tcp, want host port 8080", ep.NetworkSettings.Ports)
	}
	assertNoRuleNorProxy(t, h, "8080", "9000")
	// docker port shows nothing for a plugin network; ebpfnet port does, by
	// container name or ID, asking the dockerd that DOCKER_HOST names.
	port := func(ref string) (string, error) { return h.CLIWith([]string{"DOCKER_HOST=" + d.Host}, "port", ref) }
	for _, ref := range []string{"w1", d.MustCLI("inspect", "-f", "{{.Id}}", "w1")[:12]} {
		got, err := port(ref)
		if err != nil {
			t.Fatalf("ebpfnet port %s: %v\n%s", ref, err, got)
		}
		if !strings.Contains(got, "7777/tcp -> 0.0.0.0:8080") || !strings.Contains(got, "7777/udp -> 0.0.0.0:9000") {
			t.Errorf("ebpfnet port %s:\n%s", ref, got)
		}
	}
	if msg, err := port("nosuch"); err == nil || !strings.Contains(msg, "nosuch") {
		t.Errorf("ebpfnet port nosuch: %v %s, want a refusal naming it", err, msg)
	}

	// HostPort 0: ebpfnet picks the port.
	d.MustCLI("run", "-d", "--name", "r1", "--network", "web", "-p", "7777", "busybox", "sleep", "600")
	testbed.Serve(t, d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "r1"))
	picked := endpointOf(t, h, d, "r1", "web").NetworkSettings.Ports["7777/tcp"]
	if len(picked) != 1 || picked[0].HostPort == "0" {
		t.Fatalf("r1 publishes %v, want one host port ebpfnet picked", picked)
	}
	mustWork(t, "tcp to the picked port", testbed.TCPTo(out.NS, hostIP+":"+picked[0].HostPort))

	// Docker's embedded DNS still answers names on a plugin network.
	if out, err := d.CLI("exec", "r1", "nslookup", "w1"); err != nil || !strings.Contains(out, "10.97.0.") {
		t.Errorf("docker exec r1 nslookup w1: %v\n%s", err, out)
	}

	// A second network, connected and disconnected.
	d.MustCLI("network", "create", "-d", plugin, "other")
	d.MustCLI("network", "connect", "other", "w1")
	if got := endpointOf(t, h, d, "w1", "other"); len(got.NetworkSettings.Networks) != 1 {
		t.Errorf("w1's endpoint on other: %+v", got)
	}
	d.MustCLI("network", "disconnect", "other", "w1")
	mustWork(t, "tcp from outside after a disconnect", testbed.TCPTo(out.NS, hostIP+":8080"))

	d.MustCLI("rm", "-f", "w1", "r1")
	d.MustCLI("network", "rm", "web", "other")
	st := h.Status()
	if len(st.Endpoints) != 0 || st.HeldPorts != 0 {
		t.Errorf("after docker rm and network rm: %d endpoints, %d held ports left", len(st.Endpoints), st.HeldPorts)
	}
	var nets []api.Network
	if err := json.Unmarshal([]byte(h.MustCLI("network", "ls", "-o", "json")), &nets); err == nil {
		for _, n := range nets {
			if strings.HasPrefix(n.Name, "docker-") {
				t.Errorf("network %s outlived docker network rm", n.Name)
			}
		}
	}
	var sbs []api.Sandbox
	json.Unmarshal([]byte(h.MustCLI("sandbox", "ls", "-o", "json")), &sbs)
	if len(sbs) != 0 {
		t.Errorf("sandboxes outlived docker rm: %+v", sbs)
	}
	// Names, not the listing: a network ID in an alias may hold "ebc".
	for _, name := range h.LinkNames() {
		if strings.HasPrefix(name, "ebv") || strings.HasPrefix(name, "ebc") {
			t.Errorf("veth %s outlived docker rm", name)
		}
	}
	// The pool went back: the same subnet can be had again.
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.97.0.0/24", "again")
	d.MustCLI("network", "rm", "again")
}

// assertNoRuleNorProxy fails when an iptables or nftables rule of the host
// mentions one of ports, or a docker-proxy runs for one.
func assertNoRuleNorProxy(t *testing.T, h *testbed.Host, ports ...string) {
	t.Helper()
	rules := h.InHost("iptables-save") + h.InHost("nft", "list", "ruleset")
	for _, p := range ports {
		if strings.Contains(rules, "dport "+p) || strings.Contains(rules, ":"+p) {
			t.Errorf("a rule mentions port %s:\n%s", p, rules)
		}
		if out, err := exec.Command("pgrep", "-af", "docker-proxy.*-host-port "+p).Output(); err == nil {
			t.Errorf("docker-proxy runs for port %s:\n%s", p, out)
		}
	}
}

// TestDockerIsolation: a container on an ebpfnet network reaches the
// outside, and neither another ebpfnet network, nor Docker's own bridge,
// nor a CLI sandbox on another network; none of those reach it.
func TestDockerIsolation(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	plugin := h.Prefix
	d.MustCLI("network", "create", "-d", plugin, "--subnet", "10.97.0.0/24", "web")
	d.MustCLI("network", "create", "-d", plugin, "--subnet", "10.98.0.0/24", "other")
	d.MustCLI("run", "-d", "--name", "w1", "--network", "web", "busybox", "sleep", "600")
	d.MustCLI("run", "-d", "--name", "o1", "--network", "other", "busybox", "sleep", "600")
	d.MustCLI("run", "-d", "--name", "b1", "busybox", "sleep", "600") // Docker's default bridge
	cli := h.Name("cli")
	h.MustCLI("network", "create", h.Name("clinet"))
	h.MustCLI("sandbox", "create", "--network", h.Name("clinet"), cli)
	testbed.Serve(t, h.NS(cli))

	ipOf := func(c, n string) string {
		return d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \""+n+"\").IPAddress}}", c)
	}
	keyOf := func(c string) string { return d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", c) }
	w, o, b := ipOf("w1", "web"), ipOf("o1", "other"), ipOf("b1", "bridge")
	for _, c := range []string{"w1", "o1", "b1"} {
		testbed.Serve(t, keyOf(c))
	}

	mustWork(t, "w1 to the outside", testbed.TCP(keyOf("w1"), out.IP))
	for _, c := range []struct{ what, from, to string }{
		{"w1 to o1 (another ebpfnet network)", keyOf("w1"), o},
		{"o1 to w1", keyOf("o1"), w},
		{"w1 to b1 (Docker's bridge)", keyOf("w1"), b},
		{"b1 to w1", keyOf("b1"), w},
		{"w1 to a CLI sandbox", keyOf("w1"), h.IP(cli, h.Name("clinet"))},
		{"a CLI sandbox to w1", h.NS(cli), w},
	} {
		if testbed.TCP(c.from, c.to) == nil {
			t.Errorf("%s: got through, want it blocked", c.what)
		}
	}
}

// TestDockerNetworkOptions: Docker's bridge options mean on an ebpfnet
// network what they mean on Docker's bridge, with Docker's IPAM or
// ebpfnet's, with or without a subnet.
func TestDockerNetworkOptions(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	plugin := h.Prefix
	run := func(name, network string) string {
		d.MustCLI("run", "-d", "--name", name, "--network", network, "busybox", "sleep", "600")
		key := d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name)
		testbed.Serve(t, key)
		return key
	}
	ipOf := func(c, n string) string {
		return d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \""+n+"\").IPAddress}}", c)
	}

	// --internal: neighbours only.
	d.MustCLI("network", "create", "-d", plugin, "--internal", "intnet")
	i1, _ := run("i1", "intnet"), run("i2", "intnet")
	mustWork(t, "internal neighbours", testbed.TCP(i1, ipOf("i2", "intnet")))
	if testbed.TCP(i1, out.IP) == nil {
		t.Error("a container on an internal network reached the outside")
	}

	// enable_icc=false: no neighbours, the outside still.
	d.MustCLI("network", "create", "-d", plugin, "-o", "com.docker.network.bridge.enable_icc=false", "iccnet")
	c1, _ := run("c1", "iccnet"), run("c2", "iccnet")
	if testbed.TCP(c1, ipOf("c2", "iccnet")) == nil {
		t.Error("neighbours talked on an icc=false network")
	}
	mustWork(t, "icc=false, to the outside", testbed.TCP(c1, out.IP))

	// Docker's own IPAM, masquerade off, an MTU and a bridge name.
	d.MustCLI("network", "create", "-d", plugin, "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
		"-o", "com.docker.network.driver.mtu=1400", "-o", "com.docker.network.bridge.name="+h.Prefix+"br", "plain")
	m1 := run("m1", "plain")
	peer := peerOf(t, m1, "tcp4", out.IP+":7777")
	if peer.Addr().String() != ipOf("m1", "plain") {
		t.Errorf("masquerade off: the outside saw %s, want the container's own %s", peer.Addr(), ipOf("m1", "plain"))
	}
	if mtu, _ := d.CLI("exec", "m1", "cat", "/sys/class/net/eth0/mtu"); mtu != "1400" {
		t.Errorf("eth0's MTU is %q, want 1400", mtu)
	}
	h.InHost("ip", "link", "show", h.Prefix+"br")

	// ebpfnet's IPAM without a subnet takes a free pool.
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "auto")
	subnet := d.MustCLI("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "auto")
	a1 := run("a1", "auto")
	if !netip.MustParsePrefix(subnet).Contains(netip.MustParseAddr(ipOf("a1", "auto"))) {
		t.Errorf("a1 has %s, outside the pool %s", ipOf("a1", "auto"), subnet)
	}
	mustWork(t, "auto pool, to the outside", testbed.TCP(a1, out.IP))

	// ebpfnet.publish.allow: the ports published on the network take its
	// lists; the host's processes are not checked.
	d.MustCLI("network", "create", "-d", plugin, "-o", "ebpfnet.publish.allow=192.0.2.0/24", "lanonly")
	d.MustCLI("run", "-d", "--name", "l1", "--network", "lanonly", "-p", "8090:7777", "busybox", "sleep", "600")
	testbed.Serve(t, d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "l1"))
	if testbed.TCPTo(out.NS, hostIP+":8090") == nil {
		t.Error("a client outside 192.0.2.0/24 reached a port published on a network that allows only it")
	}
	mustWork(t, "the host to a port its network's lists limit", testbed.TCPTo(h.NetNS, "127.0.0.1:8090"))
	if got := endpointOf(t, h, d, "l1", "lanonly").NetworkSettings.Ports["7777/tcp"]; len(got) != 1 || len(got[0].Allow) != 1 {
		t.Errorf("l1's publication %+v, want its network's allow list", got)
	}

	// ebpfnet.egress.allow: the network's containers send to its prefixes
	// alone (names are Docker's resolver's, so a list holds prefixes).
	h.MustRun("ip", "-n", strings.TrimPrefix(out.NS, "/run/netns/"), "addr", "add", "10.99.0.40/24", "dev", "eth0")
	d.MustCLI("network", "create", "-d", plugin, "-o", "ebpfnet.egress.allow="+out.IP+"/32", "egress")
	e1 := run("e1", "egress")
	refused := h.ProgramCounter("from_container", "drop_egress_policy")
	mustWork(t, "a container to its network's egress list", testbed.TCP(e1, out.IP))
	if testbed.TCP(e1, "10.99.0.40") == nil || h.ProgramCounter("from_container", "drop_egress_policy") == refused {
		t.Error("a container of a network with an egress list reached an address in no prefix, or was not counted")
	}
	mustWork(t, "a container of another network to that address", testbed.TCP(a1, "10.99.0.40"))

	// A bad option changes nothing and says what is wrong.
	if msg, err := d.CLI("network", "create", "-d", plugin, "-o", "ebpfnet.publish.deny=lan", "bad"); err == nil || !strings.Contains(msg, `"lan"`) {
		t.Errorf("a deny list of lan: %v %s, want a refusal naming it", err, msg)
	}
	if msg, err := d.CLI("network", "create", "-d", plugin, "-o", "ebpfnet.egress.allow=a.test", "bad"); err == nil || !strings.Contains(msg, `"a.test"`) {
		t.Errorf("an egress list naming a.test: %v %s, want a refusal naming it", err, msg)
	}
	if msg, err := d.CLI("network", "create", "-d", plugin, "-o", "com.docker.network.driver.mtu=huge", "bad"); err == nil || !strings.Contains(msg, "huge") {
		t.Errorf("an MTU of huge: %v %s, want a refusal naming it", err, msg)
	}
	if nets := d.MustCLI("network", "ls", "-q", "-f", "name=bad"); nets != "" {
		t.Errorf("the refused network exists: %s", nets)
	}
}

// TestDockerRestarts: a kill -9 of the ebpfnet daemon and a restart of
// dockerd (with live-restore, so that its containers keep running), each
// under load: established and new connections keep working throughout,
// and Docker's calls work after each.
func TestDockerRestarts(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t, "--live-restore")
	plugin := h.Prefix
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "web")
	d.MustCLI("run", "-d", "--name", "w1", "--network", "web", "-p", "8080:7777", "busybox", "sleep", "600")
	testbed.Serve(t, d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "w1"))
	established, err := testbed.Dial(out.NS, "tcp4", hostIP+":8080", "")
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	load := startLoad(t, out.NS, hostIP+":8080")

	h.Stop(syscall.SIGKILL)
	time.Sleep(300 * time.Millisecond)
	h.Start()
	mustWork(t, "established flow after the daemon's kill -9", echoOn(established))
	d.MustCLI("run", "-d", "--name", "r1", "--network", "web", "-p", "8081:7777", "busybox", "sleep", "600")
	testbed.Serve(t, d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "r1"))
	mustWork(t, "a container run after the daemon's restart", testbed.TCPTo(out.NS, hostIP+":8081"))

	d.Stop(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	d.Start()
	mustWork(t, "established flow after dockerd's restart", echoOn(established))
	mustWork(t, "r1 after dockerd's restart", testbed.TCPTo(out.NS, hostIP+":8081"))

	ok, failed := load()
	t.Logf("%d connections during the restarts, %d failed", ok, failed)
	if failed != 0 || ok == 0 {
		t.Errorf("%d of %d connections failed during the restarts", failed, ok+failed)
	}
	d.MustCLI("rm", "-f", "w1", "r1")
	d.MustCLI("network", "rm", "web")
	if st := h.Status(); len(st.Endpoints) != 0 || st.HeldPorts != 0 {
		t.Errorf("after docker rm: %d endpoints, %d held ports left", len(st.Endpoints), st.HeldPorts)
	}
}

// startLoad opens new connections to addr from the namespace at ns, one
// every 10 ms, until the returned function stops it (or a minute passes)
// and reports how many worked and how many failed.
func startLoad(t *testing.T, ns, addr string) func() (ok, failed int) {
	t.Helper()
	var (
		mu        sync.Mutex
		okN, errN int
		done      = make(chan struct{})
		stopped   = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			select {
			case <-done:
				return
			default:
			}
			err := testbed.TCPTo(ns, addr)
			mu.Lock()
			if err != nil {
				errN++
				t.Logf("load: %v", err)
			} else {
				okN++
			}
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() (int, int) {
		once.Do(func() { close(done); <-stopped })
		mu.Lock()
		defer mu.Unlock()
		return okN, errN
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestDockerPluginIPv6 is a Docker user's dual-stack network: docker run -p
// publishes on both families through the datapath, the container gets an
// IPv6 address from ebpfnet's IPAM, and its IPv6 flows out are
// masqueraded.
func TestDockerPluginIPv6(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	plugin := h.Prefix
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6",
		"--subnet", "10.97.0.0/24", "--subnet", "fd00:d0::/64", "web6")
	d.MustCLI("run", "-d", "--name", "w6", "--network", "web6", "-p", "8080:7777", "-p", "9000:7777/udp", "busybox", "sleep", "600")
	key := d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "w6")
	testbed.Serve(t, key)
	ip6 := d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \"web6\").GlobalIPv6Address}}", "w6")
	if a, err := netip.ParseAddr(ip6); err != nil || !netip.MustParsePrefix("fd00:d0::/64").Contains(a) {
		t.Fatalf("w6 has IPv6 address %q, want one of fd00:d0::/64 from ebpfnet's IPAM", ip6)
	}
	published := net.JoinHostPort(out.HostIP6, "8080")
	if peer := peerOf(t, out.NS, "tcp6", published); peer.Addr().String() != out.IP6 {
		t.Errorf("the container saw %s over IPv6, want the client's own address %s", peer, out.IP6)
	}
	mustWork(t, "tcp from outside over IPv4", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "udp from outside over IPv6", testbed.UDPTo(out.NS, net.JoinHostPort(out.HostIP6, "9000")))
	mustWork(t, "tcp from the host to [::1]", testbed.TCPTo(h.NetNS, "[::1]:8080"))
	if o, err := d.CLI("exec", "w6", "ping", "-6", "-c1", "-W2", out.IP6); err != nil {
		t.Errorf("w6 pings the outside over IPv6: %v\n%s", err, o)
	}
	if peer := peerOf(t, key, "tcp6", net.JoinHostPort(out.IP6, "7777")); peer.Addr().String() != out.HostIP6 {
		t.Errorf("the outside saw w6 as %s, want the host's address %s (NAT66)", peer, out.HostIP6)
	}
	assertNoRuleNorProxy(t, h, "8080", "9000")
}

package test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// criHost is a publishing host whose pods containerd's CRI plugin runs,
// attached by the CNI configuration lists the test writes in c before
// it starts containerd.
func criHost(t *testing.T) (*testbed.Host, testbed.Outside, *testbed.CNI) {
	t.Helper()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	c.Spec = "1.0.0" // the newest containerd 1.6's CNI library speaks
	return h, out, c
}

// onPodNetwork makes the ebpfnet network pods are attached to in main
// mode, created with flags, and its CNI configuration list.
func onPodNetwork(t *testing.T, h *testbed.Host, c *testbed.CNI, flags ...string) string {
	t.Helper()
	podnet := h.Name("pods")
	h.MustCLI(append(append([]string{"network", "create"}, flags...), podnet)...)
	c.Conflist("pods", ebpfnetPlugin(h, podnet))
	return podnet
}

// ebpfnetPlugin is the main mode's configuration for network.
func ebpfnetPlugin(h *testbed.Host, network string) map[string]any {
	return map[string]any{"type": "ebpfnet", "network": network, "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}}
}

// chainedPlugins are the reference bridge plugin on 10.94.0.0/24, in the
// host's namespace, and ebpfnet chained after it in place of portmap.
func chainedPlugins(t testing.TB, h *testbed.Host) []map[string]any {
	return []map[string]any{
		{"type": "bridge", "bridge": h.Prefix + "br", "isGateway": true, "ipMasq": true, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": [][]map[string]string{{{"subnet": "10.94.0.0/24"}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}},
		{"type": "ebpfnet", "socket": h.Socket(), "capabilities": map[string]bool{"portMappings": true}},
	}
}

// attachments are the host's CNI attachments: CONTAINERID:IFNAME.
func attachments(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	var out []string
	for _, name := range sandboxNames(t, h) {
		if strings.Contains(name, ":") {
			out = append(out, name)
		}
	}
	return out
}

// hostVeths are the veths in the host's namespace, of ebpfnet's
// endpoints (driver.HostSidePrefix) and of the bridge plugin's.
func hostVeths(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	var out []string
	for _, name := range h.LinkNames() {
		if strings.HasPrefix(name, driver.HostSidePrefix) || strings.HasPrefix(name, "veth") {
			out = append(out, name)
		}
	}
	return out
}

// assertAttached fails unless the host's CNI attachments are those of
// pods, and its veths theirs alone.
func assertAttached(t *testing.T, h *testbed.Host, when string, pods ...testbed.Pod) {
	t.Helper()
	var want []string
	for _, p := range pods {
		want = append(want, p.ID+":eth0")
	}
	got := attachments(t, h)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: attachments %v, want %v", when, got, want)
	}
	if vs := hostVeths(t, h); len(vs) != len(pods) {
		t.Errorf("%s: veths %v, want %d, the pods'", when, vs, len(pods))
	}
}

// mustBeOn fails unless the pod's address is in subnet.
func mustBeOn(t *testing.T, p testbed.Pod, subnet string) {
	t.Helper()
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !netip.MustParsePrefix(subnet).Contains(ip) {
		t.Fatalf("pod %s has address %q, want one of %s", p.Name, p.IP, subnet)
	}
}

// webPorts are the hostPorts of the pods servesHostPorts checks: 8080 over
// TCP and UDP, and 8081 on 127.0.0.1.
var webPorts = []string{"8080:7777/tcp", "8080:7777/udp", "[127.0.0.1]:8081:7777/tcp"}

// servesHostPorts checks the webPorts of web, which serves: from outside
// with the client's own address, over UDP too; from the host on
// 127.0.0.1, 8081 from there alone; from client and from web itself by
// hairpin; with no rule or proxy for them.
func servesHostPorts(t *testing.T, h *testbed.Host, out testbed.Outside, web, client testbed.Pod) {
	t.Helper()
	if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
		t.Errorf("the pod saw %s, want the client's own address %s", peer.Addr(), out.IP)
	}
	mustWork(t, "outside to the UDP hostPort", testbed.UDPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to 127.0.0.1:8080", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))
	mustWork(t, "host to 127.0.0.1:8081", testbed.TCPTo(h.NetNS, "127.0.0.1:8081"))
	mustFail(t, "outside to the 127.0.0.1 hostPort", testbed.TCPTo(out.NS, hostIP+":8081"))
	mustWork(t, "pod to the hostPort (hairpin)", testbed.TCPTo(client.NetNS, hostIP+":8080"))
	mustWork(t, "pod to its own hostPort (hairpin)", testbed.TCPTo(web.NetNS, hostIP+":8080"))
	assertNoRuleNorProxy(t, h, "8080", "8081")
}

// isolatedFromOtherNetwork checks that a pod and a sandbox on another
// ebpfnet network reach each other neither way.
func isolatedFromOtherNetwork(t *testing.T, h *testbed.Host, p testbed.Pod) {
	t.Helper()
	other, stranger := h.Name("other"), h.Name("stranger")
	h.MustCLI("network", "create", "--subnet", "10.92.0.0/24", other)
	h.MustCLI("sandbox", "create", stranger, "--network", other)
	testbed.Serve(t, h.NS(stranger))
	mustFail(t, "pod to another network", testbed.TCP(p.NetNS, h.IP(stranger, other)))
	mustFail(t, "another network to a pod", testbed.TCP(h.NS(stranger), p.IP))
	h.MustCLI("sandbox", "rm", stranger)
	h.MustCLI("network", "rm", other)
}

// TestCRIMainMode runs pods as the kubelet does, through containerd's CRI
// plugin, on an ebpfnet network: they get addresses, reach each other and
// the outside (masqueraded), not another ebpfnet network; their hostPorts
// are reached from outside with the client's address kept, from the host
// on 127.0.0.1 and from a pod by hairpin, with no rule and no proxy; a
// hostIP limits a hostPort to that address. stopp and rmp leave nothing.
func TestCRIMainMode(t *testing.T) {
	t.Parallel()
	h, out, c := criHost(t)
	podnet := onPodNetwork(t, h, c, "--subnet", "10.91.0.0/24")
	cri := testbed.StartCRI(t, h.NetNS, c)
	before := mapEntries(t, h)

	web := cri.RunPod("web", append(webPorts, "["+hostIP2+"]:8082:7777/tcp")...)
	app := cri.StartContainer(web, "app", "sleep", "2147483647")
	if state := cri.MustCrictl("inspect", "-o", "go-template", "--template", "{{.status.state}}", app); state != "CONTAINER_RUNNING" {
		t.Fatalf("the pod's container is %s", state)
	}
	client := cri.RunPod("client")
	mustBeOn(t, web, "10.91.0.0/24")
	mustBeOn(t, client, "10.91.0.0/24")
	testbed.Serve(t, web.NetNS)
	testbed.Serve(t, client.NetNS)

	// Between pods, from the container itself too; to the outside,
	// masqueraded to the host's address.
	mustWork(t, "pod to pod", testbed.TCP(client.NetNS, web.IP))
	mustWork(t, "pod to pod over UDP", testbed.UDP(client.NetNS, web.IP))
	if out, err := cri.Crictl("exec", app, "ping", "-c1", "-W2", client.IP); err != nil {
		t.Errorf("the container pings the other pod: %v\n%s", err, out)
	}
	if peer := peerOf(t, web.NetNS, "tcp4", out.IP+":7777"); peer.Addr().String() != hostIP {
		t.Errorf("the outside saw the pod as %s, want the host's address %s", peer.Addr(), hostIP)
	}
	isolatedFromOtherNetwork(t, h, web)

	servesHostPorts(t, h, out, web, client)
	mustWork(t, "outside to the hostIP's hostPort", testbed.TCPTo(out.NS, hostIP2+":8082"))
	mustFail(t, "outside to the hostIP's hostPort on another address", testbed.TCPTo(out.NS, hostIP+":8082"))
	assertNoRuleNorProxy(t, h, "8082")
	if got := h.MustCLI("port", web.ID); !strings.Contains(got, "7777/tcp -> 0.0.0.0:8080") {
		t.Errorf("ebpfnet port POD:\n%s", got)
	}

	// A pod asking for a hostPort another pod holds is refused, and
	// containerd's teardown of it leaves nothing.
	if _, err := cri.TryRunPod("clash", "8080:7777/tcp"); err == nil || !strings.Contains(err.Error(), "8080") {
		t.Errorf("a second pod on hostPort 8080: %v, want a refusal naming the port", err)
	}
	assertAttached(t, h, "after a refused pod", web, client)
	mustWork(t, "outside to the hostPort after a refused pod", testbed.TCPTo(out.NS, hostIP+":8080"))

	// stopp, then rmp, leaves nothing of the pod.
	if err := cri.RemovePod(web.ID); err != nil {
		t.Fatal(err)
	}
	assertAttached(t, h, "after the web pod went", client)
	if n := mapEntries(t, h)["publications"]; n != 0 {
		t.Errorf("%d publications left after the web pod went", n)
	}
	mustFail(t, "outside to the removed pod's hostPort", testbed.TCPTo(out.NS, hostIP+":8080"))
	if err := cri.RemovePod(client.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, h, "after stopp and rmp")
	assertAttached(t, h, "after stopp and rmp")
	if left := h.Network(podnet).Containers; len(left) != 0 {
		t.Errorf("the pod network still holds %v", left)
	}
	// Conntrack entries included: the pods' flows went with them.
	if now := mapEntries(t, h); !maps.Equal(now, before) {
		t.Errorf("map entries after the pods went: %v, want those before them: %v", now, before)
	}
}

// TestCRIChainedMode runs pods through containerd's CRI on the reference
// bridge plugin's network, with ebpfnet chained in place of portmap: the
// hostPorts are reached from outside with the client's address kept, from
// the host on 127.0.0.1 and from pods by hairpin, with no rule for them;
// the pods are isolated from ebpfnet's own networks; stopp and rmp leave
// nothing of ebpfnet's.
func TestCRIChainedMode(t *testing.T) {
	t.Parallel()
	h, out, c := criHost(t)
	c.Conflist("chain", chainedPlugins(t, h)...)
	cri := testbed.StartCRI(t, h.NetNS, c)

	web := cri.RunPod("web", webPorts...)
	cri.StartContainer(web, "app", "sleep", "2147483647")
	client := cri.RunPod("client")
	mustBeOn(t, web, "10.94.0.0/24")
	testbed.Serve(t, web.NetNS)
	testbed.Serve(t, client.NetNS)
	mustWork(t, "pod to pod", testbed.TCP(client.NetNS, web.IP))
	mustWork(t, "pod to the outside", testbed.TCP(web.NetNS, out.IP))
	servesHostPorts(t, h, out, web, client)
	isolatedFromOtherNetwork(t, h, web)

	for _, p := range []testbed.Pod{web, client} {
		if err := cri.RemovePod(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	assertNothingLeft(t, h, "after stopp and rmp")
	assertAttached(t, h, "after stopp and rmp")
	mustFail(t, "outside to the removed pod's hostPort", testbed.TCPTo(out.NS, hostIP+":8080"))
}

// TestCRIPodNamespaceGone tears down a pod whose network namespace went
// before the kubelet stopped it (its processes killed, its namespace
// unmounted, so the kernel removed its veth), on an ebpfnet network and
// chained after bridge: containerd calls DEL with no namespace, nothing is
// left, and the hostPort is free for the next pod.
func TestCRIPodNamespaceGone(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"main", "chained"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			h, out, c := criHost(t)
			if mode == "main" {
				onPodNetwork(t, h, c, "--subnet", "10.91.0.0/24")
			} else {
				c.Conflist("chain", chainedPlugins(t, h)...)
			}
			cri := testbed.StartCRI(t, h.NetNS, c)

			// No server in the pod: its sockets would keep the namespace.
			gone := cri.RunPod("gone", "8080:7777/tcp")
			if got := h.MustCLI("port", gone.ID); !strings.Contains(got, "0.0.0.0:8080") {
				t.Fatalf("ebpfnet port POD:\n%s", got)
			}
			killPod(t, gone)
			if err := syscall.Unmount(gone.NetNS, syscall.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(gone.NetNS); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); len(hostVeths(t, h)) > 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the pod's veth outlived its namespace: %v", hostVeths(t, h))
				}
			}
			if err := cri.RemovePod(gone.ID); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, h, "after stopp and rmp of a pod without its namespace")
			if n := mapEntries(t, h)["publications"]; n != 0 {
				t.Errorf("%d publications left", n)
			}

			next := cri.RunPod("next", "8080:7777/tcp")
			testbed.Serve(t, next.NetNS)
			mustWork(t, "outside to the hostPort of the next pod", testbed.TCPTo(out.NS, hostIP+":8080"))
			mustWork(t, "the next pod to its hostPort (hairpin)", testbed.TCPTo(next.NetNS, hostIP+":8080"))
		})
	}
}

// killPod kills a pod's sandbox process, as the OOM killer or a node's
// reboot would, and waits until it is gone.
func killPod(t *testing.T, p testbed.Pod) {
	t.Helper()
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill pod %s (pid %d): %v", p.Name, p.PID, err)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(p.PID, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pod %s (pid %d) outlived SIGKILL", p.Name, p.PID)
		}
	}
}

// TestCRIRestart restarts containerd while pods run: they keep their
// network and hostPorts throughout; a pod that died while containerd was
// down comes back not ready, and the kubelet's way with it (stop it, run
// its next sandbox on the same hostPort, remove it) leaves nothing of it
// and the new sandbox whole.
func TestCRIRestart(t *testing.T) {
	t.Parallel()
	h, out, c := criHost(t)
	onPodNetwork(t, h, c, "--subnet", "10.91.0.0/24")
	cri := testbed.StartCRI(t, h.NetNS, c)

	web := cri.RunPod("web", "8080:7777/tcp")
	client := cri.RunPod("client")
	doomed := cri.RunPod("doomed", "8083:7777/tcp")
	for _, p := range []testbed.Pod{web, client, doomed} {
		testbed.Serve(t, p.NetNS)
	}
	works := func(when string) {
		t.Helper()
		mustWork(t, "outside to the hostPort "+when, testbed.TCPTo(out.NS, hostIP+":8080"))
		mustWork(t, "pod to pod "+when, testbed.TCP(client.NetNS, web.IP))
		mustWork(t, "pod to the outside "+when, testbed.TCP(web.NetNS, out.IP))
	}
	works("before the restart")

	cri.Stop()
	works("with containerd down")
	killPod(t, doomed)
	cri.Start()
	works("after the restart")
	if s := cri.PodState(web.ID); s != "SANDBOX_READY" {
		t.Errorf("the web pod is %s after the restart", s)
	}
	if s := cri.PodState(doomed.ID); s != "SANDBOX_NOTREADY" {
		t.Errorf("the pod killed while containerd was down is %s", s)
	}
	// The kubelet stops the dead sandbox, runs the pod's next one, on the
	// same hostPort, then removes the dead one: containerd's DEL of it
	// again must leave the new one alone.
	if out, err := cri.Crictl("stopp", doomed.ID); err != nil {
		t.Fatalf("crictl stopp of the dead pod: %v\n%s", err, out)
	}
	assertAttached(t, h, "after the dead pod was stopped", web, client)
	again := cri.RunPodAttempt(doomed.Name, 1, "8083:7777/tcp")
	testbed.Serve(t, again.NetNS)
	if out, err := cri.Crictl("rmp", doomed.ID); err != nil {
		t.Fatalf("crictl rmp of the dead pod: %v\n%s", err, out)
	}
	assertAttached(t, h, "after the dead pod was replaced", web, client, again)
	mustWork(t, "outside to the dead pod's hostPort, on its next sandbox", testbed.TCPTo(out.NS, hostIP+":8083"))
	mustWork(t, "a new pod to an old one", testbed.TCP(again.NetNS, web.IP))
	for _, p := range []testbed.Pod{web, client, again} {
		if err := cri.RemovePod(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	assertNothingLeft(t, h, "after the restart and rmp")
	assertAttached(t, h, "after the restart and rmp")
}

// criLoopPods is how many pods TestCRIPodLoop creates and removes per
// round: every address of its network's range, so that an address one
// round leaked is one the next cannot have. 32 in make test, where a pod
// costs containerd about a second of both cores (its shim and pause
// container); make soak runs 128, past the 110 pods a kubelet runs by
// default (CRI_LOOP_PODS: a power of two from 8 to 256).
func criLoopPods(t *testing.T) int {
	t.Helper()
	v := os.Getenv("CRI_LOOP_PODS")
	if v == "" {
		return 32
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 256 || n&(n-1) != 0 {
		t.Fatalf("CRI_LOOP_PODS=%q: want a power of two from 8 to 256", v)
	}
	return n
}

// TestCRIPodLoop creates criLoopPods pods, each with a hostPort of its own,
// and removes them, three times, a few at a time as a kubelet does:
// nothing is left after each round (attachment, address, veth,
// publication, map entry), and the daemon's memory does not grow round
// after round.
//
// It runs alone: it keeps both cores busy for minutes.
func TestCRIPodLoop(t *testing.T) {
	h, _, c := criHost(t)
	// A collector that keeps the heap near what is live: the daemon's
	// own (GOGC 400, a 40 MiB floor) lets garbage grow by tens of MiB
	// between collections.
	h.Stop(syscall.SIGTERM)
	h.DaemonEnv("GOGC=25")
	h.Start()
	// A range of exactly the pods' addresses, none of them the subnet's
	// network, broadcast or gateway.
	pods := criLoopPods(t)
	podnet := onPodNetwork(t, h, c, "--subnet", "10.91.0.0/22", "--ip-range", fmt.Sprintf("10.91.1.0/%d", 32-bits.Len(uint(pods))+1))
	cri := testbed.StartCRI(t, h.NetNS, c)
	before := mapEntries(t, h)
	rss := []int{daemonRSS(t, h)}
	for round := range 3 {
		start := time.Now()
		ids := make([]string, pods)
		inParallel(t, pods, func(i int) (err error) {
			ids[i], err = cri.TryRunPod(fmt.Sprintf("loop%d-%d", round, i), fmt.Sprintf("%d:7777/tcp", 30000+i))
			return err
		})
		created := time.Since(start)
		if n := len(attachments(t, h)); n != pods {
			t.Fatalf("round %d: %d attachments for %d pods", round, n, pods)
		}
		if _, err := cri.TryRunPod(fmt.Sprintf("loop%d-full", round)); err == nil || !strings.Contains(err.Error(), "no free address left") {
			t.Fatalf("round %d: a pod beyond the range: %v, want no address for it", round, err)
		}
		inParallel(t, pods, func(i int) error { return cri.RemovePod(ids[i]) })
		t.Logf("round %d: %d pods created in %s, removed in %s", round, pods, created.Round(time.Millisecond),
			(time.Since(start) - created).Round(time.Millisecond))
		when := fmt.Sprintf("after round %d", round)
		assertNothingLeft(t, h, when)
		assertAttached(t, h, when)
		if left := h.Network(podnet).Containers; len(left) != 0 {
			t.Errorf("%s: the network still holds %d endpoints", when, len(left))
		}
		if now := mapEntries(t, h); !maps.Equal(now, before) {
			t.Errorf("%s: map entries %v, want those before the pods %v", when, now, before)
		}
		rss = append(rss, daemonRSS(t, h))
	}
	// A leak grows the memory every round; the runtime keeping memory it
	// freed, or filling a cache, steps it up once, in one round or the
	// other (20 MiB of anonymous memory at times, once before any pod).
	t.Logf("the daemon's resident memory before the pods and after each round: %v KiB", rss)
	if grew := min(rss[2]-rss[1], rss[3]-rss[2]); grew > 8*1024 {
		t.Errorf("the daemon's resident memory grew in both the second and the third round, by %d KiB at least: %v KiB", grew, rss)
	}
}

// criLoopWorkers is how many pods a kubelet-like loop starts or stops at
// once.
const criLoopWorkers = 4

// inParallel runs do(0) … do(n-1), criLoopWorkers at a time, and fails
// the test with their errors.
func inParallel(t *testing.T, n int, do func(i int) error) {
	t.Helper()
	if err := testbed.InParallel(criLoopWorkers, n, do); err != nil {
		t.Fatal(err)
	}
}

// daemonRSS is the daemon's resident memory in KiB.
func daemonRSS(t *testing.T, h *testbed.Host) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.DaemonPID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])
			return kib
		}
	}
	t.Fatal("no VmRSS in the daemon's status")
	return 0
}

// TestCRIDualStack runs pods on a dual-stack ebpfnet network through CRI:
// containerd reports both addresses; a hostPort with no hostIP is reached
// over IPv6 from outside with the client's address kept, from the host on
// [::1] and from a pod by hairpin; pods reach each other and the outside
// over IPv6.
func TestCRIDualStack(t *testing.T) {
	t.Parallel()
	h, out, c := criHost(t)
	onPodNetwork(t, h, c, "--ipv6", "--subnet", "10.91.0.0/24", "--subnet", "fd00:91::/64")
	cri := testbed.StartCRI(t, h.NetNS, c)
	web := cri.RunPod("web", "8080:7777/tcp")
	client := cri.RunPod("client")
	mustBeOn(t, web, "10.91.0.0/24")
	if ip, err := netip.ParseAddr(web.IP6); err != nil || !netip.MustParsePrefix("fd00:91::/64").Contains(ip) {
		t.Fatalf("the pod's IPv6 address is %q, want one of fd00:91::/64", web.IP6)
	}
	testbed.Serve(t, web.NetNS)
	testbed.Serve(t, client.NetNS)
	hostPort6 := net.JoinHostPort(out.HostIP6, "8080")
	if peer := peerOf(t, out.NS, "tcp6", hostPort6); peer.Addr().String() != out.IP6 {
		t.Errorf("the pod saw %s over IPv6, want the client's own address %s", peer.Addr(), out.IP6)
	}
	mustWork(t, "outside to the hostPort over IPv4", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to [::1]:8080", testbed.TCPTo(h.NetNS, "[::1]:8080"))
	mustWork(t, "pod to the hostPort over IPv6 (hairpin)", testbed.TCPTo(client.NetNS, hostPort6))
	mustWork(t, "pod to pod over IPv6", testbed.TCP(client.NetNS, web.IP6))
	mustWork(t, "pod to the outside over IPv6", testbed.TCP(web.NetNS, out.IP6))
	for _, p := range []testbed.Pod{web, client} {
		if err := cri.RemovePod(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	assertNothingLeft(t, h, "after stopp and rmp")
}

// TestCRIDaemonRestart: pods keep their hostPorts while ebpfnet's daemon is
// down; containerd can neither attach a pod nor detach one then (DEL
// fails, so the kubelet tries again, rather than leaving the attachment
// behind); once the daemon is back, stopp and rmp of both leave nothing.
func TestCRIDaemonRestart(t *testing.T) {
	t.Parallel()
	h, out, c := criHost(t)
	onPodNetwork(t, h, c, "--subnet", "10.91.0.0/24")
	cri := testbed.StartCRI(t, h.NetNS, c)
	web := cri.RunPod("web", "8080:7777/tcp")
	testbed.Serve(t, web.NetNS)

	h.Stop(syscall.SIGKILL)
	mustWork(t, "outside to the hostPort with the daemon down", testbed.TCPTo(out.NS, hostIP+":8080"))
	if out, err := cri.Crictl("stopp", web.ID); err == nil || !strings.Contains(out, "cannot reach the ebpfnet daemon") {
		t.Errorf("stopp with the daemon down: %v\n%s", err, out)
	}
	if _, err := cri.TryRunPod("late", "8081:7777/tcp"); err == nil || !strings.Contains(err.Error(), "cannot reach the ebpfnet daemon") {
		t.Errorf("runp with the daemon down: %v", err)
	}
	h.Start()
	mustWork(t, "outside to the hostPort after the daemon's restart", testbed.TCPTo(out.NS, hostIP+":8080"))
	// The kubelet stops and removes the pod, and the one containerd kept
	// after it could not run it.
	remove := []string{web.ID}
	var pods struct {
		Items []struct {
			ID       string
			Metadata struct{ Name string }
		}
	}
	json.Unmarshal([]byte(cri.MustCrictl("pods", "-o", "json")), &pods)
	for _, p := range pods.Items {
		if p.Metadata.Name == "late" {
			remove = append(remove, p.ID)
		}
	}
	for _, id := range remove {
		if err := cri.RemovePod(id); err != nil {
			t.Fatal(err)
		}
	}
	assertNothingLeft(t, h, "after stopp and rmp")
	assertAttached(t, h, "after stopp and rmp")
	again := cri.RunPod("late", "8081:7777/tcp")
	testbed.Serve(t, again.NetNS)
	mustWork(t, "outside to the hostPort of a pod run after the daemon's restart", testbed.TCPTo(out.NS, hostIP+":8081"))
}

package test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

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

// ebpfnetPlugin is the main mode's configuration for network.
func ebpfnetPlugin(h *testbed.Host, network string) map[string]any {
	return map[string]any{"type": "ebpfnet", "network": network, "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}}
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

// mustBeOn fails unless the pod's address is in subnet.
func mustBeOn(t *testing.T, p testbed.Pod, subnet string) {
	t.Helper()
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !netip.MustParsePrefix(subnet).Contains(ip) {
		t.Fatalf("pod %s has address %q, want one of %s", p.Name, p.IP, subnet)
	}
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
	podnet, other := h.Name("pods"), h.Name("other")
	h.MustCLI("network", "create", "--subnet", "10.91.0.0/24", podnet)
	h.MustCLI("network", "create", "--subnet", "10.92.0.0/24", other)
	c.Conflist("pods", ebpfnetPlugin(h, podnet))
	cri := testbed.StartCRI(t, h.NetNS, c)
	veths := hostVeths(t, h)

	web := cri.RunPod("web", "8080:7777/tcp", "8080:7777/udp", "[127.0.0.1]:8081:7777/tcp", "["+hostIP2+"]:8082:7777/tcp")
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
	// Isolated from another ebpfnet network, both ways.
	stranger := h.Name("stranger")
	h.MustCLI("sandbox", "create", stranger, "--network", other)
	testbed.Serve(t, h.NS(stranger))
	mustFail(t, "pod to another network", testbed.TCP(web.NetNS, h.IP(stranger, other)))
	mustFail(t, "another network to a pod", testbed.TCP(h.NS(stranger), web.IP))

	// hostPorts.
	if peer := peerOf(t, out.NS, "tcp4", hostIP+":8080"); peer.Addr().String() != out.IP {
		t.Errorf("the pod saw %s, want the client's own address %s", peer.Addr(), out.IP)
	}
	mustWork(t, "outside to the UDP hostPort", testbed.UDPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to 127.0.0.1:8080", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))
	mustWork(t, "host to 127.0.0.1:8081", testbed.TCPTo(h.NetNS, "127.0.0.1:8081"))
	mustFail(t, "outside to the 127.0.0.1 hostPort", testbed.TCPTo(out.NS, hostIP+":8081"))
	mustWork(t, "outside to the hostIP's hostPort", testbed.TCPTo(out.NS, hostIP2+":8082"))
	mustFail(t, "outside to the hostIP's hostPort on another address", testbed.TCPTo(out.NS, hostIP+":8082"))
	mustWork(t, "pod to the hostPort (hairpin)", testbed.TCPTo(client.NetNS, hostIP+":8080"))
	mustWork(t, "pod to its own hostPort (hairpin)", testbed.TCPTo(web.NetNS, hostIP+":8080"))
	assertNoRuleNorProxy(t, h, "8080", "8081", "8082")
	if got := h.MustCLI("port", web.ID); !strings.Contains(got, "7777/tcp -> 0.0.0.0:8080") {
		t.Errorf("ebpfnet port POD:\n%s", got)
	}

	h.MustCLI("sandbox", "rm", stranger)

	// stopp, then rmp, leaves nothing of the pod.
	if err := cri.RemovePod(web.ID); err != nil {
		t.Fatal(err)
	}
	if as := attachments(t, h); len(as) != 1 || !strings.HasPrefix(as[0], client.ID+":") {
		t.Errorf("attachments after the web pod went: %v, want the client's alone", as)
	}
	if n := mapEntries(t, h)["publications"]; n != 0 {
		t.Errorf("%d publications left after the web pod went", n)
	}
	if vs := hostVeths(t, h); len(vs) != len(veths)+1 {
		t.Errorf("veths after the web pod went: %v, want the client's beside %v", vs, veths)
	}
	mustFail(t, "outside to the removed pod's hostPort", testbed.TCPTo(out.NS, hostIP+":8080"))
	if err := cri.RemovePod(client.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, h, "after stopp and rmp")
	if vs := hostVeths(t, h); !slices.Equal(vs, veths) {
		t.Errorf("veths left: %v, want %v", vs, veths)
	}
	if left := h.Network(podnet).Containers; len(left) != 0 {
		t.Errorf("the pod network still holds %v", left)
	}
}

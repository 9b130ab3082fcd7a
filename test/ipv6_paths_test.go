package test

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// ip6 is a sandbox's IPv6 address on a network.
func ip6(t *testing.T, h *testbed.Host, sandbox, network string) string {
	t.Helper()
	a := h.Sandbox(sandbox).NetworkSettings.Networks[network].GlobalIPv6Address
	if a == "" {
		t.Fatalf("%s has no IPv6 address on %s", sandbox, network)
	}
	return a
}

// Every path of the datapath, over IPv6, with real traffic: an outside
// client to a published port (its address kept), host processes through
// ::1 and the host's IPv6 address, hairpin, another network, UDP,
// masquerade out and the reply, names (AAAA), and every isolation case
// blocked. One published port serves both families.
func TestIPv6Paths(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	appnet, othernet := h.Name("app6"), h.Name("other6")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:a::/64", appnet)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:b::/64", othernet)
	web, peer, stranger := h.Name("web"), h.Name("peer"), h.Name("stranger")
	h.MustCLI("sandbox", "create", web, "--network", appnet, "-p", "8080:7777", "-p", "8081:7777/udp")
	h.MustCLI("sandbox", "create", peer, "--network", appnet)
	h.MustCLI("sandbox", "create", stranger, "--network", othernet)
	for _, sb := range []string{web, peer, stranger} {
		testbed.Serve(t, h.NS(sb))
	}
	web6 := ip6(t, h, web, appnet)
	published := net.JoinHostPort(out.HostIP6, "8080")

	// From outside, over both families, on one published port; the
	// sandbox sees the client's own address.
	mustWork(t, "outside to [host]:8080 over IPv6", testbed.TCPTo(out.NS, published))
	mustWork(t, "outside to host:8080 over IPv4", testbed.TCPTo(out.NS, out.HostIP+":8080"))
	mustWork(t, "outside to [host]:8081/udp over IPv6", testbed.UDPTo(out.NS, net.JoinHostPort(out.HostIP6, "8081")))
	if got := peerOf(t, out.NS, "tcp6", published); got.Addr() != netip.MustParseAddr(out.IP6) {
		t.Errorf("web saw the outside client as %s, want its own address %s", got, out.IP6)
	}

	// Host processes, through ::1 and the host's IPv6 address.
	mustWork(t, "host to [::1]:8080", testbed.TCPTo(h.NetNS, "[::1]:8080"))
	mustWork(t, "host to [host]:8080", testbed.TCPTo(h.NetNS, published))
	mustWork(t, "host to [::1]:8081/udp", testbed.UDPTo(h.NetNS, "[::1]:8081"))

	// Hairpin: a neighbour, and a sandbox of another network, through the
	// host's published address.
	mustWork(t, "hairpin from a neighbour", testbed.TCPTo(h.NS(peer), published))
	mustWork(t, "from another network to the published port", testbed.TCPTo(h.NS(stranger), published))
	mustWork(t, "hairpin to itself", testbed.TCPTo(h.NS(web), published))

	// Masquerade out (NAT66): the outside sees the host's address.
	h.MustReach(web, out.IP6)
	if got := peerOf(t, h.NS(web), "tcp6", net.JoinHostPort(out.IP6, "7777")); got.Addr() != netip.MustParseAddr(out.HostIP6) {
		t.Errorf("outside saw web as %s, want the host's uplink address %s", got, out.HostIP6)
	}

	// Same network, by address and by name (AAAA from the embedded DNS).
	h.MustReach(peer, web6)
	if o, err := h.CLI("exec", peer, "--", "busybox", "ping", "-6", "-c1", "-W2", web); err != nil {
		t.Errorf("ping6 %s by name from %s: %v\n%s", web, peer, err, o)
	}

	// Isolation: another network, and the outside straight to a sandbox
	// port that is not published (gateway mode nat).
	h.MustNotReach(stranger, web6)
	mustFail(t, "outside straight to web's IPv6 address", testbed.TCP(out.NS, web6))
	if h.Counter("drop_cross_network") == 0 || h.Counter("drop_unpublished") == 0 {
		t.Error("the blocked IPv6 paths were not counted as drop_cross_network and drop_unpublished")
	}
}

// A sandbox on an IPv4-only network has no IPv6, yet IPv6 clients reach
// its ports published on every address, as Docker's proxy relays [::] to
// it: host processes through the socket hooks, outside clients through
// the datapath, which translates their packets to IPv4 from the
// sandbox's gateway.
func TestIPv6ClientsOfIPv4Sandbox(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "8081:7777/udp")
	testbed.Serve(t, h.NS(web))
	mustWork(t, "host to [::1]:8080", testbed.TCPTo(h.NetNS, "[::1]:8080"))
	mustWork(t, "host to [host IPv6]:8080", testbed.TCPTo(h.NetNS, net.JoinHostPort(out.HostIP6, "8080")))
	gateway := h.Sandbox(web).NetworkSettings.Networks["bridge"].Gateway
	if got := peerOf(t, out.NS, "tcp6", net.JoinHostPort(out.HostIP6, "8080")); got.Addr().String() != gateway {
		t.Errorf("web saw the IPv6 client as %s, want its gateway %s", got.Addr(), gateway)
	}
	if err := testbed.UDPTo(out.NS, net.JoinHostPort(out.HostIP6, "8081")); err != nil {
		t.Errorf("outside over IPv6, UDP: %v\n%s", err, h.MustCLI("status"))
	}
	if o, _ := h.CLI("exec", web, "--", "ip", "-6", "addr"); strings.Contains(o, "inet6") {
		t.Errorf("a sandbox of an IPv4-only network has IPv6 addresses:\n%s", o)
	}
}

// Isolation over IPv6 is isolation over IPv4: icc=false leaves a sandbox
// its gateway alone, an internal network leads nowhere, and gateway mode
// routed lets the outside reach published sandbox ports by the sandbox's
// own IPv6 address, unmasqueraded, and nothing else.
func TestIPv6Isolation(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	icc, internal, routed := h.Name("icc6"), h.Name("int6"), h.Name("routed6")
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:c::/64", "-o", "com.docker.network.bridge.enable_icc=false", icc)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:d::/64", "--internal", internal)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:e::/64", "-o", "com.docker.network.bridge.gateway_mode_ipv6=routed", routed)
	a, b, in, r := h.Name("a"), h.Name("b"), h.Name("in"), h.Name("r")
	h.MustCLI("sandbox", "create", a, "--network", icc)
	h.MustCLI("sandbox", "create", b, "--network", icc)
	h.MustCLI("sandbox", "create", in, "--network", internal)
	h.MustCLI("sandbox", "create", r, "--network", routed, "-p", "8080:7777")
	for _, sb := range []string{a, b, in, r} {
		testbed.Serve(t, h.NS(sb))
	}
	testbed.ServeOn(t, out.NS, 7778) // a port no publication leads to

	h.MustNotReach(a, ip6(t, h, b, icc))
	mustWork(t, "icc=false, to the gateway", h.Ping(a, "fd00:c::1"))
	mustWork(t, "icc=false, to the outside", testbed.TCP(h.NS(a), out.IP6))

	mustFail(t, "internal, to the outside", testbed.TCP(h.NS(in), out.IP6))
	mustFail(t, "internal, to the host's published port", testbed.TCPTo(h.NS(in), net.JoinHostPort(out.HostIP6, "8080")))

	rAddr := ip6(t, h, r, routed)
	if got := peerOf(t, out.NS, "tcp6", net.JoinHostPort(rAddr, "7777")); got.Addr() != netip.MustParseAddr(out.IP6) {
		t.Errorf("routed: the sandbox saw %s, want the outside client's own address", got)
	}
	if got := peerOf(t, h.NS(r), "tcp6", net.JoinHostPort(out.IP6, "7777")); got.Addr() != netip.MustParseAddr(rAddr) {
		t.Errorf("routed: the outside saw %s, want the sandbox's own address %s (no NAT66)", got, rAddr)
	}
	testbed.ServeOn(t, h.NS(r), 7778)
	mustFail(t, "routed, an unpublished sandbox port", testbed.TCPTo(out.NS, net.JoinHostPort(rAddr, "7778")))
}

// A host client that connects to localhost reaches a published port
// however localhost resolves: curl -6 goes to ::1.
func TestIPv6LocalhostCurl(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:80", "-p", "["+out.HostIP6+"]:8090:80")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("hello from web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.StartInSandbox(web, "busybox", "httpd", "-f", "-p", "80", "-h", root)
	for _, url := range []string{"http://localhost:8080/", "http://[" + out.HostIP6 + "]:8090/"} {
		var got []byte
		var err error
		for range 20 { // httpd starts listening
			if got, err = exec.Command("ip", "netns", "exec", filepath.Base(h.NetNS), "curl", "-6", "-sS", "-m", "2", url).CombinedOutput(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || string(got) != "hello from web\n" {
			t.Errorf("curl -6 %s: %v: %q", url, err, got)
		}
	}
	url := "http://" + net.JoinHostPort(out.HostIP, "8090") + "/"
	if got, err := exec.Command("ip", "netns", "exec", filepath.Base(out.NS), "curl", "-sS", "-m", "2", url).CombinedOutput(); err == nil {
		t.Errorf("a port published on the host's IPv6 address alone answered over IPv4: %q", got)
	}
	url = "http://" + net.JoinHostPort(out.HostIP6, "8090") + "/"
	if got, err := exec.Command("ip", "netns", "exec", filepath.Base(out.NS), "curl", "-sS", "-m", "2", url).CombinedOutput(); err != nil {
		t.Errorf("curl %s from outside: %v: %q", url, err, got)
	}
}

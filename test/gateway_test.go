package test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

const gatewayMode = engine.OptGatewayMode + "="

func TestIsolatedGatewayMode(t *testing.T) {
	t.Parallel()
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
	if n.Options[engine.OptGatewayMode] != "isolated" || !n.Internal || n.IPAM.Config[0].Gateway != "" {
		t.Fatalf("inspect: options %v, internal %t, IPAM %+v; want mode isolated, internal, no gateway", n.Options, n.Internal, n.IPAM.Config)
	}
	bridge := n.Options[engine.OptBridgeName]
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
	t.Parallel()
	h := testbed.NewHost(t)
	for _, mode := range []string{"nat", "nat-unprotected", "routed"} {
		name := h.Name(mode)
		h.MustCLI("network", "create", "-o", gatewayMode+mode, name)
		n := h.Network(name)
		if got := n.Options[engine.OptGatewayMode]; got != mode {
			t.Errorf("network %s: options %v, want %s=%s", name, n.Options, engine.OptGatewayMode, mode)
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
		if got, ok := h.Network(name).Options[engine.OptGatewayMode]; ok {
			t.Errorf("network %s lists gateway mode %q; want it unlisted", name, got)
		}
	}
}

// ipv6Addrs lists a sandbox's IPv6 addresses, as `ip -6 addr` shows them.
func ipv6Addrs(h *testbed.Host, sandbox string) string {
	return strings.TrimSpace(h.MustCLI("exec", sandbox, "--", "ip", "-6", "-o", "addr"))
}

// linkLocal is the fe80:: address the kernel would derive from a MAC (EUI-64).
func linkLocal(t *testing.T, mac string) string {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	a := [16]byte{0: 0xfe, 1: 0x80, 8: hw[0] ^ 0x02, 9: hw[1], 10: hw[2], 11: 0xff, 12: 0xfe, 13: hw[3], 14: hw[4], 15: hw[5]}
	return netip.AddrFrom16(a).String()
}

func TestSandboxesHaveNoIPv6(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	noicc := h.Name("noicc")
	h.MustCLI("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", noicc)
	a, b, side, none, hst := h.Name("a"), h.Name("b"), h.Name("side"), h.Name("none"), h.Name("hmode")
	h.MustCLI("sandbox", "create", a, "--network", noicc)
	h.MustCLI("sandbox", "create", b, "--network", noicc)
	h.MustCLI("network", "connect", "bridge", b) // a second interface, added later
	h.MustCLI("sandbox", "create", side, "--network", "container:"+a)
	h.MustCLI("sandbox", "create", none, "--network", "none")
	h.MustCLI("sandbox", "create", hst, "--network", "host")

	for _, sb := range []string{a, b, side, none} {
		if addrs := ipv6Addrs(h, sb); addrs != "" {
			t.Errorf("sandbox %s has IPv6 addresses:\n%s", sb, addrs)
		}
	}
	if hosts := h.MustCLI("exec", a, "--", "cat", "/etc/hosts"); strings.Contains(hosts, "::1") {
		t.Errorf("the hosts file names ::1, an address the sandbox does not have:\n%s", hosts)
	}
	// The host-mode sandbox is the host's namespace: left as it was.
	if v := strings.TrimSpace(h.InHost("cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6")); v != "0" {
		t.Errorf("a host-mode sandbox turned IPv6 off in the host namespace (all.disable_ipv6=%s)", v)
	}
	if addrs := strings.TrimSpace(h.InHost("ip", "-6", "-o", "addr", "show", "dev", "lo")); !strings.Contains(addrs, "::1") {
		t.Errorf("the host namespace lost ::1 on lo: %q", addrs)
	}

	// icc=false fences IPv4 only; over IPv6 link-local there is no path at
	// all: b would listen, a cannot send.
	var l net.Listener
	if err := namespace.Do(h.NS(b), func() (err error) { l, err = net.Listen("tcp6", "[::]:7778"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// Tried for longer than duplicate address detection would keep such an
	// address tentative, so the test would see the path if there were one.
	bLinkLocal := linkLocal(t, h.Sandbox(b).NetworkSettings.Networks[noicc].MacAddress)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		err := namespace.Do(h.NS(a), func() error {
			c, err := net.DialTimeout("tcp6", fmt.Sprintf("[%s%%eth0]:7778", bLinkLocal), 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Fatalf("a reached b over IPv6 link-local at %s", bLinkLocal)
		}
	}

	// A sandbox whose namespace had IPv6 on (from an older ebpfnet) loses
	// it when the reconciler refreshes its endpoints.
	h.MustRun("ip", "netns", "exec", a, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0")
	h.Stop(syscall.SIGTERM)
	h.Start()
	if addrs := ipv6Addrs(h, a); addrs != "" {
		t.Errorf("after a restart sandbox %s has IPv6 addresses:\n%s", a, addrs)
	}
}

// The routed-access tests' sandbox serves on both ports and publishes at
// most the first, as 8080:9999.
const (
	servedPort = 9999
	hiddenPort = 9998
)

// newGatewayModeHost is a publishing host with a sandbox serving on
// servedPort and hiddenPort, on a new network in the given gateway mode
// ("" for none chosen), created with extra sandbox arguments.
func newGatewayModeHost(t *testing.T, mode string, sandboxArgs ...string) (h *testbed.Host, out testbed.Outside, web, ip string) {
	t.Helper()
	h, out = newPublishingHost(t)
	name := h.Name("net")
	args := []string{"network", "create", name}
	if mode != "" {
		args = append(args, "-o", gatewayMode+mode)
	}
	h.MustCLI(args...)
	web = h.Name("web")
	h.MustCLI(append([]string{"sandbox", "create", web, "--network", name}, sandboxArgs...)...)
	testbed.ServeOn(t, h.NS(web), servedPort)
	testbed.ServeOn(t, h.NS(web), hiddenPort)
	return h, out, web, h.IP(web, name)
}

// at is ip:port.
func at(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

// through lists the protocols on which the namespace at ns gets an echo
// from addr.
func through(ns, addr string) []string {
	var got []string
	if testbed.TCPTo(ns, addr) == nil {
		got = append(got, "tcp")
	}
	if testbed.UDPTo(ns, addr) == nil {
		got = append(got, "udp")
	}
	return got
}

// The outside reaches a sandbox by its own address only as the gateway
// mode allows (maps.DirectAccess, enforced by the endpoint programs); it
// always reaches what is published on host ports.

func TestGatewayModeNATHidesSandboxes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "nat"} {
		t.Run("mode="+mode, func(t *testing.T) {
			h, out, web, ip := newGatewayModeHost(t, mode, "-p", "8080:9999")
			mustWork(t, "outside to the published host port", testbed.TCPTo(out.NS, at(hostIP, 8080)))
			if got := through(out.NS, at(ip, servedPort)); len(got) > 0 {
				t.Errorf("outside reached %s directly over %v (published, but nat hides sandboxes)", at(ip, servedPort), got)
			}
			if got := through(out.NS, at(ip, hiddenPort)); len(got) > 0 {
				t.Errorf("outside reached %s directly over %v (unpublished)", at(ip, hiddenPort), got)
			}
			if peer := peerOf(t, h.NS(web), "tcp4", at(out.IP, testbed.EchoPort)); peer.Addr().String() != hostIP {
				t.Errorf("egress seen as %s, want the masquerade address %s", peer, hostIP)
			}
		})
	}
	t.Run("default network", func(t *testing.T) {
		h, out := newPublishingHost(t)
		web := h.Name("web")
		h.MustCLI("sandbox", "create", web)
		testbed.ServeOn(t, h.NS(web), servedPort)
		addr := at(h.IP(web, "bridge"), servedPort)
		if got := through(out.NS, addr); len(got) > 0 {
			t.Errorf("outside reached a sandbox of the default network at %s over %v", addr, got)
		}
	})
}

func TestGatewayModeNATUnprotected(t *testing.T) {
	t.Parallel()
	h, out, web, ip := newGatewayModeHost(t, "nat-unprotected")
	for _, port := range []int{servedPort, hiddenPort} {
		if got := through(out.NS, at(ip, port)); len(got) != 2 {
			t.Errorf("outside reached the unpublished %s over %v, want tcp and udp", at(ip, port), got)
		}
	}
	if peer := peerOf(t, h.NS(web), "tcp4", at(out.IP, testbed.EchoPort)); peer.Addr().String() != hostIP {
		t.Errorf("egress seen as %s, want the masquerade address %s", peer, hostIP)
	}
}

func TestGatewayModeRouted(t *testing.T) {
	t.Parallel()
	h, out, web, ip := newGatewayModeHost(t, "routed", "-p", "8080:9999", "-p", "8080:9999/udp")
	t.Run("published port by the sandbox's address", func(t *testing.T) {
		if got := through(out.NS, at(ip, servedPort)); len(got) != 2 {
			t.Errorf("outside reached the published %s over %v, want tcp and udp", at(ip, servedPort), got)
		}
		mustWork(t, "outside to the published host port", testbed.TCPTo(out.NS, at(hostIP, 8080)))
	})
	t.Run("unpublished port", func(t *testing.T) {
		if got := through(out.NS, at(ip, hiddenPort)); len(got) > 0 {
			t.Errorf("outside reached the unpublished %s over %v", at(ip, hiddenPort), got)
		}
	})
	t.Run("egress keeps the sandbox's address", func(t *testing.T) {
		for _, proto := range []string{"tcp4", "udp4"} {
			if peer := peerOf(t, h.NS(web), proto, at(out.IP, testbed.EchoPort)); peer.Addr().String() != ip {
				t.Errorf("%s: the outside saw %s, want the sandbox's own address %s", proto, peer, ip)
			}
		}
	})
}

package test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// Host addresses of the published testbed: the uplink has two.
const (
	hostIP  = "10.99.0.1"
	hostIP2 = "10.99.0.3"
)

// newPublishingHost is a host with an outside client behind its uplink,
// which also runs an echo server.
func newPublishingHost(t testing.TB, extra ...string) (*testbed.Host, testbed.Outside) {
	t.Helper()
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		h.InHost("ip", "addr", "add", hostIP2+"/24", "dev", "uplink0")
	}, extra...)
	testbed.Serve(t, out.NS)
	return h, out
}

// askPeer asks the echo server at addr, from the namespace at ns and the
// local address local (any, if empty), who it sees.
func askPeer(ns, network, addr, local string) (string, error) {
	c, err := testbed.Dial(ns, network, addr, local)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return testbed.Peer(c)
}

// echoFrom is askPeer's error alone: whether the echo server answered.
func echoFrom(ns, network, addr, local string) error {
	_, err := askPeer(ns, network, addr, local)
	return err
}

// peerOf is who the echo server at addr sees, dialled from ns; the test
// fails if nothing answers, twice: a path that works answers the second
// dial when a loaded host lost the first's SYN (the dial gives up when
// TCP would send it again, after a second).
func peerOf(t *testing.T, ns, network, addr string) netip.AddrPort {
	t.Helper()
	peer, err := askPeer(ns, network, addr, "")
	if err != nil {
		peer, err = askPeer(ns, network, addr, "")
	}
	if err != nil {
		t.Fatalf("%s %s: %v", network, addr, err)
	}
	return netip.MustParseAddrPort(peer)
}

func mustWork(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustFail(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got through, want it blocked", what)
	}
}

// checksumErrors reads a namespace's TCP and UDP InCsumErrors counters.
func checksumErrors(t *testing.T, ns string) (tcp, udp int) {
	t.Helper()
	return snmp(t, ns, "Tcp", "InCsumErrors"), snmp(t, ns, "Udp", "InCsumErrors")
}

// snmp reads one counter of a namespace's /proc/net/snmp.
func snmp(t *testing.T, ns, proto, name string) int {
	t.Helper()
	var data []byte
	err := namespace.Do(ns, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.HasPrefix(lines[i], proto+": ") && strings.HasPrefix(lines[i+1], proto+": ") {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for j, n := range names {
				if n == name {
					v, _ := strconv.Atoi(values[j])
					return v
				}
			}
		}
	}
	t.Fatalf("no %s %s in snmp", proto, name)
	return 0
}

func TestPublishedFromOutside(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "8080:7777/udp")
	testbed.Serve(t, h.NS(web))
	// Full checksums on the wire: with offload off, the receiving kernels
	// check every checksum the datapath rewrote.
	for _, ns := range []string{out.NS, h.NS(web)} {
		h.MustRun("ip", "netns", "exec", strings.TrimPrefix(ns, "/run/netns/"), "ethtool", "-K", "eth0", "tx", "off")
	}

	for _, proto := range []string{"tcp4", "udp4"} {
		peer := peerOf(t, out.NS, proto, hostIP+":8080")
		if peer.Addr().String() != out.IP {
			t.Errorf("%s: the sandbox saw %s, want the client's own address %s", proto, peer, out.IP)
		}
	}
	mustWork(t, "tcp from outside", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "udp from outside", testbed.UDPTo(out.NS, hostIP+":8080"))
	for _, ns := range []string{out.NS, h.NS(web)} {
		if tcp, udp := checksumErrors(t, ns); tcp+udp != 0 {
			t.Errorf("%s: %d TCP and %d UDP checksum errors", ns, tcp, udp)
		}
	}
	if h.ProgramCounter("uplink", "dnat") == 0 || h.ProgramCounter("uplink", "tracked") == 0 {
		t.Error("the uplink program did not count its translations")
	}
	// No iptables rule and no proxy.
	if rules := h.InHost("iptables-save"); strings.Contains(rules, "-A ") {
		t.Errorf("iptables rules appeared:\n%s", rules)
	}
	if rules := strings.TrimSpace(h.InHost("nft", "list", "ruleset")); rules != "" {
		t.Errorf("nftables rules appeared:\n%s", rules)
	}
	// No socket at all on the published port: the bind hook holds it.
	if sockets := strings.TrimSpace(h.InHost("ss", "-Htuan", "sport = :8080")); sockets != "" {
		t.Errorf("sockets on 8080 in the host:\n%s", sockets)
	}
}

func TestPublishedFromHostProcesses(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "8080:7777/udp")
	testbed.Serve(t, h.NS(web))
	for _, addr := range []string{"127.0.0.1:8080", hostIP + ":8080", hostIP2 + ":8080"} {
		mustWork(t, "tcp from the host to "+addr, testbed.TCPTo(h.NetNS, addr))
		mustWork(t, "udp from the host to "+addr, testbed.UDPTo(h.NetNS, addr))
	}
	// The socket still names the published address as its peer.
	c, err := testbed.Dial(h.NetNS, "tcp4", "127.0.0.1:8080", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := c.(*net.TCPConn).SyscallConn()
	var peer unix.Sockaddr
	raw.Control(func(fd uintptr) { peer, err = unix.Getpeername(int(fd)) })
	if in4, ok := peer.(*unix.SockaddrInet4); err != nil || !ok || in4.Port != 8080 || in4.Addr != [4]byte{127, 0, 0, 1} {
		t.Errorf("getpeername = %+v, %v; want 127.0.0.1:8080", peer, err)
	}
	// Unconnected UDP goes through sendmsg4, and the reply's source reads
	// as the published address through recvmsg4.
	var pc net.PacketConn
	if err := namespace.Do(h.NetNS, func() (err error) { pc, err = net.ListenPacket("udp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(time.Second))
	if _, err := pc.WriteTo([]byte("hello"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.String() != "127.0.0.1:8080" {
		t.Errorf("unconnected UDP: %q from %v, %v; want the echo from 127.0.0.1:8080", buf[:n], from, err)
	}
	if h.ProgramCounter("socket", "dnat") == 0 {
		t.Error("the socket hooks did not count their translations")
	}
	// The hooks act only in their own namespace: the outside has no such port.
	mustFail(t, "tcp to 127.0.0.1:8080 from another namespace", testbed.TCPTo(out.NS, "127.0.0.1:8080"))
}

// A host process on an IPv6 socket reaches a port published on every
// address, as Docker's proxy serves [::]: through ::1 (where localhost
// resolves first for Node.js and others) and through a v4-mapped address
// (Java's sockets), and its peer reads as what it dialled. A port
// published on 127.0.0.1 alone is not on ::1.
func TestPublishedFromHostIPv6Sockets(t *testing.T) {
	t.Parallel()
	h, _ := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "127.0.0.1:8081:7777")
	testbed.Serve(t, h.NS(web))
	for _, c := range []struct {
		addr [16]byte
		port int
	}{
		{[16]byte{15: 1}, 8080},                                     // ::1
		{[16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}, 8080},        // ::ffff:127.0.0.1
		{[16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 99, 15: 1}, 8080}, // ::ffff:10.99.0.1, the host's
		{[16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}, 8081},        // ::ffff:127.0.0.1, published there
	} {
		peer, err := dialIPv6Socket(h.NetNS, c.addr, c.port)
		want := &unix.SockaddrInet6{Addr: c.addr, Port: c.port}
		if err != nil || peer.Port != want.Port || peer.Addr != want.Addr {
			t.Errorf("[%x]:%d from an IPv6 socket: peer %+v, %v; want what it dialled", c.addr, c.port, peer, err)
		}
	}
	if _, err := dialIPv6Socket(h.NetNS, [16]byte{15: 1}, 8081); err == nil {
		t.Error("[::1]:8081 reached a port published on 127.0.0.1 alone")
	}
}

// dialIPv6Socket connects an AF_INET6 TCP socket in the namespace at ns,
// exchanges a line with the echo server, and returns the peer the socket
// names.
func dialIPv6Socket(ns string, addr [16]byte, port int) (peer *unix.SockaddrInet6, err error) {
	err = namespace.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.Timeval{Sec: 2}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: addr, Port: port}); err != nil {
			return err
		}
		if _, err := unix.Write(fd, []byte("hello\n")); err != nil {
			return err
		}
		buf := make([]byte, 256)
		if n, err := unix.Read(fd, buf); err != nil || n == 0 {
			return fmt.Errorf("no echo: %d bytes, %v", n, err)
		}
		sa, err := unix.Getpeername(fd)
		if err != nil {
			return err
		}
		in6, ok := sa.(*unix.SockaddrInet6)
		if !ok {
			return fmt.Errorf("peer %T", sa)
		}
		peer = in6
		return nil
	})
	return peer, err
}

func TestPublishedFromSandboxes(t *testing.T) {
	t.Parallel()
	h, _ := newPublishingHost(t)
	web, cl, stranger, other := h.Name("web"), h.Name("cl"), h.Name("stranger"), h.Name("other")
	h.MustCLI("network", "create", other)
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "8080:7777/udp")
	h.MustCLI("sandbox", "create", cl)
	h.MustCLI("sandbox", "create", stranger, "--network", other)
	testbed.Serve(t, h.NS(web))
	gateway := h.Sandbox(web).NetworkSettings.Networks["bridge"].Gateway

	for _, from := range []string{cl, web, stranger} {
		for _, addr := range []string{hostIP + ":8080", gateway + ":8080"} {
			mustWork(t, fmt.Sprintf("tcp from %s to %s", from, addr), testbed.TCPTo(h.NS(from), addr))
			mustWork(t, fmt.Sprintf("udp from %s to %s", from, addr), testbed.UDPTo(h.NS(from), addr))
		}
	}
	// Another sandbox is seen as itself; the publishing sandbox reaching
	// itself comes from the gateway, or its reply would never come back.
	if peer := peerOf(t, h.NS(cl), "tcp4", hostIP+":8080"); peer.Addr().String() != h.IP(cl, "bridge") {
		t.Errorf("hairpin from %s seen as %s", cl, peer)
	}
	if peer := peerOf(t, h.NS(web), "tcp4", hostIP+":8080"); peer.Addr().String() != gateway {
		t.Errorf("hairpin to itself seen as %s, want the gateway %s", peer, gateway)
	}
	// Still no way around the isolation: the stranger cannot reach web directly.
	mustFail(t, "stranger to web's own address", testbed.TCP(h.NS(stranger), h.IP(web, "bridge")))
}

func TestMasquerade(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a)
	h.MustCLI("sandbox", "create", b)
	for _, ns := range []string{out.NS, h.NS(a)} {
		h.MustRun("ip", "netns", "exec", strings.TrimPrefix(ns, "/run/netns/"), "ethtool", "-K", "eth0", "tx", "off")
	}
	for _, proto := range []string{"tcp4", "udp4"} {
		if peer := peerOf(t, h.NS(a), proto, out.IP+":7777"); peer.Addr().String() != hostIP {
			t.Errorf("%s: the outside saw %s, want the uplink's address %s", proto, peer, hostIP)
		}
	}
	mustWork(t, "ping through the masquerade", h.Ping(a, out.IP))
	if tcp, udp := checksumErrors(t, out.NS); tcp+udp != 0 {
		t.Errorf("the outside counted %d TCP and %d UDP checksum errors", tcp, udp)
	}

	// Two sandboxes, the same source port, at the same time: both work,
	// on different NAT ports.
	var peers []string
	for _, sb := range []string{a, b} {
		c, err := testbed.Dial(h.NS(sb), "tcp4", out.IP+":7777", "0.0.0.0:40000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p, err := testbed.Peer(c)
		if err != nil {
			t.Fatalf("%s: %v", sb, err)
		}
		peers = append(peers, p)
	}
	if peers[0] == peers[1] {
		t.Fatalf("both flows left as %s", peers[0])
	}
	if h.ProgramCounter("from_container", "snat") == 0 {
		t.Error("masquerade was not counted")
	}
}

// Flows keep their own source port while it is free towards their
// destination; on a collision they take a port of the NAT range, and only
// when that is used up too is a flow refused.
func TestNATPortExhaustion(t *testing.T) {
	h, out := newPublishingHost(t, "--nat-ports", "61000-61001")
	var conns []net.Conn
	var errs []error
	for i := range 4 {
		sb := h.Name(fmt.Sprint("s", i))
		h.MustCLI("sandbox", "create", sb)
		c, err := testbed.Dial(h.NS(sb), "tcp4", out.IP+":7777", "0.0.0.0:40000")
		if err == nil {
			_, err = testbed.Peer(c)
			conns = append(conns, c)
		}
		errs = append(errs, err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || errs[3] == nil {
		t.Fatalf("one source port, two NAT ports: flows %v; want three through and the fourth refused", errs)
	}
	if h.ProgramCounter("from_container", "drop_no_nat_port") == 0 || h.ProgramCounter("from_container", "nat_port_collision") == 0 {
		t.Error("exhaustion and collisions were not counted")
	}
}

func TestPublishedAddressScope(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "127.0.0.1:8081:7777", "-p", hostIP2+":8082:7777")
	testbed.Serve(t, h.NS(web))
	// Published on 127.0.0.1: the host reaches it, its neighbours do not.
	mustWork(t, "host to 127.0.0.1:8081", testbed.TCPTo(h.NetNS, "127.0.0.1:8081"))
	mustFail(t, "outside to "+hostIP+":8081", testbed.TCPTo(out.NS, hostIP+":8081"))
	// Published on one host address: only there.
	mustWork(t, "outside to "+hostIP2+":8082", testbed.TCPTo(out.NS, hostIP2+":8082"))
	mustFail(t, "outside to "+hostIP+":8082", testbed.TCPTo(out.NS, hostIP+":8082"))
	mustFail(t, "host to "+hostIP+":8082", testbed.TCPTo(h.NetNS, hostIP+":8082"))
}

func TestPublishConflictsAndUnpublish(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web, other := h.Name("web"), h.Name("other")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	h.MustCLI("sandbox", "create", other)
	testbed.Serve(t, h.NS(web))
	testbed.Serve(t, h.NS(other))

	// A host process listening on 8090.
	var l net.Listener
	if err := namespace.Do(h.NetNS, func() (err error) { l, err = net.Listen("tcp4", ":8090"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"publish", "8080:7777", other}, "host port 8080/tcp is already published by sandbox " + web},
		{[]string{"publish", hostIP + ":8080:7777", other}, "is already published by sandbox " + web},
		{[]string{"publish", "8090:7777", other}, "host port 8090/tcp is in use by a process on the host"},
		{[]string{"publish", "10.1.2.3:8091:7777", other}, "host address 10.1.2.3 is not an address of this host"},
		{[]string{"publish", "abc", other}, `invalid port spec "abc"`},
		{[]string{"publish", "99999:80", other}, `invalid port spec "99999:80"`},
		{[]string{"publish", "80/sctp", other}, `protocol "sctp" is not tcp or udp`},
		{[]string{"publish", "8000-8010:80-85", other}, "differ in number"},
		{[]string{"publish", "[2001:db8::77]:8092:7777", other}, "host address 2001:db8::77 is not an address of this host"},
		{[]string{"publish", "8095:7777", "8080:7777", other}, "already published"}, // all or nothing
		{[]string{"sandbox", "create", h.Name("late"), "-p", "8080:7777"}, "already published"},
		{[]string{"sandbox", "create", h.Name("late"), "--network", "none", "-p", "80"}, "-p need a bridge or macvlan network"},
		{[]string{"unpublish", "9999", web}, `publishes nothing that matches "9999"`},
		{[]string{"network", "disconnect", "bridge", web}, "unpublish it first"},
	} {
		msg, err := h.CLI(c.args...)
		if err == nil || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("ebpfnet %s: %v %q; want one line with %q", strings.Join(c.args, " "), err, msg, c.want)
		}
	}
	if ports := h.MustCLI("port", other); ports != "" {
		t.Fatalf("failed publishes left ports: %s", ports)
	}
	if _, err := h.CLI("sandbox", "inspect", h.Name("late")); err == nil {
		t.Fatal("a sandbox whose publication failed was created")
	}
	// The other protocol, ranges and random ports are fine.
	h.MustCLI("publish", "8080:7777/udp", other)
	if got := h.MustCLI("publish", "8100-8102:7775-7777", other); strings.Count(got, "\n") != 2 {
		t.Fatalf("range publish printed %q", got)
	}
	mustWork(t, "outside to the range's last port", testbed.TCPTo(out.NS, hostIP+":8102"))
	random := h.MustCLI("publish", "7777", other)
	_, hostPart, _ := strings.Cut(random, " -> 0.0.0.0:")
	if port, err := strconv.Atoi(hostPart); err != nil || port < 32768 || port > 60999 {
		t.Fatalf("random publish printed %q: want a port of the ephemeral range", random)
	}
	mustWork(t, "outside to the random port", testbed.TCPTo(out.NS, hostIP+":"+hostPart))

	// Unpublish removes every trace: the port, its map entry, and the flows
	// established through it.
	established, err := testbed.Dial(out.NS, "tcp4", hostIP+":8080", "")
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	mustWork(t, "established flow to 8080", echoOn(established))
	before := mapEntries(t, h)
	h.MustCLI("unpublish", "8080", web)
	// One entry per family: 8080 was published on 0.0.0.0 and [::].
	if after := mapEntries(t, h); after["publications"] != before["publications"]-2 {
		t.Errorf("unpublish left map entries: before %v, after %v", before, after)
	}
	mustFail(t, "established flow after unpublish", echoOn(established))
	mustFail(t, "outside to 8080 after unpublish", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustFail(t, "host to 127.0.0.1:8080 after unpublish", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))
	// A removed publication frees its port: after unpublish, and with its sandbox.
	h.MustCLI("publish", "8080:7777", other)
	h.MustCLI("sandbox", "rm", other)
	if n := mapEntries(t, h)["publications"]; n != 0 {
		t.Errorf("%d publications left after the sandbox went", n)
	}
	h.MustCLI("publish", "8080:7777", "8100-8102:7775-7777", web)
	mustWork(t, "outside to 8080, published again", testbed.TCPTo(out.NS, hostIP+":8080"))
}

func mapEntries(t *testing.T, h *testbed.Host) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range h.Status().Maps {
		out[m.Map] = m.Entries
	}
	return out
}

func TestPublishedPortsOutliveTheDaemon(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	testbed.Serve(t, h.NS(web))
	established, err := testbed.Dial(out.NS, "tcp4", hostIP+":8080", "")
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	mustWork(t, "established flow", echoOn(established))

	h.Stop(syscall.SIGKILL)
	mustWork(t, "established flow with the daemon dead", echoOn(established))
	mustWork(t, "new flow from outside with the daemon dead", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "new flow from the host with the daemon dead", testbed.TCPTo(h.NetNS, "127.0.0.1:8080"))

	h.Start()
	mustWork(t, "established flow after restart", echoOn(established))
	mustWork(t, "new flow after restart", testbed.TCPTo(out.NS, hostIP+":8080"))
	if ports := h.MustCLI("port", web); ports != "7777/tcp -> 0.0.0.0:8080" {
		t.Fatalf("ports after restart: %q", ports)
	}
}

func echoOn(c net.Conn) error {
	_, err := testbed.Peer(c)
	return err
}

func TestFiftyThousandPublications(t *testing.T) {
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web)
	for _, port := range []int{10000, 59999, testbed.EchoPort} {
		testbed.ServeOn(t, h.NS(web), port)
	}
	start := time.Now()
	h.MustCLI("publish", "10000-59999:10000-59999", web)
	t.Logf("published 50000 ports in %s", time.Since(start).Round(time.Millisecond))
	if n := mapEntries(t, h)["publications"]; n != 2*50000 {
		t.Fatalf("%d publications in the map, want 100000 (one per family)", n)
	}
	if n := h.Status().HeldPorts; n != 50000 {
		t.Fatalf("%d host ports held, want 50000", n)
	}
	for _, port := range []string{"10000", "59999"} {
		mustWork(t, "outside to port "+port, testbed.TCPTo(out.NS, hostIP+":"+port))
		mustWork(t, "host to 127.0.0.1:"+port, testbed.TCPTo(h.NetNS, "127.0.0.1:"+port))
	}
	// With 50000 there, one more comes and goes on its own.
	h.MustCLI("publish", "8080:7777", web)
	mustWork(t, "outside to 8080", testbed.TCPTo(out.NS, hostIP+":8080"))
	h.MustCLI("unpublish", "8080", web)
	mustFail(t, "outside to 8080 after unpublish", testbed.TCPTo(out.NS, hostIP+":8080"))
	h.MustCLI("unpublish", "10000-59999", web)
	if n := mapEntries(t, h)["publications"]; n != 0 {
		t.Fatalf("%d publications left", n)
	}
	if n := h.Status().HeldPorts; n != 0 {
		t.Fatalf("%d host ports still held", n)
	}
}

// One unconnected UDP socket of the host sends to a publication by several
// addresses: each answer reads as coming from the address it asked. What
// the hooks remember for that lives with the socket and goes with it, so
// no table of the datapath grows with the sockets a host opens.
func TestUnconnectedUDPToSeveralPublishedAddresses(t *testing.T) {
	t.Parallel()
	h, _ := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777/udp", "-p", "8081:7777/udp")
	testbed.Serve(t, h.NS(web))
	var pc net.PacketConn
	if err := namespace.Do(h.NetNS, func() (err error) { pc, err = net.ListenPacket("udp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// Each datagram names its round and destination, and is sent again
	// if no echo comes within a second (a loaded host may lose one): an
	// echo of another one, late, is passed over, not taken for this one's.
	ask := func(to *net.UDPAddr, msg string) (from net.Addr, err error) {
		for try := 0; try < 5; try++ {
			if _, err := pc.WriteTo([]byte(msg), to); err != nil {
				return nil, err
			}
			pc.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			for {
				var n int
				n, from, err = pc.ReadFrom(buf)
				if err != nil || string(buf[:n]) == msg {
					break
				}
			}
			if err == nil {
				return from, nil
			}
		}
		return nil, err
	}
	for round := range 2 {
		for _, dst := range []string{"127.0.0.1:8080", hostIP + ":8080", hostIP2 + ":8081", "127.0.0.1:8081"} {
			to, _ := net.ResolveUDPAddr("udp4", dst)
			from, err := ask(to, fmt.Sprintf("round %d to %s", round, dst))
			if err != nil || from.String() != dst {
				t.Errorf("round %d, to %s: echo from %v, %v; want the echo from %s", round, dst, from, err, dst)
			}
		}
	}
	for _, m := range h.Status().Maps {
		if strings.HasPrefix(m.Map, "sock") {
			t.Errorf("a per-socket table %s is kept in the datapath's maps", m.Map)
		}
	}
}

package bpf_test

// IPv6 as an attacker sees it, as attack_test.go has the datapath: a
// sandbox posing as a router or as its neighbour, v4-mapped addresses
// slipping IPv6 packets into IPv4 flows and publications, a bind that
// takes a held port, a translated reply that outgrows its path.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// A sandbox is no router: a router advertisement or a redirect from it
// (from any link-local address it likes) would make its neighbours route
// through it, icc=false or not (the advertisement goes to ff02::1, which
// to_container lets through from a neighbour).
func TestSandboxRouterMessages(t *testing.T) {
	const icmp6 = 58
	for _, tt := range []struct {
		name string
		pkt  []byte
	}{
		{"router advertisement", ipv6Packet("fe80::1", "ff02::1", icmp6, 134)},
		{"redirect", ipv6Packet("fe80::1", "fe80::42:acff:fe13:503", icmp6, 137)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed6(t, func(n *maps.Network) { n.ICCDisabled = true })
			tb.run(t, tb.dp.Endpoint.FromContainer, tt.pkt, tcActShot, "from_container/drop_spoofed")
		})
	}
}

// A neighbour advertisement claiming another's address stays refused
// behind more extension headers than parse_ipv6 walks: the receiver's
// kernel walks them all and takes the claim.
func TestNeighbourAdvertBehindExtensionHeaders(t *testing.T) {
	na := neighbourAdvert("fd00:19::5:2", "fd00:19::5:3")
	ip, l4 := na[:54], na[54:]
	var chain []byte
	for i := 0; i < 5; i++ {
		next := byte(60) // destination options
		if i == 4 {
			next = 58
		}
		chain = append(chain, next, 0, 1, 4, 0, 0, 0, 0) // PadN
	}
	pkt := append(append(append([]byte(nil), ip...), chain...), l4...)
	pkt[14+6] = 60
	binary.BigEndian.PutUint16(pkt[14+4:], uint16(len(chain)+len(l4)))
	tb := newTestbed6(t, func(*maps.Network) {})
	tb.run(t, tb.dp.Endpoint.FromContainer, pkt, tcActShot, "from_container/drop_spoofed")
}

// An IPv4 address written v4-mapped into an IPv6 packet is no IPv6
// destination (RFC 4291 2.5.5.2: it never appears on the wire): a
// sandbox's IPv6 packet to ::ffff:a.b.c.d must not come out of the host as
// IPv4, masqueraded behind the uplink's IPv4 address, which would give an
// IPv6 network NAT64 to the IPv4 world its gateway_mode_ipv4 never gave it.
func TestV4MappedDestinationFromSandbox(t *testing.T) {
	nb := newNATBed6(t)
	mapped := netip.AddrFrom16(clientAddr.As16())
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr6, 33000), ap(mapped, 53), false))
	if ret == tcActRedirect {
		t.Errorf("IPv6 to [%s]:53 redirected as %x", mapped, out[:42])
	}
	if ret != tcActShot {
		t.Errorf("verdict %d, want dropped", ret)
	}
}

// A port published on 0.0.0.0 is IPv4's alone (TestIPv6PublicationsPerFamily),
// also when an IPv6 client writes the host's IPv4 address v4-mapped.
func TestV4MappedHostAddressFromOutside(t *testing.T) {
	nb := newNATBed6(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	mapped := netip.AddrFrom16(hostAddr.As16())
	ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(6, ap(clientAddr6, 40000), ap(mapped, 8080), false))
	if ret != tcActUnspec {
		t.Errorf("IPv6 client to [%s]:8080 published on 0.0.0.0: verdict %d (%x), want passed untranslated", mapped, ret, out[:34])
	}
}

// An IPv6 packet from outside with v4-mapped addresses must not match an
// IPv4 flow's conntrack entry and be delivered into its sandbox as IPv4.
func TestV4MappedPacketMatchesIPv4Flow(t *testing.T) {
	nb := newNATBed6(t)
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, segment(17, ap(webAddr, 33000), ap(clientAddr, 53), false))
	if ret != tcActRedirect {
		t.Fatalf("IPv4 masquerade: verdict %d", ret)
	}
	sent := verify(t, out)
	src, dst := netip.AddrFrom16(clientAddr.As16()), netip.AddrFrom16(sent.src.Addr().As16())
	ret, out = nb.run(t, nb.dp.Uplink.UplinkIngress, segment(17, ap(src, 53), ap(dst, sent.src.Port()), false))
	if ret != tcActUnspec {
		t.Errorf("IPv6 [%s]:53 -> [%s]:%d: verdict %d (%x), want passed untranslated",
			src, dst, sent.src.Port(), ret, out[:34])
	}
}

// A bind of [::ffff:0.0.0.0] takes the port on every IPv4 address, as a
// bind of 0.0.0.0 does: a port published on one address alone is held
// from it all the same.
func TestBind6V4MappedWildcard(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := fmt.Sprintf("/run/netns/ebpfnet-bpftest-%d", randUint())
	must(t, namespace.Create(ns))
	t.Cleanup(func() { namespace.Remove(ns) })
	var cookie uint64
	must(t, namespace.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	}))
	dp, err := loader.Load(loader.Options{NetnsCookie: cookie})
	must(t, err)
	t.Cleanup(func() { dp.Close() })
	must(t, maps.New(&dp.Maps).PutPublication(maps.Publication{HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, Proto: 6, Addr: webAddr, Port: 80}))
	cg := ownCgroup(t)
	for _, h := range []struct {
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{{ebpf.AttachCGroupInet4Bind, dp.Sock.SockBind4}, {ebpf.AttachCGroupInet6Bind, dp.Sock.SockBind6}} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: h.attach, Program: h.prog})
		must(t, err)
		t.Cleanup(func() { l.Close() })
	}
	for _, target := range []string{"0.0.0.0:8081", "[::ffff:0.0.0.0]:8081"} {
		var got error
		must(t, namespace.Do(ns, func() error {
			got = bindAsNobodyOnThread(netip.MustParseAddrPort(target))
			return nil
		}))
		if got != unix.EPERM {
			t.Errorf("nobody's bind of %s: %v, want EPERM (port 8081 is published on 127.0.0.1)", target, got)
		}
	}
}

// ownCgroup is the cgroup2 directory of this process; the hooks attached
// there act in the test's namespace alone (netns_cookie).
func ownCgroup(t *testing.T) string {
	t.Helper()
	root, err := loader.Cgroup2Root()
	must(t, err)
	f, err := os.Open("/proc/self/cgroup")
	must(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join(root, rest)
		}
	}
	t.Fatal("no cgroup2 in /proc/self/cgroup")
	return ""
}

// bindAsNobodyOnThread binds a TCP socket to ap as user nobody, on this
// (locked) thread alone: setresuid is per thread for the raw syscall. The
// saved uid stays root, to come back.
func bindAsNobodyOnThread(ap netip.AddrPort) error {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	if ap.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 0); e != 0 {
		return e
	}
	err = unix.Bind(fd, sa)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
		panic(fmt.Sprintf("back to root: %v", e))
	}
	return err
}

// The reply of an IPv4-only sandbox to an IPv6 client grows by 20 bytes
// when translated: the uplink's MTU must be checked against what leaves,
// not what came in, or a reply that fits as IPv4 leaves too big as IPv6
// (and no ICMP error tells the sandbox).
func TestTranslatedReplyTooBig(t *testing.T) {
	nb := newNATBed6(t)
	name := nb.ns[len("/run/netns/"):]
	if out, err := exec.Command("ip", "-n", name, "link", "set", "up0", "mtu", "1280").CombinedOutput(); err != nil {
		t.Fatalf("set mtu: %v: %s", err, out)
	}
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 17, Addr: webAddr, Port: 80}))
	if ret, _ := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(17, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false)); ret != tcActRedirect {
		t.Fatalf("request: verdict %d", ret)
	}
	// An IPv4 reply of exactly 1280 bytes: 1300 as IPv6.
	reply := segment(17, ap(webAddr, 80), ap(bridgeNet.Gateway, 40000), false)
	reply = append(reply, make([]byte, 1280-(len(reply)-14))...)
	binary.BigEndian.PutUint16(reply[14+2:], 1280)
	binary.BigEndian.PutUint16(reply[14+10:], 0)
	binary.BigEndian.PutUint16(reply[14+10:], checksum(reply[14:34], 0))
	binary.BigEndian.PutUint16(reply[34+4:], uint16(len(reply)-34))
	binary.BigEndian.PutUint16(reply[34+6:], 0)
	binary.BigEndian.PutUint16(reply[34+6:], checksum(reply[34:], pseudo(reply[14:34], len(reply)-34)))
	ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, reply)
	if ret == tcActRedirect && binary.BigEndian.Uint16(out[12:]) == 0x86dd {
		t.Fatalf("a %d-byte IPv6 packet redirected out of an uplink of MTU 1280", 14+40+int(binary.BigEndian.Uint16(out[14+4:]))-14)
	}
	// The sandbox learns what it may send: the route's MTU less the 20
	// bytes the translation adds, from its gateway.
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want the frag needed redirected back to the sandbox", ret)
	}
	got := verifyICMP(t, out)
	if got.typ != 3 || got.code != 4 || got.mtu != 1260 || got.src != bridgeNet.Gateway || got.dst != webAddr {
		t.Errorf("answered with %+v, want frag needed, MTU 1260, from %s to %s", got, bridgeNet.Gateway, webAddr)
	}
}

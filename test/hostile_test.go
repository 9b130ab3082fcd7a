package test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A hostile neighbour: mallory, a sandbox on the network of web (which
// publishes 8080), tries with real traffic to take what is web's or the
// host's, and gets nothing: a published port's next client, a host
// connection's replies, the host's pings' replies, or the flows of a
// sandbox whose address it is given after that sandbox is gone.
func TestHostileNeighbour(t *testing.T) {
	h, out := newPublishingHost(t)
	app := h.Name("app")
	h.MustCLI("network", "create", "--subnet", "172.19.0.0/16", app)
	web, mallory := h.Name("web"), h.Name("mallory")
	h.MustCLI("sandbox", "create", web, "--network", app, "-p", "8080:80/udp")
	h.MustCLI("sandbox", "create", mallory, "--network", app)

	t.Run("published port", func(t *testing.T) { publishedPortStaysWebs(t, h, out, web, mallory) })
	t.Run("host connection", func(t *testing.T) { hostConnectionKeepsItsReplies(t, h, out, mallory) })
	t.Run("host pings", func(t *testing.T) { hostPingsKeepTheirReplies(t, h, out, mallory) })
	t.Run("freed address", func(t *testing.T) { freedAddressInheritsNothing(t, h, out, app) })
}

// listenUDP opens a UDP socket in a namespace, closed when the test ends.
func listenUDP(t *testing.T, ns, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	mustWork(t, "listen on udp "+addr+" in "+ns, namespace.Do(ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return err }))
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads a datagram from c within wait; ok is false when none came.
func receive(c net.PacketConn, wait time.Duration) (data string, from net.Addr, ok bool) {
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return "", nil, false
	}
	return string(buf[:n]), from, true
}

// mallory sends from 8080, the port web publishes, to a client's port;
// that client's next datagram to the published port still reaches web.
func publishedPortStaysWebs(t *testing.T, h *testbed.Host, out testbed.Outside, web, mallory string) {
	client := listenUDP(t, out.NS, ":40000")
	webSock := listenUDP(t, h.NS(web), ":80")
	mallorySock := listenUDP(t, h.NS(mallory), ":8080")
	if _, err := mallorySock.WriteTo([]byte("claim"), &net.UDPAddr{IP: net.ParseIP(out.IP), Port: 40000}); err != nil {
		t.Fatal(err)
	}
	if _, from, ok := receive(client, 5*time.Second); !ok {
		t.Fatal("the client got nothing from mallory")
	} else {
		t.Logf("mallory's datagram from port 8080 came from %s", from)
	}
	if _, err := client.WriteTo([]byte("for web"), &net.UDPAddr{IP: net.ParseIP(hostIP), Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if data, _, ok := receive(mallorySock, time.Second); ok {
		t.Errorf("mallory received %q, the client's datagram to the published port 8080", data)
	}
	if data, _, ok := receive(webSock, 5*time.Second); !ok || data != "for web" {
		t.Errorf("web got %q (ok %v) of the client's datagram to its published port; want \"for web\"", data, ok)
	}
}

// mallory's flow keeps its source port, 33333; the host later connects
// from that port to the same server, whose replies are the host's.
func hostConnectionKeepsItsReplies(t *testing.T, h *testbed.Host, out testbed.Outside, mallory string) {
	server := listenUDP(t, out.NS, ":5354")
	mallorySock := listenUDP(t, h.NS(mallory), ":33333")
	serverAddr := &net.UDPAddr{IP: net.ParseIP(out.IP), Port: 5354}
	if _, err := mallorySock.WriteTo([]byte("mallory's query"), serverAddr); err != nil {
		t.Fatal(err)
	}
	_, masqueraded, ok := receive(server, 5*time.Second)
	if !ok {
		t.Fatal("the server got nothing from mallory")
	}
	var host net.Conn
	mustWork(t, "the host's connection from port 33333", namespace.Do(h.NetNS, func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: masqueraded.(*net.UDPAddr).IP, Port: 33333}}
		host, err = d.Dial("udp4", serverAddr.String())
		return err
	}))
	defer host.Close()
	if _, err := host.Write([]byte("the host's query")); err != nil {
		t.Fatal(err)
	}
	_, from, ok := receive(server, 5*time.Second)
	if !ok {
		t.Fatal("the server got nothing from the host")
	}
	if from.String() != masqueraded.String() || masqueraded.(*net.UDPAddr).Port != 33333 {
		t.Fatalf("mallory's flow left from %s and the host's from %s; want both from port 33333", masqueraded, from)
	}
	if _, err := server.WriteTo([]byte("for the host"), from); err != nil {
		t.Fatal(err)
	}
	if data, _, ok := receive(mallorySock, time.Second); ok {
		t.Errorf("mallory received %q, the reply to the host's connection from %s", data, from)
	}
	buf := make([]byte, 64)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := host.Read(buf); err != nil || string(buf[:n]) != "for the host" {
		t.Errorf("the host's connection got %q, %v; want \"for the host\"", buf[:n], err)
	}
}

// pinger is a raw ICMP socket in a namespace, sending echo requests with
// chosen identifiers (as busybox's ping and any raw pinger do) and reading
// the echo replies that reach the namespace.
type pinger struct{ c net.PacketConn }

func newPinger(t *testing.T, ns string) pinger {
	t.Helper()
	var c net.PacketConn
	mustWork(t, "raw icmp socket in "+ns, namespace.Do(ns, func() (err error) { c, err = net.ListenPacket("ip4:icmp", "0.0.0.0"); return err }))
	t.Cleanup(func() { c.Close() })
	return pinger{c}
}

func (p pinger) ping(t *testing.T, dst string, id uint16) {
	t.Helper()
	msg := make([]byte, 12)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], 1)
	copy(msg[8:], "ping")
	var sum uint32
	for i := 0; i < len(msg); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(msg[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	if _, err := p.c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
		t.Fatal(err)
	}
}

// replied reports whether an echo reply with identifier id reaches the
// namespace within wait.
func (p pinger) replied(id uint16, wait time.Duration) bool {
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for {
		p.c.SetReadDeadline(deadline)
		n, _, err := p.c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
			return true
		}
	}
}

// mallory pings the outside with the identifier the host pings it with,
// before the host and after: the replies to the host's pings are the
// host's, and mallory's own pings still get theirs.
func hostPingsKeepTheirReplies(t *testing.T, h *testbed.Host, out testbed.Outside, mallory string) {
	host, m := newPinger(t, h.NetNS), newPinger(t, h.NS(mallory))
	// mallory first: its identifier is kept, then the host takes it.
	m.ping(t, out.IP, 4321)
	if !m.replied(4321, 5*time.Second) {
		t.Fatal("mallory's ping 4321 got no reply")
	}
	host.ping(t, out.IP, 4321)
	if m.replied(4321, time.Second) {
		t.Error("mallory received the reply to the host's ping 4321")
	}
	if !host.replied(4321, 5*time.Second) {
		t.Error("the host's ping 4321 got no reply")
	}
	// The host first: mallory's ping with the same identifier leaves
	// with another, and both get their replies.
	host.ping(t, out.IP, 5555)
	if !host.replied(5555, 5*time.Second) {
		t.Fatal("the host's ping 5555 got no reply")
	}
	m.ping(t, out.IP, 5555)
	if !m.replied(5555, 5*time.Second) {
		t.Error("mallory's ping 5555, after the host's, got no reply")
	}
	host.ping(t, out.IP, 5555)
	if !host.replied(5555, 5*time.Second) {
		t.Error("the host's second ping 5555 got no reply")
	}
	if m.replied(5555, time.Second) {
		t.Error("mallory received the reply to the host's second ping 5555")
	}
}

// A sandbox given a removed sandbox's address inherits none of its flows:
// the outside's reply to a flow the first sandbox masqueraded does not
// reach the second, which listens on the very port, and no conntrack entry
// names the address any more.
func freedAddressInheritsNothing(t *testing.T, h *testbed.Host, out testbed.Outside, app string) {
	addr := netip.MustParseAddr("172.19.0.50")

	var server net.PacketConn
	if err := namespace.Do(out.NS, func() (err error) { server, err = net.ListenPacket("udp4", ":5353"); return err }); err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	buf := make([]byte, 64)

	a := h.Name("gone")
	h.MustCLI("sandbox", "create", a, "--network", app, "--ip", addr.String())
	var c net.PacketConn
	if err := namespace.Do(h.NS(a), func() (err error) { c, err = net.ListenPacket("udp4", ":40000"); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo([]byte("query"), &net.UDPAddr{IP: net.ParseIP(out.IP), Port: 5353}); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, masqueraded, err := server.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the outside got nothing from %s: %v", a, err)
	}
	if _, err := server.WriteTo([]byte("answer"), masqueraded); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadFrom(buf); err != nil {
		t.Fatalf("%s got no answer through %s: %v", a, masqueraded, err)
	}
	c.Close()

	h.MustCLI("sandbox", "rm", a)
	b := h.Name("heir")
	h.MustCLI("sandbox", "create", b, "--network", app, "--ip", addr.String())
	if got := h.IP(b, app); got != addr.String() {
		t.Fatalf("%s has %s, want %s's old address %s", b, got, a, addr)
	}
	if err := namespace.Do(h.NS(b), func() (err error) { c, err = net.ListenPacket("udp4", ":40000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, table := range []string{"ct", "ct_new"} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(h.BPFFS(), table), nil)
		if err != nil {
			t.Fatal(err)
		}
		var k bpf.DatapathFlow
		var v bpf.DatapathCtEntry
		for it := m.Iterate(); it.Next(&k, &v); {
			for _, x := range []bpf.DatapathAddr{k.Saddr, k.Daddr, v.Nat.Saddr, v.Nat.Daddr} {
				if maps.Addr(x) == addr {
					t.Errorf("%s still has an entry of %s's flow, %s -> %s", table, a, maps.Addr(k.Saddr), maps.Addr(k.Daddr))
				}
			}
		}
		m.Close()
	}
	if _, err := server.WriteTo([]byte("late answer"), masqueraded); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if n, from, err := c.ReadFrom(buf); err == nil {
		t.Errorf("%s received %q from %s, an answer to %s's flow", b, buf[:n], from, a)
	}
}

// Flows of an endpoint whose flush never finished (the daemon killed
// while it ran) are flushed when the daemon starts again: an entry naming
// an address of an ebpfnet network that no endpoint has goes, while
// entries of live endpoints, gateways and the outside stay.
func TestOrphanedFlowsFlushedAtStart(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	app := h.Name("app")
	h.MustCLI("network", "create", "--subnet", "172.19.0.0/16", app)
	live := h.Name("live")
	h.MustCLI("sandbox", "create", live, "--network", app, "--ip", "172.19.0.50")
	client := netip.MustParseAddrPort(out.IP + ":53")
	entry := func(src netip.AddrPort) bpf.DatapathFlow {
		return bpf.DatapathFlow{Saddr: bpf.DatapathAddr{B: src.Addr().As16()}, Daddr: bpf.DatapathAddr{B: client.Addr().As16()},
			Sport: src.Port(), Dport: client.Port(), Proto: 17}
	}
	orphan, kept := entry(netip.MustParseAddrPort("172.19.0.77:4000")), []bpf.DatapathFlow{
		entry(netip.MustParseAddrPort("172.19.0.50:4000")), // a live endpoint's
		entry(netip.MustParseAddrPort("172.19.0.1:4000")),  // the gateway's
		entry(netip.MustParseAddrPort(hostIP + ":4000")),   // the host's
	}
	h.Stop(syscall.SIGKILL)
	ct, err := ebpf.LoadPinnedMap(filepath.Join(h.BPFFS(), "ct"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	v := bpf.DatapathCtEntry{Expires: uint64(maps.Now() + time.Hour)}
	for _, k := range append([]bpf.DatapathFlow{orphan}, kept...) {
		if err := ct.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	h.Start()
	var got bpf.DatapathCtEntry
	if err := ct.Lookup(orphan, &got); err == nil {
		t.Errorf("the flow of 172.19.0.77, an address no endpoint has, outlived the restart")
	}
	for _, k := range kept {
		if err := ct.Lookup(k, &got); err != nil {
			t.Errorf("the flow of %s went at the restart: %v", maps.Addr(k.Saddr), err)
		}
	}
}

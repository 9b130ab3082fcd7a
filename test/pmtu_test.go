package test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// routedClient puts a client behind a router beyond the host's uplink:
//
//	[client 10.98.0.2] --(clientMTU)-- [router 10.98.0.1 / 10.99.0.2] --(uplinkMTU)-- [host 10.99.0.1]
//
// and over IPv6, 2001:db8:98::2 behind 2001:db8:98::1 / 2001:db8:99::2,
// to the host's 2001:db8:99::1.
//
// The client advertises the MSS of a 1500-byte path whatever its link's
// MTU, so only path MTU discovery can find a narrower link. It returns the
// client's namespace.
func routedClient(t *testing.T, h *testbed.Host, uplinkMTU, clientMTU int) string {
	t.Helper()
	host := h.Prefix + "-host"
	router, client := h.Prefix+"-rt", h.Prefix+"-cl"
	for _, ns := range []string{router, client} {
		h.MustRun("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		h.MustRun("ip", "-n", ns, "link", "set", "lo", "up")
	}
	mtu := func(n int) string { return fmt.Sprint(n) }
	for _, args := range [][]string{
		{"-n", host, "link", "add", "uplink0", "mtu", mtu(uplinkMTU), "type", "veth", "peer", "name", "eth0", "mtu", mtu(uplinkMTU), "netns", router},
		{"-n", host, "addr", "add", "10.99.0.1/24", "dev", "uplink0"},
		{"-n", host, "link", "set", "uplink0", "up"},
		{"-n", host, "route", "add", "10.98.0.0/24", "via", "10.99.0.2"},
		{"-n", router, "addr", "add", "10.99.0.2/24", "dev", "eth0"},
		{"-n", router, "link", "set", "eth0", "up"},
		{"-n", router, "link", "add", "eth1", "mtu", mtu(clientMTU), "type", "veth", "peer", "name", "eth0", "mtu", mtu(clientMTU), "netns", client},
		{"-n", router, "addr", "add", "10.98.0.1/24", "dev", "eth1"},
		{"-n", router, "link", "set", "eth1", "up"},
		{"-n", client, "addr", "add", "10.98.0.2/24", "dev", "eth0"},
		{"-n", client, "link", "set", "eth0", "up"},
		{"-n", client, "route", "add", "default", "via", "10.98.0.1", "advmss", "1460"},
		{"-n", host, "addr", "add", "2001:db8:99::1/64", "dev", "uplink0", "nodad"},
		{"-n", host, "route", "add", "2001:db8:98::/64", "via", "2001:db8:99::2"},
		{"-n", router, "addr", "add", "2001:db8:99::2/64", "dev", "eth0", "nodad"},
		{"-n", router, "addr", "add", "2001:db8:98::1/64", "dev", "eth1", "nodad"},
		{"-n", client, "addr", "add", "2001:db8:98::2/64", "dev", "eth0", "nodad"},
		{"-n", client, "route", "add", "default", "via", "2001:db8:98::1", "advmss", "1440"},
	} {
		h.MustRun("ip", args...)
	}
	h.MustRun("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	// Neighbour discovery on all three links before the first connection
	// over IPv6, whose dial waits one second only.
	h.MustRun("ip", "netns", "exec", client, "busybox", "ping", "-6", "-c1", "-W5", "2001:db8:99::1")
	return "/run/netns/" + client
}

// transfer sends size bytes over TCP from the sending side to the other,
// through a listener in listenNS; it fails the test unless all arrive
// within the deadline.
func transfer(t *testing.T, what, listenNS string, port int, dialNS, dialAddr string, listenerSends bool, size int) {
	t.Helper()
	var l net.Listener
	if err := namespace.Do(listenNS, func() (err error) { l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	deadline := time.Now().Add(30 * time.Second)
	send := func(c net.Conn) error {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
		return c.(*net.TCPConn).CloseWrite()
	}
	receive := func(c net.Conn) (int64, error) { return io.Copy(io.Discard, c) }
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		if listenerSends {
			done <- send(c)
			return
		}
		n, err := receive(c)
		if err == nil && n != int64(size) {
			err = fmt.Errorf("received %d bytes of %d", n, size)
		}
		done <- err
	}()
	c, err := testbed.Dial(dialNS, "tcp", dialAddr, "")
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	start := time.Now()
	if listenerSends {
		n, err := receive(c)
		if err == nil && n != int64(size) {
			err = fmt.Errorf("received %d bytes of %d", n, size)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	} else if err := send(c); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: %d MB in %s", what, size>>20, time.Since(start).Round(time.Millisecond))
}

// 20 MB through a published port and through masquerade when the path is
// narrower than the sandbox's link, whether the narrow link is the host's
// own uplink (the datapath answers with frag needed) or beyond a router
// (whose frag needed, addressed to the host, the datapath translates back
// to the sandbox).
func TestPathMTU(t *testing.T) {
	for _, c := range []struct {
		name                 string
		uplinkMTU, clientMTU int
	}{
		{"uplink MTU 1400", 1400, 1500},
		{"router's link MTU 1400", 1500, 1400},
	} {
		t.Run(c.name, func(t *testing.T) {
			var client string
			h := testbed.NewHostWith(t, func(h *testbed.Host) { client = routedClient(t, h, c.uplinkMTU, c.clientMTU) })
			// One sandbox a direction: a sandbox remembers the path MTU it learns.
			web, up := h.Name("web"), h.Name("up")
			h.MustCLI("sandbox", "create", web, "-p", "8080:9000")
			h.MustCLI("sandbox", "create", up)
			const size = 20 << 20
			for _, tr := range []struct {
				what, sandbox, listenNS string
				port                    int
				dialNS, dialAddr        string
				listenerSends           bool
			}{
				{"download from a published port", web, h.NS(web), 9000, client, hostIP + ":8080", true},
				{"upload through masquerade", up, client, 9001, h.NS(up), "10.98.0.2:9001", false},
				// An IPv6 client of the IPv4-only sandbox: the router's
				// packet too big reaches it as frag needed (RFC 7915 5.2).
				{"download over IPv6 from a published port", web, h.NS(web), 9000, client, "[2001:db8:99::1]:8080", true},
			} {
				before := snmp(t, h.NS(tr.sandbox), "Icmp", "InDestUnreachs")
				transfer(t, tr.what, tr.listenNS, tr.port, tr.dialNS, tr.dialAddr, tr.listenerSends, size)
				if snmp(t, h.NS(tr.sandbox), "Icmp", "InDestUnreachs") == before {
					t.Errorf("%s: the sandbox got no frag needed: the test did not need path MTU discovery", tr.what)
				}
			}
			if c.uplinkMTU < 1500 && h.Counter("drop_too_big") == 0 {
				t.Error("the datapath answered no packet with frag needed")
			}
		})
	}
}

// A 4,000-byte UDP datagram, fragmented on the wire, is echoed through a
// published port and through masquerade: every fragment is translated.
func TestFragmentedDatagrams(t *testing.T) {
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777/udp")
	testbed.Serve(t, h.NS(web))
	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for _, c := range []struct{ what, ns, dst string }{
		{"to a published port", out.NS, hostIP + ":8080"},
		{"through masquerade", h.NS(web), out.IP + ":7777"},
	} {
		conn, err := testbed.Dial(c.ns, "udp4", c.dst, "")
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		buf := make([]byte, 8192)
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("%s: echo of %d bytes, %v; want the 4000 bytes back", c.what, n, err)
		}
	}
}

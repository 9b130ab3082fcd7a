package bench

import (
	"net"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

const (
	hostIP        = "10.99.0.1"
	clientDirect  = "10.99.0.2" // the outside's own address
	clientTC      = "10.99.0.4" // a second one, so the paths share no TIME_WAIT state
	publishedPort = "8080"
)

// path is one way of reaching the sandbox's echo server.
type path struct {
	name, ns, addr, local string
}

// BenchmarkPaths measures new connections (dial, one echo, close) and
// keepalive round trips over each path to the same server:
//
//	direct        outside -> sandbox address, routed, no NAT
//	ebpfnet-tc    outside -> host address:8080 (uplink program)
//	hostdirect    host process -> sandbox address, no NAT
//	ebpfnet-local host process -> 127.0.0.1:8080 (socket hooks)
func BenchmarkPaths(b *testing.B) {
	var out testbed.Outside
	h := testbed.NewHostWith(b, func(h *testbed.Host) {
		out = h.AddOutside()
		h.MustRun("ip", "-n", out.NS[len("/run/netns/"):], "addr", "add", clientTC+"/24", "dev", "eth0")
		// Thousands of short connections per path: let clients reuse
		// their TIME_WAIT ports rather than run out of them.
		for _, ns := range []string{out.NS, h.NetNS} {
			h.MustRun("ip", "netns", "exec", ns[len("/run/netns/"):], "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
		}
	})
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", publishedPort+":7777")
	testbed.Serve(b, h.NS(web))
	webAddr := net.JoinHostPort(h.IP(web, "bridge"), "7777")
	for _, p := range []path{
		{"direct", out.NS, webAddr, clientDirect + ":0"},
		{"ebpfnet-tc", out.NS, hostIP + ":" + publishedPort, clientTC + ":0"},
		{"hostdirect", h.NetNS, webAddr, hostIP + ":0"},
		{"ebpfnet-local", h.NetNS, "127.0.0.1:" + publishedPort, ""},
	} {
		b.Run(p.name+"/connect", func(b *testing.B) { run(b, p, connectOnce) })
		b.Run(p.name+"/rr", func(b *testing.B) { roundTrips(b, p) })
	}
}

// run enters the path's namespace once and runs the loop there, so the
// figures do not measure namespace switching.
func run(b *testing.B, p path, loop func(b *testing.B, d net.Dialer, addr string) error) {
	d := net.Dialer{Timeout: time.Second}
	if p.local != "" {
		local, err := net.ResolveTCPAddr("tcp4", p.local)
		if err != nil {
			b.Fatal(err)
		}
		d.LocalAddr = local
	}
	b.ResetTimer()
	if err := namespace.Do(p.ns, func() error { return loop(b, d, p.addr) }); err != nil {
		b.Fatal(err)
	}
}

// connectOnce opens a connection, makes one exchange and closes, b.N times.
func connectOnce(b *testing.B, d net.Dialer, addr string) error {
	for range b.N {
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		_, err = testbed.Peer(c)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// roundTrips makes b.N exchanges over one connection, from an ordinary
// goroutine: one locked to a namespace's thread pays for every wake-up.
func roundTrips(b *testing.B, p path) {
	c, err := testbed.Dial(p.ns, "tcp4", p.addr, p.local)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for range b.N {
		if _, err := testbed.Peer(c); err != nil {
			b.Fatal(err)
		}
	}
}

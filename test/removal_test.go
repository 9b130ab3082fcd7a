package test

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

// A sandbox given a removed sandbox's address inherits none of its flows:
// the outside's reply to a flow the first sandbox masqueraded does not
// reach the second, which listens on the very port, and no conntrack entry
// names the address any more.
func TestRemovedSandboxFlowsGoWithIt(t *testing.T) {
	h, out := newPublishingHost(t)
	app := h.Name("app")
	h.MustCLI("network", "create", "--subnet", "172.19.0.0/16", app)
	addr := netip.MustParseAddr("172.19.0.50")

	var server net.PacketConn
	if err := namespace.Do(out.NS, func() (err error) { server, err = net.ListenPacket("udp4", ":5353"); return err }); err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	buf := make([]byte, 64)

	a := h.Name("a")
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
	b := h.Name("b")
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

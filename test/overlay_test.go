package test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// waitNetwork waits until h has network name, as the cluster's watch
// brings it.
func waitNetwork(t *testing.T, h *testbed.Host, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.CLI("network", "inspect", name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no network %s after 10 s:\n%s", h.Prefix, name, h.DaemonLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mustResolve asks a sandbox's embedded DNS for name's A record.
func mustResolve(t *testing.T, h *testbed.Host, sandbox, name string) string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, _, err := testbed.Query(h.NS(sandbox), "udp", "127.0.0.11:53", name, dns.TypeA)
		got = nil
		if err == nil {
			for _, rr := range resp.Answer {
				if a, ok := rr.(*dns.A); ok {
					got = append(got, a.A.String())
				}
			}
		}
		if len(got) == 1 {
			return got[0]
		}
	}
	t.Fatalf("%s resolves %s to %v, want one address", sandbox, name, got)
	return ""
}

// An overlay network made on one host appears on every host; sandboxes
// on all three reach each other across hosts by address and by name; a
// second overlay is isolated from the first; addresses taken at once on
// two hosts are never the same; a network with endpoints stays until the
// last one goes.
func TestOverlay(t *testing.T) {
	t.Parallel()
	c := testbed.NewCluster(t, 3)
	h0, h1, h2 := c.Hosts[0], c.Hosts[1], c.Hosts[2]
	out := h1.AddOutside() // early: the daemon takes a new uplink once it settles
	testbed.Serve(t, out.NS)
	ov := h0.Name("ov")
	h0.MustCLI("network", "create", "-d", "overlay", "--subnet", "10.200.0.0/24", "--attachable", ov)
	for _, h := range c.Hosts {
		waitNetwork(t, h, ov)
	}
	n := h2.Network(ov)
	if n.Scope != "global" || n.Driver != "overlay" || !n.Attachable || n.IPAM.Config[0].Subnet != "10.200.0.0/24" || n.Options["com.docker.network.driver.overlay.vxlanid_list"] != "4096" {
		t.Fatalf("on another host: %+v", n)
	}
	if out := h1.MustCLI("network", "ls"); !strings.Contains(out, ov) || !strings.Contains(out, "global") {
		t.Errorf("network ls on another host:\n%s", out)
	}

	// One sandbox per host, reaching each other across hosts.
	var names []string
	for i, h := range c.Hosts {
		name := h.Name(fmt.Sprintf("s%d", i))
		h.MustCLI("sandbox", "create", name, "--network", ov)
		testbed.Serve(t, h.NS(name))
		names = append(names, name)
	}
	for i, h := range c.Hosts {
		for j, o := range c.Hosts {
			if i != j {
				h.MustReach(names[i], o.IP(names[j], ov))
			}
		}
	}
	// The MTU leaves room for VXLAN on the 1500-byte underlay, in the
	// sandboxes too; a full-sized packet crosses unfragmented.
	if out := h1.InHost("ip", "-o", "link", "show", "ebx-4096"); !strings.Contains(out, "mtu 1450") {
		t.Errorf("VXLAN device: %s", out)
	}
	if out := h1.MustCLI("exec", names[1], "--", "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1450") {
		t.Errorf("sandbox interface: %s", out)
	}
	conn, err := testbed.Dial(h0.NS(names[0]), "tcp", h2.IP(names[2], ov)+":7777", "")
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 60000)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(big)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, len(big))
	for buf := make([]byte, 65536); len(got) < len(big); {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("60 kB across hosts: echoed %d bytes, then %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	conn.Close()
	// By name, from every host's resolver.
	if got, want := mustResolve(t, h0, names[0], names[2]), h2.IP(names[2], ov); got != want {
		t.Errorf("%s resolves %s to %s, want %s", names[0], names[2], got, want)
	}
	if got, want := mustResolve(t, h2, names[2], names[1]), h1.IP(names[1], ov); got != want {
		t.Errorf("%s resolves %s to %s, want %s", names[2], names[1], got, want)
	}

	// VXLAN into the overlay from an address on the underlay that is no
	// host of the cluster is dropped on arrival; the hosts' own got in.
	if n := h0.ProgramCounter("uplink", "drop_unknown_vtep"); n != 0 {
		t.Errorf("the hosts' own VXLAN: %d dropped", n)
	}
	h0.MustRun("ip", "-n", c.Underlay, "addr", "add", "10.88.0.200/24", "dev", "br0")
	forged := namespace.Do("/run/netns/"+c.Underlay, func() error {
		conn, err := net.Dial("udp4", testbed.UnderlayAddr(0).String()+":4789")
		if err != nil {
			return err
		}
		defer conn.Close()
		frame := append([]byte{0x08, 0, 0, 0, 0, 0x10, 0x00, 0}, // VNI 4096
			0x02, 0x42, 10, 200, 0, 2, 0x02, 0x42, 10, 200, 0, 99, 0x08, 0x00)
		frame = append(frame, make([]byte, 28)...)
		for range 5 {
			if _, err := conn.Write(frame); err != nil {
				return err
			}
		}
		return nil
	})
	if forged != nil {
		t.Fatal(forged)
	}
	time.Sleep(200 * time.Millisecond)
	if n := h0.ProgramCounter("uplink", "drop_unknown_vtep"); n != 5 {
		t.Errorf("forged VXLAN from the underlay: %d of 5 dropped", n)
	}

	// Isolated from a local network of the same host, both ways.
	local, l0 := h0.Name("local"), h0.Name("l0")
	h0.MustCLI("network", "create", local)
	h0.MustCLI("sandbox", "create", l0, "--network", local)
	testbed.Serve(t, h0.NS(l0))
	h0.MustNotReach(names[0], h0.IP(l0, local))
	h0.MustNotReach(l0, h0.IP(names[0], ov))

	// Out through its own host's uplink, masqueraded, and in through a
	// port published on that host, as on a bridge network.
	conn, err = testbed.Dial(h1.NS(names[1]), "tcp", out.IP+":7777", "")
	if err != nil {
		t.Fatal(err)
	}
	if src, err := testbed.Peer(conn); err != nil || !strings.HasPrefix(src, out.HostIP+":") {
		t.Errorf("the outside sees %s's flow from %q (%v), want the uplink's %s", names[1], src, err, out.HostIP)
	}
	conn.Close()
	h1.MustCLI("publish", "8080:7777", names[1])
	if err := testbed.TCPTo(out.NS, out.HostIP+":8080"); err != nil {
		t.Errorf("published port of an overlay sandbox: %v", err)
	}

	// A second overlay: its sandboxes reach each other, not the first's.
	ov2 := h1.Name("ov2")
	h1.MustCLI("network", "create", "-d", "overlay", ov2)
	waitNetwork(t, h2, ov2)
	waitNetwork(t, h0, ov2)
	other0, other2 := h0.Name("o0"), h2.Name("o2")
	h0.MustCLI("sandbox", "create", other0, "--network", ov2)
	h2.MustCLI("sandbox", "create", other2, "--network", ov2)
	testbed.Serve(t, h2.NS(other2))
	h0.MustReach(other0, h2.IP(other2, ov2))
	h0.MustNotReach(other0, h2.IP(names[2], ov))
	h2.MustNotReach(names[2], h0.IP(other0, ov2))

	// 20 sandboxes created at once from two hosts: no address twice.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		h := c.Hosts[i%2]
		wg.Go(func() {
			_, err := h.CLI("sandbox", "create", h.Name(fmt.Sprintf("many%d", i)), "--network", ov)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]string{}
	for i := range 20 {
		h := c.Hosts[i%2]
		name := h.Name(fmt.Sprintf("many%d", i))
		a := netip.MustParseAddr(h.IP(name, ov))
		if other, ok := seen[a]; ok {
			t.Errorf("%s and %s both have %s", name, other, a)
		}
		seen[a] = name
	}

	// Removal waits for the last endpoint on any host.
	if out, err := h0.CLI("network", "rm", ov2); err == nil || !strings.Contains(out, "active endpoints") {
		t.Fatalf("rm with endpoints on two hosts: %v %s", err, out)
	}
	h0.MustCLI("sandbox", "rm", other0)
	if out, err := h1.CLI("network", "rm", ov2); err == nil || !strings.Contains(out, testbed.UnderlayAddr(2).String()) {
		t.Fatalf("rm with an endpoint on host 2: %v %s, want the host named", err, out)
	}
	h2.MustCLI("sandbox", "rm", other2)
	waitGone := func(h *testbed.Host) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if out, err := h.CLI("network", "rm", ov2); err == nil || strings.Contains(out, "not found") {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("rm %s: %v %s", ov2, err, out)
			}
		}
	}
	waitGone(h1)
	for _, h := range c.Hosts {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if _, err := h.CLI("network", "inspect", ov2); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still has %s", h.Prefix, ov2)
			}
		}
	}
	if out := h0.InHost("ip", "-o", "link", "show"); strings.Contains(out, "ebx-4097") {
		t.Errorf("the removed overlay's VXLAN device is left:\n%s", out)
	}
}

// A host outside a cluster has no overlay networks, and says how to get
// them; nothing is made.
func TestOverlayNeedsACluster(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	out, err := h.CLI("network", "create", "-d", "overlay", h.Name("ov"))
	if err == nil || !strings.Contains(out, "--cluster-store") {
		t.Fatalf("overlay without a cluster: %v %s", err, out)
	}
	if _, err := h.CLI("network", "inspect", h.Name("ov")); err == nil {
		t.Error("the refused network exists")
	}
	if out := h.InHost("ip", "-o", "link"); strings.Contains(out, "ebo-") || strings.Contains(out, "ebx-") {
		t.Errorf("the refused network left devices:\n%s", out)
	}
}

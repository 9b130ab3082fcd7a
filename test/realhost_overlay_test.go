package test

import (
	"fmt"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// TestRealHostOverlay is an overlay across two hosts of one etcd cluster,
// each prepared as a real host is: a sandbox on each host reaches the
// other over TCP, UDP and ICMP, by address and by name, whatever the
// hosts' netfilter holds. Frames cross the hosts' VXLAN devices, which
// are ports of the network's bridge: bridged, br_netfilter would hand
// them to the host's FORWARD chain (DROP on Docker, ufw and nftables
// hosts). Overlay networks are IPv4 only (createOverlay refuses
// --ipv6), so IPv4 alone is tried. The preparations that drop forwarded
// traffic run one after the other (TestOverlay is the pristine host's),
// each with a cluster, underlay and etcd of its own, all gone when its
// subtest ends: side by side, their daemons would contend for two cores
// and for the Docker plugin directory one of them removes.
func TestRealHostOverlay(t *testing.T) {
	t.Parallel()
	ufwBefore := ufwConfig(t)
	t.Cleanup(func() {
		if after := ufwConfig(t); after != ufwBefore {
			t.Errorf("the machine's ufw configuration changed during the test:\nbefore %s\nafter  %s", ufwBefore, after)
		}
	})
	for _, prep := range testbed.Preparations {
		if !prep.DropsForwarded {
			continue
		}
		t.Run(prep.Name, func(t *testing.T) { overlayOn(t, prep) })
	}
}

// overlayHosts is how many hosts the cluster of TestRealHostOverlay has.
const overlayHosts = 2

func overlayOn(t *testing.T, prep testbed.Preparation) {
	c := testbed.NewClusterWith(t, overlayHosts, func(i int, h *testbed.Host) {
		prep.Prepare(h)
		if prep.Name == "ufw" {
			allowClusterPeers(h, i)
		}
	})
	h0, h1 := c.Hosts[0], c.Hosts[1]
	ov := h0.Name("ov")
	h0.MustCLI("network", "create", "-d", "overlay", "--subnet", "10.201.0.0/24", ov)
	waitNetwork(t, h1, ov)
	s0, s1 := h0.Name("s0"), h1.Name("s1")
	h0.MustCLI("sandbox", "create", s0, "--network", ov)
	h1.MustCLI("sandbox", "create", s1, "--network", ov)
	testbed.Serve(t, h0.NS(s0))
	testbed.Serve(t, h1.NS(s1))
	ip0, ip1 := h0.IP(s0, ov), h1.IP(s1, ov)
	// Each host's DNS names the other's sandbox once the cluster's watch
	// brought it, which is also when its datapath knows where it lives:
	// the wait before any packet is sent.
	for _, w := range []struct {
		h                *testbed.Host
		from, name, want string
	}{{h0, s0, s1, ip1}, {h1, s1, s0, ip0}} {
		if got := mustResolve(t, w.h, w.from, w.name); got != w.want {
			t.Fatalf("%s, overlay: %s resolves %s to %s, want %s", prep.Name, w.from, w.name, got, w.want)
		}
	}
	expect(t, prep.Name+", overlay", true,
		overlayReach(h0, s0, "host 0's s0 to host 1's s1", ip1),
		overlayReach(h1, s1, "host 1's s1 to host 0's s0", ip0),
		[]probe{pingByName(h0, s0, s1, ip1), pingByName(h1, s1, s0, ip0)})
}

// allowClusterPeers opens a ufw host's INPUT (default deny) to what the
// other hosts of the cluster send it, as a user of a ufw host does for
// an overlay: VXLAN (4789/udp, which Docker swarm's documentation tells
// its users to allow from the other hosts) and etcd's client and peer
// ports (2379-2380/tcp, as etcd's documentation asks). `ufw allow from
// PEER to any port 4789 proto udp` writes the same rule into
// ufw-user-input, but also into /etc/ufw, so the rules go straight into
// the host namespace's chain instead. Without either rule the overlay
// does not work on a ufw host, with ebpfnet or without.
func allowClusterPeers(h *testbed.Host, i int) {
	for j := range overlayHosts {
		if j == i {
			continue
		}
		peer := testbed.UnderlayAddr(j).String()
		h.InHost("iptables", "-I", "ufw-user-input", "-p", "udp", "-s", peer, "--dport", "4789", "-j", "ACCEPT")
		h.InHost("iptables", "-I", "ufw-user-input", "-p", "tcp", "-s", peer, "-m", "multiport", "--dports", "2379,2380", "-j", "ACCEPT")
	}
}

// overlayReach is TCP, UDP and ICMP from a sandbox of h to dst, a
// sandbox on another host that serves with testbed.Serve.
func overlayReach(h *testbed.Host, from, what, dst string) []probe {
	ns := h.NS(from)
	what = fmt.Sprintf("%s (%s)", what, dst)
	return []probe{
		{what, "tcp", dst, func() error { return testbed.TCP(ns, dst) }},
		{what, "udp", dst, func() error { return testbed.UDP(ns, dst) }},
		{what, "icmp", dst, func() error { return h.Ping(from, dst) }},
	}
}

// pingByName pings a sandbox on another host by its name, which the
// sandbox's resolver asks the embedded DNS for.
func pingByName(h *testbed.Host, from, name, want string) probe {
	return probe{fmt.Sprintf("%s pings %s by name", from, name), "icmp", want, func() error {
		if out, err := h.CLI("exec", from, "--", "busybox", "ping", "-4", "-c1", "-W1", name); err != nil {
			return fmt.Errorf("ping -4 %s: %v: %s", name, err, out)
		}
		return nil
	}}
}

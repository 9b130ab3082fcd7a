package test

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// bigTCPSize is the IPv4 GSO and GRO limit of the BIG TCP tests: twice
// what IPv4's 16-bit total length can say, as Cilium's BIG TCP profile
// raises it.
const bigTCPSize = 128000

// enableBigTCP raises the IPv4 GSO and GRO limits of every veth in the
// namespace at nsPath, as a host running BIG TCP does.
func enableBigTCP(t *testing.T, nsPath string) {
	t.Helper()
	err := namespace.Do(nsPath, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() != "veth" {
				continue
			}
			if err := netlink.LinkSetGSOIPv4MaxSize(l, bigTCPSize); err != nil {
				return err
			}
			if err := netlink.LinkSetGROIPv4MaxSize(l, bigTCPSize); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raise the IPv4 GSO and GRO limits in %s: %v", nsPath, err)
	}
}

// On a host with BIG TCP for IPv4, a GSO packet bigger than 64 KiB says 0
// in its IPv4 total length. 32 MB go through a published port, through
// masquerade and from an IPv4-only sandbox to an IPv6 client, sent in
// such packets, and arrive whole with every checksum right.
func TestBigTCP(t *testing.T) {
	h, out := newPublishingHost(t)
	web, up := h.Name("web"), h.Name("up")
	h.MustCLI("sandbox", "create", web, "-p", "8080:9000")
	h.MustCLI("sandbox", "create", up)
	for _, ns := range []string{out.NS, h.NetNS, h.NS(web), h.NS(up)} {
		enableBigTCP(t, ns)
	}
	// The sandboxes send GSO packets as big as that; the host's uplink
	// segments them and sums their checksums in software, from the
	// pseudo-header sum the datapath rewrote, so the outside checks it.
	h.InHost("ethtool", "-K", "uplink0", "tx", "off")
	const size = 32 << 20
	for _, tr := range []struct {
		what, sandbox, listenNS string
		port                    int
		dialNS, dialAddr        string
		listenerSends           bool
	}{
		{"download from a published port", web, h.NS(web), 9000, out.NS, hostIP + ":8080", true},
		{"upload through masquerade", up, out.NS, 9001, h.NS(up), out.IP + ":9001", false},
		{"download by an IPv6 client of an IPv4 sandbox", web, h.NS(web), 9000, out.NS, "[" + out.HostIP6 + "]:8080", true},
	} {
		tcpBefore, _ := checksumErrors(t, out.NS)
		transfer(t, tr.what, tr.listenNS, tr.port, tr.dialNS, tr.dialAddr, tr.listenerSends, size)
		if tcpAfter, _ := checksumErrors(t, out.NS); tcpAfter != tcpBefore {
			t.Errorf("%s: the outside counted %d TCP checksum errors", tr.what, tcpAfter-tcpBefore)
		}
	}
	// How big the sandboxes' packets were as the datapath saw them.
	for _, c := range h.Status().Counters {
		if c.Program == "from_container" && c.Verdict == "tracked" && c.Packets > 0 {
			t.Logf("from_container/tracked: %d packets, %d bytes on average", c.Packets, c.Bytes/c.Packets)
		}
	}
	if n := h.Counter("drop_no_route"); n != 0 {
		t.Errorf("the datapath dropped %d packets it could not rewrite", n)
	}
}

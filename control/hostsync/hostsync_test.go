package hostsync

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// A veth holding host addresses alone is a routed container's host side
// (ptp's), no way out; one with a subnet beyond it, or a NIC, may be.
func TestRoutedContainerVeth(t *testing.T) {
	addr := func(cidr string) netlink.Addr {
		ip, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return netlink.Addr{IPNet: n}
	}
	veth, nic := &netlink.Veth{}, &netlink.Device{}
	for _, c := range []struct {
		link  netlink.Link
		addrs []netlink.Addr
		want  bool
	}{
		{veth, []netlink.Addr{addr("10.93.0.1/32"), addr("fe80::1/64")}, true},
		{veth, []netlink.Addr{addr("10.93.0.1/32"), addr("fd00::1/128")}, true},
		{veth, []netlink.Addr{addr("10.99.0.1/24")}, false},
		{veth, []netlink.Addr{addr("10.93.0.1/32"), addr("10.99.0.1/24")}, false},
		{veth, []netlink.Addr{addr("fe80::1/64")}, false},
		{veth, nil, false},
		{nic, []netlink.Addr{addr("10.93.0.1/32")}, false},
	} {
		if got := routedContainerVeth(c.link, c.addrs); got != c.want {
			t.Errorf("%s with %v: %v, want %v", c.link.Type(), c.addrs, got, c.want)
		}
	}
}

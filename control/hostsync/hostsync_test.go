package hostsync

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// A host of a thousand sandboxes changes its interfaces faster than the
// watch applies them while it reads the whole host: the kernel must keep
// a burst of changes for the watch rather than drop them (ENOBUFS), after
// which the whole host is read again, and again, under churn.
func TestWatchHoldsABurstWhileBusy(t *testing.T) {
	name := fmt.Sprintf("hostsync-burst-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "burst0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	w, err := subscribe(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	// Nobody reads the subscription meanwhile, as while the watch reads
	// the whole host: a sandbox's create or remove is a few changes.
	const changes = 2000
	for i := range changes {
		if err := h.LinkSetMTU(br, 1400+i%2); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := w.lost.Load(); err != nil {
		t.Fatalf("the watch lost changes after a burst of %d: %v", changes, *err)
	}
	got := 0
	for deadline := time.After(10 * time.Second); got < changes; {
		select {
		case <-w.links:
			got++
		case <-w.addrs:
		case <-deadline:
			t.Fatalf("the watch got %d of %d changes", got, changes)
		}
	}
}

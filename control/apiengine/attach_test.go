package apiengine

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/pools"
)

// TestChainedCannotTakeAnotherEndpointsVeth: a chained ADD whose prevResult names
// the host side of an attachment of an ebpfnet network moves that veth
// into the chained network, and its DEL strips the victim's datapath.
func TestChainedCannotTakeAnotherEndpointsVeth(t *testing.T) {
	te := newTestEngine(t)
	a := te.RuntimeEngine
	if _, err := te.e.CreateNetwork(engine.NetworkSpec{Name: te.name("net"), IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.96.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	ns := containerNS(t, te, "v")
	v, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "victim", IfName: "eth0", NetNS: ns, Network: te.name("net")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Detach(ctx, api.AttachmentRef{ContainerID: "victim", IfName: "eth0"})
	br := te.prefix + "b"
	te.inHost(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = br
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la})
	})
	t.Cleanup(func() { te.inHost(func() error { l, _ := netlink.LinkByName(br); return netlink.LinkDel(l) }) })

	_, err = a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "thief", IfName: "eth0", NetNS: "/run/thief", Network: "cni-chain",
		Chained: &api.ChainedAttachment{Bridge: br, HostInterface: v.HostInterface, Address: netip.MustParsePrefix("10.94.0.3/24"), Gateway: netip.MustParseAddr("10.94.0.1")}})
	if err == nil {
		t.Errorf("a chained attachment took host side %s of the ebpfnet attachment victim", v.HostInterface)
		a.Detach(ctx, api.AttachmentRef{ContainerID: "thief", IfName: "eth0"})
	}
	if _, err := os.Stat(filepath.Join(te.cfg.BPFFS, "links", v.HostInterface)); err != nil {
		t.Errorf("the victim's host side %s lost its programs: %v", v.HostInterface, err)
	}
	if err := a.CheckAttachment(ctx, api.AttachmentRef{ContainerID: "victim", IfName: "eth0"}, ns); err != nil {
		t.Errorf("CHECK of the victim: %v", err)
	}
}

// TestAttachmentsAreDistinct: attachments of ebpfnet networks from CNI.
func TestAttachmentsAreDistinct(t *testing.T) {
	te := newTestEngine(t)
	a := te.RuntimeEngine
	net := te.name("net")
	if _, err := te.e.CreateNetwork(engine.NetworkSpec{Name: net, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.96.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	attach := func(cid, ifname, mac string) error {
		_, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: cid, IfName: ifname, NetNS: containerNS(t, te, cid), Network: net, MAC: mac})
		if err == nil {
			t.Cleanup(func() { a.Detach(ctx, api.AttachmentRef{ContainerID: cid, IfName: ifname}) })
		}
		return err
	}

	t.Run("GCKeepsOtherCNINetworks", func(t *testing.T) {
		// Two conflists, "a" and "b", both with "network": net. libcni's
		// GC of "a" passes only "a"'s attachments as valid.
		for _, c := range []struct{ cid, group string }{{"ca", "a"}, {"cb", "b"}} {
			_, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: c.cid, IfName: "eth0", NetNS: containerNS(t, te, c.cid), Network: net, Group: c.group})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Detach(ctx, api.AttachmentRef{ContainerID: c.cid, IfName: "eth0"}) })
		}
		gone, err := a.CollectAttachments(ctx, api.AttachmentsCollect{Frontend: "cni", Network: net, Group: "a", Keep: []api.AttachmentRef{{ContainerID: "ca", IfName: "eth0"}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(gone) != 0 {
			t.Errorf("GC of conflist a collected %v, attached through conflist b", gone)
		}
	})

	t.Run("DuplicateMAC", func(t *testing.T) {
		if err := attach("m1", "eth0", "02:00:00:00:00:42"); err != nil {
			t.Fatal(err)
		}
		if err := attach("m2", "eth0", "02:00:00:00:00:42"); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("a second attachment with m1's MAC 02:00:00:00:00:42 on the same network: %v, want a conflict", err)
		}
	})

	t.Run("SandboxNameCollision", func(t *testing.T) {
		// Two different containers: CNI allows '.' in container IDs, and
		// Linux in interface names.
		if err := attach("k1", "x.eth0", ""); err != nil {
			t.Fatal(err)
		}
		if err := attach("k1.x", "eth0", ""); err != nil {
			t.Errorf("container k1.x's ADD failed because of container k1's interface x.eth0: %v", err)
		}
	})

	t.Run("SecondNetworkRoute", func(t *testing.T) {
		// Podman: one container on two networks. The plugin reports a
		// default route via each attachment's Gateway (resultOf).
		net2 := te.name("net2")
		if _, err := te.e.CreateNetwork(engine.NetworkSpec{Name: net2, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.95.0.0/24")}}); err != nil {
			t.Fatal(err)
		}
		ns := containerNS(t, te, "two")
		for i, n := range []string{net, net2} {
			ifname := []string{"eth0", "eth1"}[i]
			v, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "two", IfName: ifname, NetNS: ns, Network: n})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Detach(ctx, api.AttachmentRef{ContainerID: "two", IfName: ifname}) })
			if via := defaultRoutes(t, ns, netlink.FAMILY_V4); slices.Contains(via, v.Gateway) != (i == 0) {
				t.Errorf("after %s's attachment (gateway %s) the namespace's default routes are via %v: want the first network's only", ifname, v.Gateway, via)
			}
		}
	})

	t.Run("IPv6OfTheRuntimesNamespace", func(t *testing.T) {
		ns := containerNS(t, te, "v6")
		var before, after []netlink.Addr
		namespace.Do(ns, func() error {
			lo, _ := netlink.LinkByName("lo")
			netlink.LinkSetUp(lo)
			before, _ = netlink.AddrList(lo, netlink.FAMILY_V6)
			return nil
		})
		if _, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "v6", IfName: "eth0", NetNS: ns, Network: net}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Detach(ctx, api.AttachmentRef{ContainerID: "v6", IfName: "eth0"}) })
		namespace.Do(ns, func() error {
			lo, _ := netlink.LinkByName("lo")
			after, _ = netlink.AddrList(lo, netlink.FAMILY_V6)
			return nil
		})
		if len(before) > 0 && len(after) == 0 {
			t.Errorf("ADD turned IPv6 off in the whole namespace the runtime owns: lo had %v, now nothing", before)
		}
	})
}

// A CNI attachment on a dual-stack network: an address of each family
// (ips capability: either, or both), gateways and default routes, IPv6 on
// the attachment's interface alone, and both addresses free again on DEL.
func TestAttachmentDualStack(t *testing.T) {
	te := newTestEngine(t)
	a := te.RuntimeEngine
	yes := true
	if _, err := te.e.CreateNetwork(engine.NetworkSpec{Name: te.name("dual"), EnableIPv6: &yes,
		IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.93.0.0/24")}, IPv6: pools.Spec{Subnet: netip.MustParsePrefix("fd00:93::/64")}}); err != nil {
		t.Fatal(err)
	}
	ns := containerNS(t, te, "d")
	ref := api.AttachmentRef{ContainerID: "dual", IfName: "eth0"}
	req := api.AttachmentCreate{Frontend: "cni", ContainerID: ref.ContainerID, IfName: ref.IfName, NetNS: ns, Network: te.name("dual"), IP6: netip.MustParseAddr("fd00:93::9")}
	att, err := a.Attach(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if att.Address != "10.93.0.2/24" || att.AddressIPv6 != "fd00:93::9/64" || att.GatewayIPv6 != "fd00:93::1" {
		t.Fatalf("attachment: %+v", att)
	}
	if via, via6 := defaultRoutes(t, ns, netlink.FAMILY_V4), defaultRoutes(t, ns, netlink.FAMILY_V6); !slices.Equal(via, []string{att.Gateway}) || !slices.Equal(via6, []string{att.GatewayIPv6}) {
		t.Errorf("default routes via %v and %v, want via the gateways %s and %s", via, via6, att.Gateway, att.GatewayIPv6)
	}
	err = namespace.Do(ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == "fd00:93::9/64" }) {
			t.Errorf("eth0 IPv6 addresses: %v", addrs)
		}
		lo, _ := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
		if strings.TrimSpace(string(lo)) != "0" {
			t.Errorf("ADD changed IPv6 of lo in the runtime's namespace: disable_ipv6=%s", lo)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attach(ctx, req); err != nil {
		t.Fatalf("the IPv6 address was not released on DEL: %v", err)
	}
	a.Detach(ctx, ref)
	req.IP6 = netip.MustParseAddr("10.93.0.7")
	if _, err := a.Attach(ctx, req); err == nil || !strings.Contains(err.Error(), `invalid address "10.93.0.7": want an IPv6 address`) {
		t.Errorf("an IPv4 address as IP6: %v", err)
	}
}

// An internal network leads nowhere: an attachment to one gets no gateway
// and no default route of either family, and CHECK asks for none.
func TestAttachmentInternal(t *testing.T) {
	te := newTestEngine(t)
	a := te.RuntimeEngine
	yes := true
	if _, err := te.e.CreateNetwork(engine.NetworkSpec{Name: te.name("int"), EnableIPv6: &yes, Internal: true,
		IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.95.0.0/24")}, IPv6: pools.Spec{Subnet: netip.MustParsePrefix("fd00:95::/64")}}); err != nil {
		t.Fatal(err)
	}
	ns := containerNS(t, te, "i")
	ref := api.AttachmentRef{ContainerID: "internal", IfName: "eth0"}
	att, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: ref.ContainerID, IfName: ref.IfName, NetNS: ns, Network: te.name("int")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Detach(ctx, ref)
	if att.AddressIPv6 == "" || att.Gateway != "" || att.GatewayIPv6 != "" {
		t.Fatalf("attachment: %+v", att)
	}
	if via, via6 := defaultRoutes(t, ns, netlink.FAMILY_V4), defaultRoutes(t, ns, netlink.FAMILY_V6); len(via)+len(via6) != 0 {
		t.Errorf("default routes via %v and %v on an internal network", via, via6)
	}
	if err := a.CheckAttachment(ctx, ref, ns); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

// defaultRoutes are the gateways the namespace at ns routes family by
// default through.
func defaultRoutes(t *testing.T, ns string, family int) []string {
	t.Helper()
	var via []string
	err := namespace.Do(ns, func() error {
		rs, err := netlink.RouteList(nil, family)
		for _, r := range rs {
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			if ones == 0 {
				via = append(via, r.Gw.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return via
}

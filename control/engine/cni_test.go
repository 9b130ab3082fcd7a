package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/external"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// containerNS makes a bare network namespace standing for a container.
func containerNS(t *testing.T, te testEngine, name string) string {
	return testenv.ContainerNamespace(t, te.name(name))
}

// hostVeth makes a veth pair in the engine's host namespace, its first
// end on bridge br when br is not "".
func (te testEngine) hostVeth(t *testing.T, name, peer, br string) {
	t.Helper()
	err := te.inHost(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if br != "" {
			b, err := netlink.LinkByName(br)
			if err != nil {
				return err
			}
			la.MasterIndex = b.Attrs().Index
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer}); err != nil {
			return err
		}
		l, _ := netlink.LinkByName(name)
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		te.inHost(func() error {
			l, err := netlink.LinkByName(name)
			if err == nil {
				netlink.LinkDel(l)
			}
			return nil
		})
	})
}

// attachmentID is the endpoint ID of container cid's attachment.
func attachmentID(cid string) string {
	sum := sha256.Sum256([]byte(cid))
	return hex.EncodeToString(sum[:])
}

// attachment is a CNI attachment of container cid's eth0 to network, as
// the API asks for it.
func attachment(cid, network string) external.Request {
	return external.Request{Frontend: "cni", ID: attachmentID(cid), Name: cid + ":eth0", Network: network, Interface: "eth0"}
}

// chainedReq is what the plugin asks for a container the bridge plugin
// attached (package apiengine's Attach, chained branch).
func chainedReq(cid, hostSide, br, addr string) external.Request {
	return external.Request{Frontend: "cni", ID: attachmentID(cid), Name: cid + ".eth0", Network: "cni-chain",
		Addr: netip.MustParseAddr(addr), HostSide: hostSide, HandOver: true, Interface: "eth0",
		Chained: &external.ChainedNetwork{Bridge: br, Subnet: netip.MustParsePrefix("10.94.0.0/24"), Gateway: netip.MustParseAddr("10.94.0.1")}}
}

// TestChainedHostSideIsChecked: a chained ADD names the host side of
// its veth in prevResult, and the engine takes it on trust: another
// attachment's veth, one on no bridge, the gateway's address.
func TestChainedHostSideIsChecked(t *testing.T) {
	te := newTestEngine(t)
	br := te.prefix + "b"
	if err := te.inHost(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = br
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { te.inHost(func() error { l, _ := netlink.LinkByName(br); return netlink.LinkDel(l) }) })
	vA, vB, vC := te.prefix+"a", te.prefix+"B", te.prefix+"c"
	te.hostVeth(t, vA, vA+"p", br)
	te.hostVeth(t, vB, vB+"p", br)
	te.hostVeth(t, vC, vC+"p", "") // on no bridge
	pinned := func(ifname string) bool {
		_, err := os.Stat(filepath.Join(te.cfg.BPFFS, "links", ifname))
		return err == nil
	}

	if _, _, _, err := te.External().Attach(chainedReq("victim", vA, br, "10.94.0.2"), "/run/victim", nil, ports.Sources{}, false); err != nil {
		t.Fatal(err)
	}
	if !pinned(vA) {
		t.Fatalf("no programs pinned for the victim's host side %s", vA)
	}
	// Its own veth is vB, but its prevResult names the victim's vA.
	_, _, _, err := te.External().Attach(chainedReq("thief", vA, br, "10.94.0.3"), "/run/thief", nil, ports.Sources{}, false)
	if err == nil {
		t.Errorf("a second attachment took host side %s, which attachment victim holds", vA)
	}
	if err := te.External().DeleteEndpoint(attachmentID("thief")); err != nil {
		t.Fatal(err)
	}
	if !pinned(vA) {
		t.Errorf("DEL of the thief removed the victim's programs from %s", vA)
	}

	if _, _, _, err := te.External().Attach(chainedReq("offbridge", vC, br, "10.94.0.4"), "/run/off", nil, ports.Sources{}, false); err == nil {
		t.Errorf("a host side %s on no bridge was accepted for bridge %s", vC, br)
		te.External().DeleteEndpoint(attachmentID("offbridge"))
	}
	if _, _, _, err := te.External().Attach(chainedReq("gw", vB, br, "10.94.0.1"), "/run/gw", nil, ports.Sources{}, false); err == nil {
		t.Errorf("the chained network's gateway 10.94.0.1 was taken as a container's address")
		te.External().DeleteEndpoint(attachmentID("gw"))
	}
	te.External().DeleteEndpoint(attachmentID("victim"))
}

// A failed chained ADD leaves nothing, and a chained subnet may not
// overlap an ebpfnet network's.
func TestFailedChainedAttachLeavesNothing(t *testing.T) {
	te := newTestEngine(t)
	before := te.snapshot(t)
	if _, _, _, err := te.External().Attach(chainedReq("gone", te.prefix+"none", "nobr", "10.94.0.2"), "/run/gone", nil, ports.Sources{}, false); err == nil {
		t.Fatal("a chained ADD with a missing host side succeeded")
	}
	if after := te.snapshot(t); after != before {
		t.Errorf("a failed chained ADD left state:\n%s\n%s", before, after)
	}
	if _, err := te.CreateNetwork(NetworkSpec{Name: te.name("net"), IPv4: pools.Spec{Subnet: netip.MustParsePrefix("10.94.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := te.External().Attach(chainedReq("ov", te.prefix+"none", "nobr", "10.94.0.2"), "/run/ov", nil, ports.Sources{}, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("a chained subnet inside an ebpfnet network's: %v, want a conflict", err)
	}
}

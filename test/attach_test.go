package test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// attachForeign attaches, as another tool would, a TC program that
// returns TC_ACT_OK: it ends the TCX chain, so whatever runs after it
// never sees the packet. anchor nil appends it at the tail.
func attachForeign(t *testing.T, netns, ifname string, attach ebpf.AttachType, name string, anchor link.Anchor) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	err = namespace.Do(netns, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		tcx, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: prog, Attach: attach, Anchor: anchor})
		if err != nil {
			return err
		}
		t.Cleanup(func() { tcx.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach %s to %s: %v", name, ifname, err)
	}
}

// tcxOrder names the programs on a TCX hook in the order they run.
func tcxOrder(t *testing.T, netns, ifname string, attach ebpf.AttachType) []string {
	t.Helper()
	var names []string
	err := namespace.Do(netns, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: attach})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			prog, err := ebpf.NewProgramFromID(p.ID)
			if err != nil {
				return err
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil {
				return err
			}
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("query tcx programs of %s: %v", ifname, err)
	}
	return names
}

func expectOrder(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: programs run in order %v, want %v", what, got, want)
	}
}

// iface finds an interface in the status.
func iface(t *testing.T, st api.Status, name string) api.AttachedIface {
	t.Helper()
	for _, i := range slices.Concat(st.Endpoints, st.Uplinks) {
		if i.Interface == name {
			return i
		}
	}
	t.Fatalf("status does not list %s: %+v", name, st)
	return api.AttachedIface{}
}

// expectOthers checks the programs status names beside ebpfnet's on an
// interface's ingress, as name → runs before ebpfnet's.
func expectOthers(t *testing.T, h *testbed.Host, ifname string, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	for _, o := range iface(t, h.Status(), ifname).Others {
		if o.Direction != "ingress" || o.Hook != "tcx" || o.ID == 0 {
			t.Errorf("%s: unexpected other program %+v", ifname, o)
		}
		got[o.Name] = o.Before
	}
	if len(got) != len(want) {
		t.Fatalf("%s: status names other programs %v, want %v", ifname, got, want)
	}
	for name, before := range want {
		if b, ok := got[name]; !ok || b != before {
			t.Fatalf("%s: status names other programs %v, want %v", ifname, got, want)
		}
	}
}

func TestTCXProgramsAttachFirst(t *testing.T) {
	t.Parallel()
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		// Another tool was there first.
		attachForeign(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress, "early_ok", nil)
	})
	testbed.Serve(t, out.NS)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	testbed.Serve(t, h.NS(web))
	veth := h.Sandbox(web).NetworkSettings.Networks["bridge"].HostInterface

	expectOrder(t, "uplink0 ingress", tcxOrder(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress), "uplink_ingress", "early_ok")
	mustWork(t, "published port with a TC_ACT_OK program behind ebpfnet's", testbed.TCPTo(out.NS, hostIP+":8080"))
	expectOthers(t, h, "uplink0", map[string]bool{"early_ok": false})
	if status := h.MustCLI("status"); !strings.Contains(status, "uplink0 ingress: early_ok (id ") ||
		!strings.Contains(status, "tcx) runs after ebpfnet's program") {
		t.Errorf("status does not name the program after ebpfnet's:\n%s", status)
	}

	// Programs pushed ahead of ebpfnet's pinned links while no daemon
	// runs take their packets...
	h.Stop(syscall.SIGTERM)
	attachForeign(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress, "late_ok", link.Head())
	attachForeign(t, h.NetNS, veth, ebpf.AttachTCXIngress, "late_ok", link.Head())
	expectOrder(t, "uplink0 ingress", tcxOrder(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress), "late_ok", "uplink_ingress", "early_ok")
	mustFail(t, "published port behind a TC_ACT_OK program", testbed.TCPTo(out.NS, hostIP+":8080"))

	// ...until a daemon starts and moves its links back to the head.
	h.Start()
	expectOrder(t, "uplink0 ingress after restart", tcxOrder(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress), "uplink_ingress", "late_ok", "early_ok")
	expectOrder(t, veth+" ingress after restart", tcxOrder(t, h.NetNS, veth, ebpf.AttachTCXIngress), "from_container", "late_ok")
	expectOrder(t, veth+" egress after restart", tcxOrder(t, h.NetNS, veth, ebpf.AttachTCXEgress), "to_container")
	expectOthers(t, h, "uplink0", map[string]bool{"late_ok": false, "early_ok": false})
	expectOthers(t, h, veth, map[string]bool{"late_ok": false})
	mustWork(t, "published port after restart", testbed.TCPTo(out.NS, hostIP+":8080"))
	h.MustReach(web, out.IP)

	// The running daemon does the same whenever it re-attaches the uplink
	// program (on any interface or address change), although its link
	// then already runs this binary's program.
	attachForeign(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress, "later_ok", link.Head())
	h.InHost("ip", "addr", "add", "10.99.0.9/24", "dev", "uplink0")
	deadline := time.Now().Add(5 * time.Second)
	for order := []string{}; ; time.Sleep(50 * time.Millisecond) {
		if order = tcxOrder(t, h.NetNS, "uplink0", ebpf.AttachTCXIngress); order[0] == "uplink_ingress" {
			expectOrder(t, "uplink0 ingress after an address change", order, "uplink_ingress", "later_ok", "late_ok", "early_ok")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ebpfnet's uplink program is not first again: %v", order)
		}
	}
	mustWork(t, "published port after the daemon moved its link", testbed.TCPTo(out.NS, hostIP+":8080"))
	// The new link is first before it is pinned: wait for the pin.
	for {
		pins, _ := filepath.Glob(filepath.Join(h.BPFFS(), "links", "uplink0", "*"))
		if len(pins) == 2 && filepath.Base(pins[0]) == "egress" && filepath.Base(pins[1]) == "ingress" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink0 link pins: %v, want egress and ingress", pins)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(h.BPFFS(), "links", veth, "egress")); err != nil {
		t.Fatalf("the endpoint's egress link lost its pin: %v", err)
	}
	checkHostSettings(t, h)
}

// checkHostSettings prepares the host namespace as Docker does (FORWARD
// DROP for IPv4, br_netfilter calling iptables) with values the machine's
// own namespace does not have, and checks that status reads them from
// the host namespace and says ebpfnet does not depend on them.
func checkHostSettings(t *testing.T, h *testbed.Host) {
	t.Helper()
	h.InHost("iptables", "-P", "FORWARD", "DROP")
	h.InHost("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=0",
		"net.bridge.bridge-nf-call-arptables=0", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=2")
	hs := h.Status().Host
	if hs.Forward.IPv4 != "drop" || hs.Forward.IPv6 != "none" {
		t.Errorf("status: FORWARD policy IPv4 %s, IPv6 %s; want drop, none (%+v)", hs.Forward.IPv4, hs.Forward.IPv6, hs)
	}
	want := api.BridgeNetfilter{Active: true, CallIPTables: true}
	if hs.BridgeNetfilter != want {
		t.Errorf("status: br_netfilter %+v, want %+v", hs.BridgeNetfilter, want)
	}
	if hs.RPFilter != (api.RPFilter{All: 1, Default: 2}) || !hs.Conntrack.Active || hs.Conntrack.Max == 0 || len(hs.Unread) != 0 {
		t.Errorf("status: host settings %+v, want rp_filter all=1 default=2 and conntrack's fill", hs)
	}
	status := h.MustCLI("status")
	for _, line := range []string{
		"  FORWARD policy: IPv4 DROP, IPv6 none",
		"    ip filter FORWARD: DROP (nftables)",
		"  br_netfilter:   active, bridge-nf-call-iptables=1 bridge-nf-call-ip6tables=0 bridge-nf-call-arptables=0",
	} {
		if !slices.Contains(strings.Split(status, "\n"), line) {
			t.Errorf("status does not say %q:\n%s", line, status)
		}
	}
	if !strings.Contains(status, "ebpfnet does not depend on these settings") {
		t.Errorf("status does not say ebpfnet does not depend on the host's settings:\n%s", status)
	}
}

package test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// uplinkXDP reports whether status shows the XDP fast path on uplink0.
func uplinkXDP(t *testing.T, h *testbed.Host) bool {
	t.Helper()
	for _, u := range h.Status().Uplinks {
		if u.Interface == "uplink0" {
			return u.XDP
		}
	}
	t.Fatalf("uplink0 is no uplink: %+v", h.Status().Uplinks)
	return false
}

// checksumOffload turns the outside client's transmit checksum offload on
// or off. Off, its frames carry complete checksums, as frames from a wire
// do; on, it leaves TCP's and UDP's to be finished on the way, as a local
// stack does over a veth.
func checksumOffload(t *testing.T, h *testbed.Host, out testbed.Outside, on bool) {
	t.Helper()
	state := map[bool]string{true: "on", false: "off"}[on]
	h.MustRun("ip", "netns", "exec", filepath.Base(out.NS), "ethtool", "-K", "eth0", "tx", state)
}

// With --uplink-mode xdp, published flows (IPv4 and IPv6, TCP and UDP,
// bulk included) and the replies of masqueraded ones go from the uplink's
// XDP program straight into the sandbox, and still work when the sender
// leaves checksums to offload (XDP passes those to TC). Packets to a
// published port from a martian source are dropped on XDP.
func TestXDPUplink(t *testing.T) {
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		checksumOffload(t, h, out, false)
	}, "--uplink-mode", "xdp")
	if !uplinkXDP(t, h) {
		t.Fatal("status shows no XDP on uplink0")
	}
	netName, web := h.Name("net"), h.Name("web")
	h.MustCLI("network", "create", "--ipv6", netName)
	h.MustCLI("sandbox", "create", web, "--network", netName, "-p", "8080:7777", "-p", "8080:7777/udp", "-p", "8081:7000")
	testbed.ServeOn(t, h.NS(web), 7777)
	testbed.Serve(t, out.NS)

	dnat := h.ProgramCounter("uplink_xdp", "dnat")
	mustWork(t, "tcp from outside", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "udp from outside", testbed.UDPTo(out.NS, hostIP+":8080"))
	mustWork(t, "tcp over IPv6 from outside", testbed.TCPTo(out.NS, "["+out.HostIP6+"]:8080"))
	mustWork(t, "udp over IPv6 from outside", testbed.UDPTo(out.NS, "["+out.HostIP6+"]:8080"))
	if n := h.ProgramCounter("uplink_xdp", "dnat") - dnat; n < 4 {
		t.Fatalf("XDP translated %d new flows, want the 4", n)
	}
	tracked := h.ProgramCounter("uplink_xdp", "tracked")
	transfer(t, "16 MB to a published port", h.NS(web), 7000, out.NS, hostIP+":8081", false, 16<<20)
	transfer(t, "16 MB down a masqueraded connection", out.NS, 7001, h.NS(web), out.IP+":7001", true, 16<<20)
	if n := h.ProgramCounter("uplink_xdp", "tracked") - tracked; n < 2*(16<<20)/1500 {
		t.Fatalf("XDP delivered %d packets of the two transfers, want all of them", n)
	}

	// Forged sources no neighbour has never reach the sandbox.
	uplinkMAC := h.MAC("uplink0")
	martian := h.ProgramCounter("uplink_xdp", "drop_martian_source")
	for _, src := range []string{"127.0.0.1", "0.0.0.0", "224.0.0.5", hostIP} {
		must(t, testbed.ForgedSYNs(out.NS, "eth0", uplinkMAC, netip.MustParseAddr(src), netip.MustParseAddrPort(hostIP+":8080"), 100))
	}
	if n := h.ProgramCounter("uplink_xdp", "drop_martian_source") - martian; n != 400 {
		t.Errorf("XDP dropped %d SYNs from martian sources, want 400", n)
	}

	// Checksums left to offload: XDP cannot finish them, TC does.
	checksumOffload(t, h, out, true)
	passed := h.ProgramCounter("uplink_xdp", "pass")
	mustWork(t, "tcp from outside, checksums offloaded", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "udp from outside, checksums offloaded", testbed.UDPTo(out.NS, hostIP+":8080"))
	transfer(t, "16 MB to a published port, checksums offloaded", h.NS(web), 7000, out.NS, hostIP+":8081", false, 16<<20)
	if n := h.ProgramCounter("uplink_xdp", "pass") - passed; n < 100 {
		t.Errorf("XDP passed %d packets to TC, want the offloaded ones", n)
	}
}

// uplinkMode is what status says of an uplink's datapath, and why.
func uplinkMode(t *testing.T, h *testbed.Host, ifname string) (mode, reason string) {
	t.Helper()
	for _, u := range h.Status().Uplinks {
		if u.Interface == ifname {
			return u.Mode, u.ModeReason
		}
	}
	t.Fatalf("%s is no uplink: %+v", ifname, h.Status().Uplinks)
	return "", ""
}

// The uplink mode is the daemon's to choose at each start, for every
// uplink or one by name: auto takes native XDP only where the driver keeps
// its offloads under it (a veth does not: its peer loses TSO) and status
// says why, xdp takes it wherever asked, tc removes an XDP link a previous
// daemon left, and a mode of no such name is refused.
func TestUplinkModes(t *testing.T) {
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		h.AddOutside()
		host := filepath.Base(h.NetNS)
		h.MustRun("ip", "-n", host, "link", "add", "uplink1", "type", "veth", "peer", "name", "peer1")
		h.MustRun("ip", "-n", host, "addr", "add", "10.97.0.1/24", "dev", "uplink1")
		h.MustRun("ip", "-n", host, "link", "set", "peer1", "up")
		h.MustRun("ip", "-n", host, "link", "set", "uplink1", "up")
	}, "--uplink-mode", "auto")
	for _, ifname := range []string{"uplink0", "uplink1"} {
		mode, reason := uplinkMode(t, h, ifname)
		if mode != "tc" || reason != "auto: veth loses TSO under XDP" {
			t.Fatalf("auto mode on veth %s: %s (%s), want tc (auto: veth loses TSO under XDP)", ifname, mode, reason)
		}
	}
	if uplinkXDP(t, h) {
		t.Fatal("auto mode on a veth: XDP on uplink0")
	}
	if out := h.MustCLI("status"); !strings.Contains(out, "uplink0: tc (auto: veth loses TSO under XDP)") {
		t.Fatalf("status does not say why uplink0 is on tc:\n%s", out)
	}
	if link := h.InHost("ip", "link", "show", "uplink0"); strings.Contains(link, "xdp") {
		t.Fatalf("auto mode on a veth: an XDP program on uplink0:\n%s", link)
	}

	// Asked for by name, XDP is there whatever the driver.
	h.Stop(syscall.SIGTERM)
	h.DaemonFlags("--uplink-mode", "auto", "--uplink-mode", "uplink0=xdp")
	h.Start()
	if !uplinkXDP(t, h) {
		t.Fatal("uplink0=xdp: no XDP on uplink0")
	}
	if mode, reason := uplinkMode(t, h, "uplink0"); mode != "xdp" || reason != "asked for" {
		t.Fatalf("uplink0=xdp: status says %s (%s), want xdp (asked for)", mode, reason)
	}
	if mode, _ := uplinkMode(t, h, "uplink1"); mode != "tc" {
		t.Fatalf("uplink0=xdp with auto: uplink1 is on %s, want tc", mode)
	}
	pin := filepath.Join(h.BPFFS(), "links", "uplink0", "xdp")
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("the XDP link is not pinned: %v", err)
	}
	h.Stop(syscall.SIGKILL)
	// The pinned link keeps the fast path while the daemon is down.
	if link := h.InHost("ip", "link", "show", "uplink0"); !strings.Contains(link, "xdp") {
		t.Fatalf("the XDP program left with the daemon:\n%s", link)
	}
	// XDP elsewhere, but not on uplink0.
	h.DaemonFlags("--uplink-mode", "xdp", "--uplink-mode", "uplink0=tc")
	h.Start()
	if uplinkXDP(t, h) {
		t.Fatal("uplink0=tc: XDP still on uplink0")
	}
	if _, err := os.Stat(pin); err == nil {
		t.Fatal("uplink0=tc: the XDP link is still pinned")
	}
	if link := h.InHost("ip", "link", "show", "uplink0"); strings.Contains(link, "xdp") {
		t.Fatalf("uplink0=tc: an XDP program is still on uplink0:\n%s", link)
	}
	if mode, reason := uplinkMode(t, h, "uplink1"); mode != "xdp" || reason != "asked for" {
		t.Fatalf("xdp on a veth: uplink1 is on %s (%s), want xdp (asked for)", mode, reason)
	}
	h.Stop(syscall.SIGTERM)
	h.DaemonFlags("--uplink-mode", "fast")
	if msg := h.StartFails(); !strings.Contains(msg, `invalid uplink mode "fast"`) {
		t.Fatalf("a bad mode was refused with %q, want it named", msg)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// addTun makes a tun device with an address in the host namespace: an
// interface without an Ethernet header, like WireGuard's.
func addTun(t *testing.T, h *testbed.Host, name, addr string) {
	t.Helper()
	host := filepath.Base(h.NetNS)
	h.MustRun("ip", "-n", host, "tuntap", "add", "dev", name, "mode", "tun")
	t.Cleanup(func() { h.MustRun("ip", "-n", host, "link", "del", name) })
	h.MustRun("ip", "-n", host, "addr", "add", addr, "dev", name)
	h.MustRun("ip", "-n", host, "link", "set", name, "up")
}

func uplinkNames(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	var names []string
	for _, u := range h.Status().Uplinks {
		names = append(names, u.Interface)
	}
	return names
}

// waitForLog waits until the daemon's log says s.
func waitForLog(t *testing.T, h *testbed.Host, s string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(h.DaemonLog(), s); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged %q:\n%s", s, h.DaemonLog())
		}
	}
}

func TestUplinksNeedAnEthernetHeader(t *testing.T) {
	t.Parallel()
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		addTun(t, h, "tun0", "10.98.0.1/24")
	})
	testbed.Serve(t, out.NS)

	// Found by itself: skipped, and said so once.
	const skipped = `msg="skip uplink" reason="uplink tun0 has no Ethernet header (encap none): not supported"`
	if names := uplinkNames(t, h); strings.Join(names, " ") != "uplink0" {
		t.Fatalf("uplinks %v, want uplink0 alone", names)
	}
	if order := tcxOrder(t, h.NetNS, "tun0", ebpf.AttachTCXIngress); len(order) != 0 {
		t.Fatalf("programs on tun0: %v", order)
	}
	if _, err := os.Stat(filepath.Join(h.BPFFS(), "links", "tun0")); err == nil {
		t.Fatal("a link is pinned for tun0")
	}
	waitForLog(t, h, skipped)
	// Later syncs of the host's interfaces (a new address, a new
	// endpoint) say nothing new.
	addrs := mapEntries(t, h)["host_addrs"]
	h.InHost("ip", "addr", "add", "10.98.0.7/24", "dev", "tun0")
	// What the watch holds of the burst it reads first: a loaded host
	// takes seconds.
	for deadline := time.Now().Add(20 * time.Second); mapEntries(t, h)["host_addrs"] == addrs; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not pick up the new address: %v", mapEntries(t, h))
		}
	}
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	testbed.Serve(t, h.NS(web))
	mustWork(t, "a published port on the Ethernet uplink next to it", testbed.TCPTo(out.NS, hostIP+":8080"))
	if n := strings.Count(h.DaemonLog(), skipped); n != 1 {
		t.Fatalf("logged the skipped uplink %d times, want once:\n%s", n, h.DaemonLog())
	}

	// Named by the user: the daemon refuses to start.
	h.Stop(syscall.SIGTERM)
	h.DaemonFlags("--uplink", "tun0")
	if msg := h.StartFails(); !strings.Contains(msg, "uplink tun0 has no Ethernet header (encap none): not supported") {
		t.Fatalf("the daemon refused to start without naming the reason:\n%s", msg)
	}

	// Named, and appearing while the daemon runs: refused, in one line.
	h.DaemonFlags("--uplink", "uplink0", "--uplink", "tun1")
	h.Start()
	addTun(t, h, "tun1", "10.97.0.1/24")
	waitForLog(t, h, `level=ERROR msg="refuse uplink" err="uplink tun1 has no Ethernet header (encap none): not supported"`)
	if names := uplinkNames(t, h); strings.Join(names, " ") != "uplink0" {
		t.Fatalf("uplinks %v, want uplink0 alone", names)
	}
	if order := tcxOrder(t, h.NetNS, "tun1", ebpf.AttachTCXIngress); len(order) != 0 {
		t.Fatalf("programs on tun1: %v", order)
	}
}

// The host watch keeps up with a burst of host changes (3,000 address
// adds and removes and MTU changes in one ip -batch), and when the kernel
// ends its subscription in the middle (a socket overflowed: ENOBUFS, made
// to happen at the 1,000th change by a failpoint), it subscribes again,
// reads the whole host for what it missed, and follows the host's
// addresses from then on.
func TestHostWatchSurvivesABurst(t *testing.T) {
	t.Parallel()
	points := filepath.Join(t.TempDir(), "points")
	h := testbed.NewHostWith(t, func(h *testbed.Host) { h.Failpoints("EBPFNET_FAILPOINTS_FILE=" + points) })
	host := filepath.Base(h.NetNS)
	h.MustRun("ip", "-n", host, "link", "add", "burst0", "type", "bridge")
	t.Cleanup(func() { h.MustRun("ip", "-n", host, "link", "del", "burst0") })
	h.MustRun("ip", "-n", host, "link", "set", "burst0", "up")

	var batch strings.Builder
	const changes = 3000
	for i := range changes {
		addr := fmt.Sprintf("10.199.%d.%d/32", i/250, 1+i%250)
		fmt.Fprintf(&batch, "address add %s dev burst0\nlink set burst0 mtu %d\naddress del %s dev burst0\n", addr, 1400+i%2, addr)
	}
	file := filepath.Join(t.TempDir(), "burst")
	must(t, os.WriteFile(file, []byte(batch.String()), 0o644))
	must(t, os.WriteFile(points, []byte("hostsync.watch@1000=ENOBUFS"), 0o644))
	// Every address the burst adds it removes: the watch, once through
	// it, holds the host's addresses of before, and one more added after.
	addrs := mapEntries(t, h)["host_addrs"]
	h.MustRun("ip", "-n", host, "-batch", file)
	waitForLog(t, h, "watching the host's changes again")
	if n := strings.Count(h.DaemonLog(), "watching the host's changes again"); n != 1 {
		t.Errorf("the watch subscribed again %d times in a burst of %d changes, want once (the failpoint's):\n%s", n, 3*changes, h.DaemonLog())
	}

	h.InHost("ip", "addr", "add", "10.198.0.1/32", "dev", "burst0")
	// What the watch holds of the burst it reads first: a loaded host
	// takes seconds.
	for deadline := time.Now().Add(20 * time.Second); mapEntries(t, h)["host_addrs"] != addrs+1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after a burst of %d changes the daemon no longer follows the host's addresses: %v\n%s", 3*changes, mapEntries(t, h), h.DaemonLog())
		}
	}
}

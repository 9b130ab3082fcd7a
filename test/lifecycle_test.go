package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// addresses maps each sandbox to its addresses by network.
func addresses(t *testing.T, h *testbed.Host) map[string]map[string]string {
	t.Helper()
	var sbs []api.Sandbox
	if err := json.Unmarshal([]byte(h.MustCLI("sandbox", "ls", "-o", "json")), &sbs); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, sb := range sbs {
		out[sb.Name] = map[string]string{}
		for net, ep := range sb.NetworkSettings.Networks {
			out[sb.Name][net] = ep.IPAddress
		}
	}
	return out
}

func TestKillRestartAndReconcile(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	n1 := h.Name("n1")
	h.MustCLI("network", "create", "--subnet", "10.60.0.0/24", n1)
	a, b, c := h.Name("a"), h.Name("b"), h.Name("c")
	h.MustCLI("sandbox", "create", a, "--network", n1, "--ip", "10.60.0.77")
	h.MustCLI("sandbox", "create", b, "--network", n1)
	h.MustCLI("sandbox", "create", c)
	testbed.Serve(t, h.NS(b))
	testbed.Serve(t, h.NS(c))
	before := addresses(t, h)
	bIP, cIP := h.IP(b, n1), h.IP(c, "bridge")
	bVeth := h.Sandbox(b).NetworkSettings.Networks[n1].HostInterface

	h.Stop(syscall.SIGKILL)
	// The datapath is pinned: isolation keeps working with no daemon.
	if err := testbed.TCP(h.NS(a), bIP); err != nil {
		t.Fatalf("same-network traffic broke when the daemon died: %v", err)
	}
	if err := testbed.TCP(h.NS(a), cIP); err == nil {
		t.Fatal("cross-network traffic got through while the daemon was dead")
	}

	// Damage behind the daemon's back: b's veth goes, leftovers appear.
	h.InHost("ip", "link", "del", bVeth)
	h.InHost("ip", "link", "add", "ebvdeadbeef0000", "type", "veth", "peer", "name", "ebvdeadbeef0001")
	h.InHost("ip", "link", "set", "ebvdeadbeef0000", "alias", "ebpfnet:endpoint:deadbeef")
	h.InHost("ip", "link", "add", "eb-deadbeef", "type", "bridge")
	h.InHost("ip", "link", "set", "eb-deadbeef", "alias", "ebpfnet:network:deadbeef")
	h.InHost("ip", "link", "add", "notours0", "type", "bridge")

	h.Start()
	if after := addresses(t, h); !equalAddresses(before, after) {
		t.Fatalf("addresses changed across kill -9 and restart:\nbefore %v\nafter  %v", before, after)
	}
	links := h.InHost("ip", "-o", "link")
	for _, gone := range []string{"ebvdeadbeef0000", "eb-deadbeef"} {
		if strings.Contains(links, gone) {
			t.Errorf("leftover %s survived reconcile", gone)
		}
	}
	if !strings.Contains(links, "notours0") {
		t.Error("reconcile removed an interface ebpfnet does not own")
	}
	// b's endpoint was rebuilt with its address and the programs attached.
	h.MustReach(a, bIP)
	if err := testbed.TCP(h.NS(a), cIP); err == nil {
		t.Fatal("cross-network traffic got through after restart")
	}
	for _, ep := range h.Status().Endpoints {
		if ep.Attach != "tcx" {
			t.Errorf("endpoint %s of %s: programs %q, want tcx", ep.Interface, ep.Sandbox, ep.Attach)
		}
	}

	// The same repairs on demand, without a restart: a lost veth, a lost
	// bridge (its veths fall off it) and a lost sandbox namespace.
	n1Bridge := h.Network(n1).Options["com.docker.network.bridge.name"]
	h.InHost("ip", "link", "del", h.Sandbox(b).NetworkSettings.Networks[n1].HostInterface)
	h.InHost("ip", "link", "del", n1Bridge)
	h.MustRun("ip", "netns", "del", c)
	if err := h.Client.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.MustReach(a, bIP)
	if out := h.MustCLI("exec", c, "--", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, cIP+"/16") {
		t.Fatalf("recreated sandbox %s lacks its address %s: %s", c, cIP, out)
	}
	if after := addresses(t, h); !equalAddresses(before, after) {
		t.Fatalf("addresses changed across reconcile:\nbefore %v\nafter  %v", before, after)
	}
}

func equalAddresses(a, b map[string]map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || len(v) != len(w) {
			return false
		}
		for n, ip := range v {
			if w[n] != ip {
				return false
			}
		}
	}
	return true
}

// snapshot is everything a failed request must leave as it was.
func snapshot(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(h.MustCLI("network", "ls", "-o", "json"))
	b.WriteString(h.MustCLI("sandbox", "ls", "-o", "json"))
	b.WriteString(strings.Join(h.LinkNames(), " "))
	namespaces, _ := filepath.Glob("/run/netns/" + h.Prefix + "*")
	b.WriteString(strings.Join(namespaces, " "))
	// The maps the control plane writes: not conntrack's, which traffic
	// and time change.
	for _, m := range h.Status().Maps {
		if !strings.HasPrefix(m.Map, "ct") && m.Map != "frags" && m.Map != "host_echoes" {
			fmt.Fprintf(&b, " %s=%d", m.Map, m.Entries)
		}
	}
	return b.String()
}

func TestBadInputFailsClearlyAndChangesNothing(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	app, tiny, web, filler := h.Name("app"), h.Name("tiny"), h.Name("web"), h.Name("filler")
	h.MustCLI("network", "create", "--subnet", "172.19.0.0/16", "--ip-range", "172.19.5.0/24", app)
	h.MustCLI("network", "create", "--subnet", "10.50.0.0/30", tiny) // room for one endpoint
	h.MustCLI("sandbox", "create", web, "--network", app, "--ip", "172.19.5.10")
	h.MustCLI("sandbox", "create", filler, "--network", tiny)
	before := snapshot(t, h)

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "--subnet", "nonsense", "x1"}, `invalid subnet "nonsense"`},
		{[]string{"network", "create", "--subnet", "172.30.0.0/33", "x1"}, `invalid subnet "172.30.0.0/33"`},
		{[]string{"network", "create", "--subnet", "172.30.0.0/16", "--gateway", "10.0.0.1", "x1"}, "gateway 10.0.0.1 is outside subnet 172.30.0.0/16"},
		{[]string{"network", "create", "--subnet", "172.30.0.0/16", "--gateway", "nope", "x1"}, `invalid gateway "nope"`},
		{[]string{"network", "create", "--subnet", "172.30.0.0/16", "--ip-range", "172.31.0.0/24", "x1"}, "ip-range 172.31.0.0/24 is outside subnet 172.30.0.0/16"},
		{[]string{"network", "create", "--gateway", "172.30.0.1", "x1"}, "--ip-range and --gateway need --subnet"},
		{[]string{"network", "create", "--subnet", "172.19.128.0/17", "x1"}, "subnet 172.19.128.0/17 overlaps subnet 172.19.0.0/16 of network " + app},
		{[]string{"network", "create", app}, "network " + app + " already exists"},
		{[]string{"network", "create", "bad/name"}, `invalid network name "bad/name"`},
		{[]string{"network", "create", "-d", "nosuch", "x1"}, `unknown driver "nosuch"`},
		{[]string{"network", "create", "-o", "foo=bar", "x1"}, `unknown option "foo" for driver bridge`},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.enable_icc=maybe", "x1"}, `"maybe" is not true or false`},
		{[]string{"network", "create", "-o", "com.docker.network.driver.mtu=9", "x1"}, `"9" is not an MTU`},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=open", "x1"},
			`unknown gateway mode "open" (valid: nat, nat-unprotected, routed, isolated)`},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=routed", "-o", "com.docker.network.bridge.enable_ip_masquerade=true", "x1"},
			"enable_ip_masquerade=true conflicts with com.docker.network.bridge.gateway_mode_ipv4=routed"},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=isolated", "x1"}, "gateway_mode_ipv4=isolated needs --internal"},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.name=ebpf0", "x1"}, "bridge ebpf0 is already used by network bridge"},
		{[]string{"network", "create", "-d", "macvlan", "--subnet", "192.168.60.0/24", "-o", "parent=nosuch0", "x1"}, "parent interface nosuch0 does not exist"},
		{[]string{"network", "create", "-d", "macvlan", "--subnet", "192.168.60.0/24", "x1"}, "needs a parent interface"},
		{[]string{"network", "rm", app}, "network " + app + " has active endpoints (" + web + ")"},
		{[]string{"network", "rm", "bridge"}, "bridge is a pre-defined network and cannot be removed"},
		{[]string{"network", "rm", "nosuch"}, "network nosuch: not found"},
		{[]string{"sandbox", "create", web}, "sandbox " + web + " already exists"},
		{[]string{"sandbox", "create", "../evil"}, `invalid sandbox name "../evil"`},
		{[]string{"sandbox", "create", h.Name("x"), "--network", "nosuch"}, "network nosuch: not found"},
		{[]string{"sandbox", "create", h.Name("x"), "--network", tiny}, "network " + tiny + " has no free address left"},
		{[]string{"sandbox", "create", h.Name("x"), "--network", app, "--ip", "172.19.5.10"}, "address 172.19.5.10 is already in use"},
		{[]string{"sandbox", "create", h.Name("x"), "--network", app, "--ip", "10.0.0.5"}, "address 10.0.0.5 is outside subnet 172.19.0.0/16"},
		{[]string{"sandbox", "create", h.Name("x"), "--network", app, "--ip", "banana"}, `invalid IP address "banana"`},
		{[]string{"sandbox", "create", h.Name("x"), "--network", "host", "--network", app}, "network mode host cannot be combined with other networks"},
		{[]string{"sandbox", "create", h.Name("x"), "--network", "container:nosuch"}, "sandbox nosuch: not found"},
		// The first endpoint succeeds, the second fails: all of it is undone.
		{[]string{"sandbox", "create", h.Name("x"), "--network", app, "--network", tiny}, "network " + tiny + " has no free address left"},
		{[]string{"network", "connect", app, web}, "sandbox " + web + " is already connected to network " + app},
		{[]string{"network", "connect", tiny, web}, "network " + tiny + " has no free address left"},
		{[]string{"network", "connect", app, "nosuch"}, "sandbox nosuch: not found"},
		{[]string{"network", "disconnect", tiny, web}, "sandbox " + web + " is not connected to network " + tiny},
		{[]string{"sandbox", "rm", "nosuch"}, "sandbox nosuch: not found"},
	}
	for _, c := range cases {
		out, err := h.CLI(c.args...)
		if err == nil {
			t.Errorf("ebpfnet %s: succeeded, want an error", strings.Join(c.args, " "))
			continue
		}
		if !strings.Contains(out, c.want) || strings.Count(out, "\n") != 0 {
			t.Errorf("ebpfnet %s:\n got %q\nwant one line containing %q", strings.Join(c.args, " "), out, c.want)
		}
		if after := snapshot(t, h); after != before {
			t.Fatalf("ebpfnet %s changed state:\nbefore %s\nafter  %s", strings.Join(c.args, " "), before, after)
		}
	}
	// No failed request consumed an address: the next one is the range's first.
	h.MustCLI("sandbox", "create", h.Name("next"), "--network", app)
	if ip := h.IP(h.Name("next"), app); ip != "172.19.5.0" {
		t.Fatalf("next address %s, want 172.19.5.0", ip)
	}
}

func TestClsactFallback(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t, "--attach", "clsact")
	n1, n2 := h.Name("n1"), h.Name("n2")
	h.MustCLI("network", "create", n1)
	h.MustCLI("network", "create", n2)
	a, b, c := h.Name("a"), h.Name("b"), h.Name("c")
	h.MustCLI("sandbox", "create", a, "--network", n1)
	h.MustCLI("sandbox", "create", b, "--network", n1)
	h.MustCLI("sandbox", "create", c, "--network", n2)
	testbed.Serve(t, h.NS(b))
	testbed.Serve(t, h.NS(c))
	h.MustReach(a, h.IP(b, n1))
	h.MustNotReach(a, h.IP(c, n2))
	eps := h.Status().Endpoints
	if len(eps) != 3 {
		t.Fatalf("status lists %d endpoints, want 3", len(eps))
	}
	for _, ep := range eps {
		if ep.Attach != "clsact" {
			t.Errorf("endpoint %s: programs %q, want clsact", ep.Interface, ep.Attach)
		}
	}
	// clsact filters live on the interface itself: nothing is pinned.
	links, _ := filepath.Glob("/sys/fs/bpf/" + h.Prefix + "/links/*")
	if len(links) != 0 {
		t.Fatalf("clsact mode pinned links: %v", links)
	}
	out, _ := exec.Command("ip", "netns", "exec", filepath.Base(h.NetNS), "tc", "filter", "show", "dev", eps[0].Interface, "ingress").CombinedOutput()
	if !strings.Contains(string(out), "ebpfnet-ingress") || !strings.Contains(string(out), "direct-action") {
		t.Fatalf("tc shows no ebpfnet filter: %s", out)
	}

	// A restarted daemon replaces its filters' programs with its own, in
	// place: one filter per direction, a new program.
	veth := eps[0].Interface
	before := filterPrograms(t, h.NetNS, veth)
	h.Stop(syscall.SIGTERM)
	h.Start()
	after := filterPrograms(t, h.NetNS, veth)
	if len(before) != 1 || len(after) != 1 || before[0] == after[0] {
		t.Fatalf("ebpfnet's ingress filter programs on %s: %v before a restart, %v after; want one, replaced", veth, before, after)
	}
	h.MustReach(a, h.IP(b, n1))
	h.MustNotReach(a, h.IP(c, n2))

	// Every TCX program runs before tc filters: status says so.
	attachForeign(t, h.NetNS, veth, ebpf.AttachTCXIngress, "tcx_ok", nil)
	others := iface(t, h.Status(), veth).Others
	if len(others) != 1 || others[0].Name != "tcx_ok" || !others[0].Before || others[0].Hook != "tcx" {
		t.Fatalf("status names %+v beside ebpfnet's filter on %s, want tcx_ok before it", others, veth)
	}
	if status := h.MustCLI("status"); !strings.Contains(status, veth+" ingress: tcx_ok (id ") ||
		!strings.Contains(status, "tcx) runs BEFORE ebpfnet's program") {
		t.Fatalf("status does not warn about the TCX program ahead of ebpfnet's filter:\n%s", status)
	}
}

// filterPrograms lists the program IDs of ebpfnet's ingress filters on an
// interface.
func filterPrograms(t *testing.T, netns, ifname string) []int {
	t.Helper()
	var ids []int
	err := namespace.Do(netns, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == "ebpfnet-ingress" {
				ids = append(ids, bf.Id)
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("list filters of %s: %v", ifname, err)
	}
	return ids
}

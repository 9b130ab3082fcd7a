package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/test/testbed"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// TestRealHost runs the paths users rely on against hosts prepared as real
// ones are (Docker's, ufw's, an nftables drop policy, a hardened host)
// and a pristine one, the control: whatever the host's netfilter holds,
// what ebpfnet accepts is delivered, what it blocks stays blocked, and
// its flows never enter the host's conntrack. One host per preparation
// serves all its scenarios.
func TestRealHost(t *testing.T) {
	t.Parallel()
	ufwBefore := ufwConfig(t)
	for _, prep := range testbed.Preparations {
		t.Run(prep.Name, func(t *testing.T) {
			r := newRealHost(t, prep)
			t.Run("same-network", r.sameNetwork)
			t.Run("two-networks", r.twoNetworks)
			t.Run("isolation", r.isolation)
			t.Run("published", r.published)
			t.Run("balanced", r.balanced)
			t.Run("masquerade", r.masquerade)
			t.Run("dns", r.dns)
			t.Run("cni", r.cni)
			if prep.Churn != nil {
				t.Run("churn", r.churn)
			}
			t.Run("conntrack", r.conntrack)
		})
	}
	// The ufw preparation works from a copy: the machine's ufw must be
	// as it was, never enabled by a test.
	if after := ufwConfig(t); after != ufwBefore {
		t.Errorf("the machine's ufw configuration changed during the test:\nbefore %s\nafter  %s", ufwBefore, after)
	}
}

// ufwConfig sums the machine's ufw configuration files.
func ufwConfig(t *testing.T) string {
	t.Helper()
	sum := sha256.New()
	for _, root := range []string{"/etc/ufw", "/etc/default/ufw"} {
		filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				data, _ := os.ReadFile(path)
				fmt.Fprintf(sum, "%s %x\n", path, sha256.Sum256(data))
			}
			return nil
		})
	}
	return fmt.Sprintf("%x", sum.Sum(nil))
}

// realHost is one prepared host and what its scenarios use: networks,
// sandboxes, and their addresses, all looked up before the scenarios run
// (they are subtests, which must not fail the test that made the host).
type realHost struct {
	prep testbed.Preparation
	h    *testbed.Host
	out  testbed.Outside
	// Networks: app and back dual-stack, icc with icc=false, internal.
	app, back, icc, internal string
	// Sandboxes: a, b and web on app, c on back, both on app and back,
	// i1 and i2 on icc, n1 and n2 on internal; web publishes 8080.
	a, b, c, both, web, i1, i2, n1, n2 string
	// ip is each sandbox's address by "SANDBOX NETWORK 4" (or 6).
	ip map[string]string
}

// sandboxes are where each sandbox is, in the order of its networks, in
// the order they are created (so their addresses are the same each run).
func (r *realHost) sandboxes() []struct {
	name     string
	networks []string
} {
	return []struct {
		name     string
		networks []string
	}{
		{r.a, []string{r.app}}, {r.b, []string{r.app}}, {r.web, []string{r.app}}, {r.c, []string{r.back}},
		{r.both, []string{r.app, r.back}}, {r.i1, []string{r.icc}}, {r.i2, []string{r.icc}},
		{r.n1, []string{r.internal}}, {r.n2, []string{r.internal}},
	}
}

func newRealHost(t *testing.T, prep testbed.Preparation) *realHost {
	t.Helper()
	var out testbed.Outside
	// The preparation first: a host's firewall is there before any
	// interface of the test or the daemon (rp_filter's default included).
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		prep.Prepare(h)
		out = h.AddOutside()
	})
	testbed.Serve(t, out.NS)
	testbed.ServeDNS(t, out.NS, testbed.UpstreamDNS+":53", &upstream{})
	r := &realHost{prep: prep, h: h, out: out, ip: map[string]string{},
		app: h.Name("app"), back: h.Name("back"), icc: h.Name("icc"), internal: h.Name("int"),
		a: h.Name("a"), b: h.Name("b"), c: h.Name("c"), both: h.Name("both"), web: h.Name("web"),
		i1: h.Name("i1"), i2: h.Name("i2"), n1: h.Name("n1"), n2: h.Name("n2")}
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:a1::/64", r.app)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:a2::/64", r.back)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:a3::/64", "-o", "com.docker.network.bridge.enable_icc=false", r.icc)
	h.MustCLI("network", "create", "--ipv6", "--subnet", "fd00:a4::/64", "--internal", r.internal)
	for _, s := range r.sandboxes() {
		sb, nets := s.name, s.networks
		args := []string{"sandbox", "create", sb}
		for _, n := range nets {
			args = append(args, "--network", n)
		}
		if sb == r.web {
			args = append(args, "-p", "8080:7777", "-p", "8080:7777/udp")
		}
		h.MustCLI(args...)
		testbed.Serve(t, h.NS(sb))
		for _, n := range nets {
			ep := h.Sandbox(sb).NetworkSettings.Networks[n]
			if ep.IPAddress == "" || ep.GlobalIPv6Address == "" {
				t.Fatalf("%s: sandbox %s on %s has addresses %q and %q, want one of each family", prep.Name, sb, n, ep.IPAddress, ep.GlobalIPv6Address)
			}
			r.ip[sb+" "+n+" 4"], r.ip[sb+" "+n+" 6"] = ep.IPAddress, ep.GlobalIPv6Address
		}
	}
	return r
}

// addr is a sandbox's address on a network, of family 4 or 6.
func (r *realHost) addr(sandbox, network string, family int) string {
	return r.ip[fmt.Sprintf("%s %s %d", sandbox, network, family)]
}

// short is a name without the host's prefix, for messages.
func (r *realHost) short(name string) string { return strings.TrimPrefix(name, r.h.Prefix+"-") }

// probe is one exchange of a scenario: who to whom, over which protocol,
// to which address (which names the family).
type probe struct {
	what  string
	proto string
	dst   string
	run   func() error
}

// familyOf names the family of an address, with or without a port.
func familyOf(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return "?"
		}
		a = ap.Addr()
	}
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// reach is TCP, UDP and ICMP from a sandbox to dst, which serves with
// testbed.Serve.
func (r *realHost) reach(from, to, dst string) []probe {
	ns := r.h.NS(from)
	what := fmt.Sprintf("%s to %s (%s)", r.short(from), to, dst)
	return []probe{
		{what, "tcp", dst, func() error { return testbed.TCP(ns, dst) }},
		{what, "udp", dst, func() error { return testbed.UDP(ns, dst) }},
		{what, "icmp", dst, func() error { return r.h.Ping(from, dst) }},
	}
}

// echoes is TCP and UDP from the namespace at ns to addr (host:port).
func echoes(what, ns, addr string) []probe {
	return []probe{
		{what, "tcp", addr, func() error { return testbed.TCPTo(ns, addr) }},
		{what, "udp", addr, func() error { return testbed.UDPTo(ns, addr) }},
	}
}

// seenAs checks over TCP and UDP that the echo server at addr sees a
// client of the namespace at ns as want.
func seenAs(what, ns, addr, want string) []probe {
	var out []probe
	for _, proto := range []string{"tcp", "udp"} {
		out = append(out, probe{what + " seen as " + want, proto, addr, func() error {
			c, err := testbed.Dial(ns, proto, addr, "")
			if err != nil {
				return err
			}
			defer c.Close()
			peer, err := testbed.Peer(c)
			if err != nil {
				return fmt.Errorf("%s to %s: %w", proto, addr, err)
			}
			if got := netip.MustParseAddrPort(peer).Addr().Unmap().String(); got != want {
				return fmt.Errorf("%s to %s: seen as %s, want %s", proto, addr, got, want)
			}
			return nil
		}})
	}
	return out
}

// expect runs probes side by side (a few at a time: each that is dropped
// waits out its timeout) and reports every one that did not get through,
// or, with through false, that did; each report starts with where.
func expect(t *testing.T, where string, through bool, groups ...[]probe) {
	t.Helper()
	probes := slices.Concat(groups...)
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	limit := make(chan struct{}, 6)
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit <- struct{}{}
			defer func() { <-limit }()
			errs[i] = p.run()
		}()
	}
	wg.Wait()
	bad := 0
	for i, p := range probes {
		switch {
		case through && errs[i] != nil:
			t.Errorf("%s, %s over %s: %s: %v", where, p.proto, familyOf(p.dst), p.what, errs[i])
		case !through && errs[i] == nil:
			t.Errorf("%s, %s over %s: %s got through, want it blocked", where, p.proto, familyOf(p.dst), p.what)
		default:
			continue
		}
		bad++
	}
	want := "through"
	if !through {
		want = "blocked"
	}
	t.Logf("%s: %d of %d exchanges %s as they should be", where, len(probes)-bad, len(probes), want)
}

// expect is expect for a scenario of this host's preparation.
func (r *realHost) expect(t *testing.T, scenario string, through bool, groups ...[]probe) {
	t.Helper()
	expect(t, r.prep.Name+", "+scenario, through, groups...)
}

// both families of a sandbox on a network, reached from another.
func (r *realHost) reachBoth(from, to, network string) []probe {
	return slices.Concat(r.reach(from, r.short(to), r.addr(to, network, 4)), r.reach(from, r.short(to), r.addr(to, network, 6)))
}

func (r *realHost) sameNetwork(t *testing.T) {
	r.expect(t, "same network", true, r.reachBoth(r.a, r.b, r.app))
}

// A sandbox on two networks is reached on each by the sandboxes of each,
// and reaches them.
func (r *realHost) twoNetworks(t *testing.T) {
	r.expect(t, "two networks", true,
		r.reachBoth(r.a, r.both, r.app), r.reachBoth(r.c, r.both, r.back),
		r.reachBoth(r.both, r.a, r.app), r.reachBoth(r.both, r.c, r.back))
}

// What is blocked stays blocked on every host, and what those networks
// still allow works there too.
func (r *realHost) isolation(t *testing.T) {
	r.expect(t, "isolation (blocked)", false,
		r.reachBoth(r.i1, r.i2, r.icc),     // icc=false
		r.reachBoth(r.a, r.c, r.back),      // another network
		r.reachBoth(r.c, r.a, r.app),       // and back
		r.reach(r.n1, "outside", r.out.IP), // internal
		r.reach(r.n1, "outside", r.out.IP6),
		echoes("internal n1 to the published port", r.h.NS(r.n1), net.JoinHostPort(r.out.HostIP, "8080")))
	r.expect(t, "isolation (allowed)", true,
		r.reach(r.n1, r.short(r.n2), r.addr(r.n2, r.internal, 4)),
		r.reach(r.n1, r.short(r.n2), r.addr(r.n2, r.internal, 6)),
		r.reach(r.i1, "outside", r.out.IP), // icc=false, out
		r.reach(r.i1, "outside", r.out.IP6))
}

// A published port from outside (the client's address kept), from host
// processes and by hairpin, on both families.
func (r *realHost) published(t *testing.T) {
	v4, v6 := net.JoinHostPort(r.out.HostIP, "8080"), net.JoinHostPort(r.out.HostIP6, "8080")
	r.expect(t, "published", true,
		echoes("outside to the host", r.out.NS, v4), echoes("outside to the host", r.out.NS, v6),
		seenAs("outside", r.out.NS, v4, r.out.IP), seenAs("outside", r.out.NS, v6, r.out.IP6),
		echoes("host to 127.0.0.1", r.h.NetNS, "127.0.0.1:8080"), echoes("host to [::1]", r.h.NetNS, "[::1]:8080"),
		echoes("host to its own address", r.h.NetNS, v4),
		echoes("hairpin from b (same network)", r.h.NS(r.b), v4), echoes("hairpin from b (same network)", r.h.NS(r.b), v6),
		echoes("hairpin from c (another network)", r.h.NS(r.c), v4), echoes("hairpin from c (another network)", r.h.NS(r.c), v6),
		echoes("hairpin from web to itself", r.h.NS(r.web), v4))
}

// A port a and b publish with --balance takes new flows to both, from
// outside, from the host and by hairpin from c, through the host's
// firewall as an unbalanced one does; unpublished, it leaves nothing.
func (r *realHost) balanced(t *testing.T) {
	for _, sb := range []string{r.a, r.b} {
		r.h.MustCLI("publish", "--balance", "8090:7777", "8090:7777/udp", sb)
	}
	v4, v6 := net.JoinHostPort(r.out.HostIP, "8090"), net.JoinHostPort(r.out.HostIP6, "8090")
	var flows [][]probe
	for range 4 { // new flows, each with a port of its own: the table spreads them
		flows = append(flows, echoes("outside to the host", r.out.NS, v4), echoes("outside to the host", r.out.NS, v6),
			echoes("host to 127.0.0.1", r.h.NetNS, "127.0.0.1:8090"), echoes("hairpin from c (another network)", r.h.NS(r.c), v4))
	}
	r.expect(t, "balanced", true, flows...)
	for _, sb := range []string{r.a, r.b} {
		r.h.MustCLI("unpublish", "8090", sb)
	}
}

// Sandboxes reach the outside as the host's address.
func (r *realHost) masquerade(t *testing.T) {
	r.expect(t, "masquerade", true,
		r.reach(r.a, "outside", r.out.IP), r.reach(r.a, "outside", r.out.IP6),
		seenAs("a to outside", r.h.NS(r.a), net.JoinHostPort(r.out.IP, "7777"), r.out.HostIP),
		seenAs("a to outside", r.h.NS(r.a), net.JoinHostPort(r.out.IP6, "7777"), r.out.HostIP6))
}

// The embedded DNS answers a sandbox's neighbours by name, the name
// works, and names it does not know are asked upstream, from the host.
func (r *realHost) dns(t *testing.T) {
	ns := r.h.NS(r.a)
	lookup := func(network string, qtype uint16, name, want string) probe {
		return probe{fmt.Sprintf("a resolves %s (%s)", r.short(name), dns.TypeToString[qtype]), network + " dns", want, func() error {
			resp, _, err := testbed.Query(ns, network, "127.0.0.11:53", name, qtype)
			if err != nil {
				return err
			}
			var got []string
			for _, rr := range resp.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				}
			}
			if !slices.Contains(got, want) {
				return fmt.Errorf("answer %s %v, want %s", dns.RcodeToString[resp.Rcode], got, want)
			}
			return nil
		}}
	}
	byName := func(family, dst string) probe {
		return probe{"a pings b by name", "icmp", dst, func() error {
			if out, err := r.h.CLI("exec", r.a, "--", "busybox", "ping", family, "-c1", "-W1", r.b); err != nil {
				return fmt.Errorf("ping %s %s: %v: %s", family, r.b, err, out)
			}
			return nil
		}}
	}
	b4, b6 := r.addr(r.b, r.app, 4), r.addr(r.b, r.app, 6)
	r.expect(t, "dns", true, []probe{
		lookup("udp", dns.TypeA, r.b, b4), lookup("tcp", dns.TypeA, r.b, b4), lookup("udp", dns.TypeAAAA, r.b, b6),
		byName("-4", b4), byName("-6", b6),
		lookup("udp", dns.TypeA, "outside.test", "192.0.2.10"), lookup("tcp", dns.TypeA, "outside.test", "192.0.2.10"),
	})
}

// Two containers attached by ebpfnet's CNI plugin (main mode) talk.
func (r *realHost) cni(t *testing.T) {
	c := newCNI(t)
	network := r.h.Name("cninet")
	if out, err := r.h.CLI("network", "create", "--subnet", "10.96.0.0/24", network); err != nil {
		t.Fatalf("%s, cni: network create: %v\n%s", r.prep.Name, err, out)
	}
	c.Conflist("ebnet", map[string]any{"type": "ebpfnet", "network": network, "socket": r.h.Socket()})
	var nss, ips []string
	for _, name := range []string{"k1", "k2"} {
		ns := "/run/netns/" + r.h.Name(name)
		if out, err := exec.Command("ip", "netns", "add", filepath.Base(ns)).CombinedOutput(); err != nil {
			t.Fatalf("%s, cni: ip netns add: %v\n%s", r.prep.Name, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", filepath.Base(ns)).Run() })
		exec.Command("ip", "-n", filepath.Base(ns), "link", "set", "lo", "up").Run()
		res, err := c.Run("add", "ebnet", ns)
		if err != nil {
			t.Fatalf("%s, cni: cnitool add: %v\n%s", r.prep.Name, err, res)
		}
		t.Cleanup(func() { c.Run("del", "ebnet", ns) }) // before the namespace goes
		var result struct{ IPs []struct{ Address string } }
		if err := json.Unmarshal([]byte(res), &result); err != nil || len(result.IPs) != 1 {
			t.Fatalf("%s, cni: ADD's result: %v\n%s", r.prep.Name, err, res)
		}
		testbed.Serve(t, ns)
		nss, ips = append(nss, ns), append(ips, netip.MustParsePrefix(result.IPs[0].Address).Addr().String())
	}
	what := fmt.Sprintf("container k1 to k2 (%s)", ips[1])
	r.expect(t, "cni", true, []probe{
		{what, "tcp", ips[1], func() error { return testbed.TCP(nss[0], ips[1]) }},
		{what, "udp", ips[1], func() error { return testbed.UDP(nss[0], ips[1]) }},
		{what, "icmp", ips[1], func() error { return pingFrom(nss[0], ips[1]) }},
	})
}

// pingFrom sends one ICMP echo from the namespace at ns.
func pingFrom(ns, dst string) error {
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns), "busybox", "ping", "-c1", "-W1", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// connections opens up to n short TCP connections one after another,
// for at most budget, giving up after three failures in a row (a path
// that is cut would take a timeout each), and returns how many worked and
// the last error.
func connections(n int, budget time.Duration, dial func() error) (ok int, last error) {
	failedInARow := 0
	for deadline := time.Now().Add(budget); n > 0 && time.Now().Before(deadline) && failedInARow < 3; n-- {
		if err := dial(); err != nil {
			failedInARow++
			last = err
			continue
		}
		ok++
		failedInARow = 0
	}
	return ok, last
}

// The firewall reloads (flush, an empty table, its rules again) while
// sandboxes talk: not one connection fails.
func (r *realHost) churn(t *testing.T) {
	dst := r.addr(r.b, r.app, 4)
	var (
		ok, failed int
		first      error
		done       = make(chan struct{})
		stopped    = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			select {
			case <-done:
				return
			default:
			}
			if err := testbed.TCP(r.h.NS(r.a), dst); err != nil {
				failed++
				if first == nil {
					first = err
				}
			} else {
				ok++
			}
		}
	}()
	for range 3 {
		time.Sleep(200 * time.Millisecond)
		if err := r.prep.Churn(r.h); err != nil {
			t.Errorf("%s, churn: reload the firewall: %v", r.prep.Name, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(done)
	<-stopped
	if failed > 0 || ok == 0 {
		t.Errorf("%s, churn, tcp over IPv4: a to b (%s): %d of %d connections failed while the firewall reloaded, the first: %v", r.prep.Name, dst, failed, ok+failed, first)
	}
	t.Logf("%s, churn: %d connections, %d failed, across 3 reloads", r.prep.Name, ok+failed, failed)
}

// Flows of ebpfnet never enter the host's netfilter conntrack: its count
// stays flat under sandbox-to-sandbox, published and masqueraded
// connections. The hardened host, whose conntrack is in use, takes 10,000
// of each, more than a small table holds; the others 200.
func (r *realHost) conntrack(t *testing.T) {
	const grown = 10 // the host's own flows meanwhile, with room
	n, budget := 200, 10*time.Second
	if r.prep.Name == "strict" {
		n, budget = 10000, 60*time.Second
	}
	for _, c := range []struct{ what, ns, addr string }{
		{"sandbox to sandbox, a to b", r.h.NS(r.a), net.JoinHostPort(r.addr(r.b, r.app, 4), "7777")},
		{"sandbox to sandbox, a to b", r.h.NS(r.a), net.JoinHostPort(r.addr(r.b, r.app, 6), "7777")},
		{"published, outside to the host", r.out.NS, net.JoinHostPort(r.out.HostIP, "8080")},
		{"masquerade, a to outside", r.h.NS(r.a), net.JoinHostPort(r.out.IP, "7777")},
	} {
		before, err := r.h.ConntrackCount()
		if err != nil {
			t.Fatal(err)
		}
		ok, last := connections(n, budget, func() error { return testbed.TCPTo(c.ns, c.addr) })
		after, err := r.h.ConntrackCount()
		if err != nil {
			t.Fatal(err)
		}
		family := familyOf(c.addr)
		if ok < n {
			t.Errorf("%s, conntrack, tcp over %s: %s (%s): %d of %d connections worked, the last error: %v", r.prep.Name, family, c.what, c.addr, ok, n, last)
		}
		if after-before >= grown {
			t.Errorf("%s, conntrack, tcp over %s: %s (%s): the host's nf_conntrack_count went from %d to %d over %d connections; want ebpfnet's flows kept out of it\n%s",
				r.prep.Name, family, c.what, c.addr, before, after, ok, conntrackSample(r.h))
		}
		t.Logf("%s, conntrack: %s over %s: %d connections, nf_conntrack_count %d -> %d", r.prep.Name, c.what, family, ok, before, after)
	}
}

// conntrackSample is the first entries of the host namespace's conntrack
// table, to show which flows entered it.
func conntrackSample(h *testbed.Host) string {
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(h.NetNS), "conntrack", "-L").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 8 {
		lines = append(lines[:8], "...")
	}
	if err != nil {
		lines = append(lines, "conntrack -L: "+err.Error())
	}
	return strings.Join(lines, "\n")
}

// TestRealHostDockerPlugin is the Docker user's story on a Docker host:
// a real dockerd in the host namespace (br_netfilter, FORWARD DROP and
// its chains, as dockerd writes them), two containers on an ebpfnet
// network talking, by address and by name, and a container on a second
// network reaching one connected to it.
func TestRealHostDockerPlugin(t *testing.T) {
	t.Parallel()
	testenv.RequirePrivileges(t)
	if !testbed.DockerInstalled() {
		t.Skip("needs dockerd, containerd and Debian's docker client (docker.io)")
	}
	// dockerd first, as on a host where it starts at boot: it finds IPv4
	// forwarding off, turns it on and sets FORWARD to DROP (started after
	// ebpfnet, which turns forwarding on, it would leave ACCEPT). A new
	// namespace takes IPv4 forwarding from the machine's own, which may
	// have it on: off, as at boot.
	var d *testbed.Docker
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		h.InHost("sysctl", "-qw", "net.ipv4.ip_forward=0")
		d = testbed.StartDocker(t, h.NetNS)
	})
	d.ImportImage(testbed.BusyboxRootfs(t), "busybox")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log:\n%s", d.Log())
		}
	})
	if rules := h.InHost("iptables", "-S", "FORWARD"); !strings.Contains(rules, "-P FORWARD DROP") {
		t.Errorf("dockerd left the host's FORWARD policy other than DROP, so this is no Docker host:\n%s", rules)
	}
	plugin := h.Prefix
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "--ipv6", "--subnet", "10.97.0.0/24", "--subnet", "fd00:d1::/64", "web")
	d.MustCLI("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.98.0.0/24", "other")
	for _, c := range []struct{ name, network string }{{"x1", "web"}, {"x2", "web"}, {"x3", "other"}} {
		d.MustCLI("run", "-d", "--name", c.name, "--network", c.network, "busybox", "sleep", "600")
	}
	d.MustCLI("network", "connect", "other", "x2")
	keyOf := func(c string) string { return d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", c) }
	ipOf := func(c, n, field string) string {
		return d.MustCLI("inspect", "-f", "{{(index .NetworkSettings.Networks \""+n+"\")."+field+"}}", c)
	}
	testbed.Serve(t, keyOf("x2"))
	reach := func(from, dst, what string) []probe {
		ns := keyOf(from)
		family := "-4"
		if strings.Contains(dst, ":") {
			family = "-6"
		}
		what = fmt.Sprintf("%s (%s)", what, dst)
		return []probe{
			{what, "tcp", dst, func() error { return testbed.TCP(ns, dst) }},
			{what, "udp", dst, func() error { return testbed.UDP(ns, dst) }},
			{what, "icmp", dst, func() error {
				if out, err := d.CLI("exec", from, "ping", family, "-c1", "-W1", dst); err != nil {
					return fmt.Errorf("docker exec %s ping %s: %v: %s", from, dst, err, out)
				}
				return nil
			}},
		}
	}
	x2 := ipOf("x2", "web", "IPAddress")
	expect(t, "docker plugin", true,
		reach("x1", x2, "x1 to x2 on web"),
		reach("x1", ipOf("x2", "web", "GlobalIPv6Address"), "x1 to x2 on web"),
		reach("x3", ipOf("x2", "other", "IPAddress"), "x3 to x2 on other (connected later)"),
		[]probe{{"x1 pings x2 by name (Docker's DNS)", "icmp", x2, func() error {
			if out, err := d.CLI("exec", "x1", "ping", "-4", "-c1", "-W1", "x2"); err != nil {
				return fmt.Errorf("docker exec x1 ping -4 x2: %v: %s", err, out)
			}
			return nil
		}}})
}

package test

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// Outside addresses of the egress test: the DNS server's (the hosts'
// upstream), a.test's, b.test's, one in the allowed prefix 10.99.0.32/28
// and one in none.
const (
	egressDNS         = testbed.UpstreamDNS
	egressA, egressA6 = "10.99.0.10", "2001:db8:99::10"
	egressB, egressB6 = "10.99.0.20", "2001:db8:99::20"
	egressInList      = "10.99.0.40"
	egressOffList     = "10.99.0.50"
	egressPrefix      = "10.99.0.32/28"
	egressTTL         = 2 * time.Second // a.test's TTL, which the datapath stretches to 5 s
)

// An egress list lets a sandbox reach the names and prefixes it allows
// and nothing else outside its network, over both families: what its
// resolver answers for an allowed name (a.test, over IPv4 and IPv6; a
// CNAME by the name asked) until the answer's TTL lapses, the allowed
// prefix (ICMP echo too), and not b.test, an address in no prefix, nor
// another resolver. Refusals are counted as drop_egress_policy and shown
// by monitor with the sandbox, the destination and its name. A sandbox
// without a list is unaffected; sandbox update changes the list live;
// the list holds while the daemon is down after a kill -9, and after it
// starts again; a network's ebpfnet.egress.allow holds for its sandboxes.
// Upstream is Debian's dnsmasq, outside.
func TestEgressAllowList(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is missing (make deps installs dnsmasq-base)")
	}
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		outName := filepath.Base(out.NS)
		for _, a := range []string{egressA + "/24", egressB + "/24", egressInList + "/24", egressOffList + "/24"} {
			h.MustRun("ip", "-n", outName, "addr", "add", a, "dev", "eth0")
		}
		for _, a := range []string{egressA6 + "/64", egressB6 + "/64"} {
			h.MustRun("ip", "-n", outName, "addr", "add", a, "dev", "eth0", "nodad")
		}
	})
	startDnsmasq(t, out.NS)
	testbed.Serve(t, out.NS)
	// Over UDP an echo server on every address answers from the
	// namespace's first: one bound to the address asked answers from it.
	serveUDP(t, out.NS, egressInList+":7778")
	serveHTTP(t, out.NS, 8080)

	netName, ci, plain := h.Name("net"), h.Name("ci"), h.Name("plain")
	h.MustCLI("network", "create", "--ipv6", netName)
	h.MustCLI("sandbox", "create", ci, "--network", netName, "--egress-allow", "a.test", "--egress-allow", egressPrefix)
	h.MustCLI("sandbox", "create", plain, "--network", netName)
	m := startMonitor(t, h, "--type", "drop", "--sandbox", ci)
	waitMonitoring(t, h, "drop")
	refusedBefore := h.ProgramCounter("from_container", "drop_egress_policy")

	// Allowed: a.test over both families, by name, and the prefix.
	mustWork(t, "curl -4 a.test", curl(h, ci, "-4", "a.test"))
	mustWork(t, "curl -6 a.test", curl(h, ci, "-6", "a.test"))
	mustWork(t, "tcp to the allowed prefix", echoFrom(h.NS(ci), "tcp", egressInList+":7777", ""))
	mustWork(t, "udp to the allowed prefix", echoFrom(h.NS(ci), "udp", egressInList+":7778", ""))
	mustWork(t, "ping to the allowed prefix", h.Ping(ci, egressInList))
	egress := h.Sandbox(ci).Egress
	if egress == nil || strings.Join(egress.Allow, " ") != "a.test "+egressPrefix || !hasAnswer(egress, "a.test.", egressA) ||
		!hasAnswer(egress, "a.test.", egressA6) {
		t.Errorf("inspect shows egress %+v; want the list and a.test's addresses", egress)
	}

	// Refused: b.test (not even resolved), its address, an address in
	// no prefix, and another resolver.
	if err := curl(h, ci, "-4", "b.test"); err == nil {
		t.Error("curl b.test worked, want it refused")
	}
	if resp, _, err := testbed.Query(h.NS(ci), "udp", "127.0.0.11:53", "b.test", dns.TypeA); err != nil || resp.Rcode != dns.RcodeRefused {
		t.Errorf("b.test from the sandbox's resolver: %v %v, want REFUSED", resp, err)
	}
	for _, addr := range []string{egressB + ":7777", "[" + egressB6 + "]:7777", egressOffList + ":7777"} {
		if echoFrom(h.NS(ci), "tcp", addr, "") == nil {
			t.Errorf("tcp to %s was let out", addr)
		}
	}
	if h.Ping(ci, egressOffList) == nil {
		t.Errorf("ping to %s was let out", egressOffList)
	}
	if resp, _, err := testbed.Query(h.NS(ci), "udp", egressDNS+":53", "b.test", dns.TypeA); err == nil {
		t.Errorf("a query straight to the upstream was answered: %v", resp)
	}
	if n := h.ProgramCounter("from_container", "drop_egress_policy") - refusedBefore; n < 5 {
		t.Errorf("drop_egress_policy counted %d, want one at least per refused attempt (5)", n)
	}
	m.waitFor(t, "a drop_egress_policy event", func(ev api.Event) bool {
		return ev.Verdict == "drop_egress_policy" && ev.Sandbox == ci && strings.HasPrefix(ev.Before.Dst, egressOffList)
	})

	// A sandbox without a list is unaffected.
	mustWork(t, "curl b.test from a sandbox without a list", curl(h, plain, "-4", "b.test"))
	mustWork(t, "tcp from a sandbox without a list", echoFrom(h.NS(plain), "tcp", egressOffList+":7777", ""))

	// a.test's answer lapses: its address is refused until asked again,
	// and monitor names it.
	time.Sleep(5*time.Second + time.Second)
	if echoFrom(h.NS(ci), "tcp", egressA+":7777", "") == nil {
		t.Error("a.test's address was let out after its answer lapsed")
	}
	m.waitFor(t, "a drop_egress_policy event naming a.test", func(ev api.Event) bool {
		return ev.Verdict == "drop_egress_policy" && strings.HasPrefix(ev.Before.Dst, egressA) && ev.DstName == "a.test."
	})
	mustWork(t, "curl a.test asked again", curl(h, ci, "-4", "a.test"))

	// Live changes: the CNAME c.test of a.test is allowed by its own
	// name; a.test's earlier answer goes with its rule.
	h.MustCLI("sandbox", "update", ci, "--egress-allow", "c.test", "--egress-allow", egressPrefix)
	if echoFrom(h.NS(ci), "tcp", egressA+":7777", "") == nil {
		t.Error("a.test's address was let out after a.test left the list")
	}
	if err := curl(h, ci, "-4", "a.test"); err == nil {
		t.Error("curl a.test worked after a.test left the list")
	}
	mustWork(t, "curl c.test, a CNAME of a.test", curl(h, ci, "-4", "c.test"))
	h.MustCLI("sandbox", "update", ci, "--egress-clear")
	mustWork(t, "tcp with the list cleared", echoFrom(h.NS(ci), "tcp", egressOffList+":7777", ""))
	if h.Sandbox(ci).Egress != nil {
		t.Errorf("inspect shows egress %+v after --egress-clear", h.Sandbox(ci).Egress)
	}

	// Bad rules are refused in one line naming the value, and change
	// nothing.
	h.MustCLI("sandbox", "update", ci, "--egress-allow", "a.test", "--egress-allow", egressPrefix)
	for _, bad := range []string{"10.99.0.33/28", "bad..name", "*.test", "::ffff:10.0.0.0/104"} {
		msg, err := h.CLI("sandbox", "update", ci, "--egress-allow", bad)
		if err == nil || strings.Contains(strings.TrimSpace(msg), "\n") || !strings.Contains(msg, bad) {
			t.Errorf("sandbox update --egress-allow %s: %v %q, want one line naming it", bad, err, msg)
		}
		if got := h.Sandbox(ci).Egress; got == nil || len(got.Allow) != 2 {
			t.Errorf("a refused update changed the list to %+v", got)
		}
	}
	if msg, err := h.CLI("sandbox", "create", h.Name("bad"), "--network", netName, "--egress-allow", "bad..name"); err == nil ||
		!strings.Contains(msg, "bad..name") {
		t.Errorf("sandbox create with a bad rule: %v %q", err, msg)
	}
	// The default network has no resolver of ebpfnet's to learn names by.
	if msg, err := h.CLI("sandbox", "create", h.Name("bad"), "--egress-allow", "a.test"); err == nil ||
		!strings.Contains(msg, `egress rule "a.test"`) || strings.Contains(strings.TrimSpace(msg), "\n") {
		t.Errorf("sandbox create on the default network with a name: %v %q, want one line refusing it", err, msg)
	}
	if _, err := h.CLI("sandbox", "inspect", h.Name("bad")); err == nil {
		t.Error("a refused sandbox create left a sandbox")
	}

	// The list holds while the daemon is down after a kill -9, and after.
	h.Stop(syscall.SIGKILL)
	if echoFrom(h.NS(ci), "tcp", egressOffList+":7777", "") == nil {
		t.Error("with the daemon down, tcp to an address in no prefix was let out")
	}
	mustWork(t, "with the daemon down, tcp to the allowed prefix", echoFrom(h.NS(ci), "tcp", egressInList+":7777", ""))
	h.Start()
	if echoFrom(h.NS(ci), "tcp", egressOffList+":7777", "") == nil {
		t.Error("after a restart, tcp to an address in no prefix was let out")
	}
	mustWork(t, "after a restart, curl a.test", curl(h, ci, "-6", "a.test"))
	if got := h.Sandbox(ci).Egress; got == nil || strings.Join(got.Allow, " ") != "a.test "+egressPrefix {
		t.Errorf("after a restart inspect shows egress %+v", got)
	}

	// A network's list holds for its sandboxes without one.
	listed, member := h.Name("listed"), h.Name("member")
	h.MustCLI("network", "create", "-o", "ebpfnet.egress.allow="+egressPrefix, listed)
	h.MustCLI("sandbox", "create", member, "--network", listed)
	mustWork(t, "tcp to the network's prefix", echoFrom(h.NS(member), "tcp", egressInList+":7777", ""))
	if echoFrom(h.NS(member), "tcp", egressOffList+":7777", "") == nil {
		t.Error("a sandbox of a network with a list reached an address in no prefix")
	}
}

// hasAnswer reports whether inspect's egress shows addr answered for name.
func hasAnswer(e *api.Egress, name, addr string) bool {
	for _, a := range e.Answers {
		if a.Name == name && a.Address == addr && a.TTL > 0 {
			return true
		}
	}
	return false
}

// curl fetches http://NAME:8080/ from a sandbox, resolving the name as
// programs there do, over the family flag gives (-4, -6).
func curl(h *testbed.Host, sandbox, family, name string) error {
	out, err := h.CLI("exec", sandbox, "--", "curl", family, "-sS", "-m", "3", "http://"+name+":8080/")
	if err != nil || !strings.Contains(out, "egress-ok") {
		return fmt.Errorf("curl %s %s: %v: %s", family, name, err, strings.TrimSpace(out))
	}
	return nil
}

// serveHTTP answers every HTTP request on port, both families, in the
// namespace at ns with "egress-ok".
func serveHTTP(t *testing.T, ns string, port int) {
	testbed.ServeTCP(t, ns, "tcp", port, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || strings.TrimSpace(line) == "" {
				break
			}
		}
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\negress-ok"))
	})
}

// serveUDP echoes datagrams to addr in the namespace at ns until the test
// ends.
func serveUDP(t *testing.T, ns, addr string) {
	t.Helper()
	var c net.PacketConn
	if err := namespace.Do(ns, func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := buf[:n]
			if string(msg) == "peer?" {
				msg = []byte(from.String())
			}
			c.WriteTo(msg, from)
		}
	}()
}

// startDnsmasq serves a.test, b.test (A and AAAA) and c.test, a CNAME of
// a.test, from Debian's dnsmasq on egressA:53 in the namespace at ns,
// until the test ends; a.test's records live egressTTL.
func startDnsmasq(t *testing.T, ns string) {
	t.Helper()
	ttl := int(egressTTL / time.Second)
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(ns), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address="+egressDNS, "--port=53", "--user=root",
		"--pid-file="+filepath.Join(t.TempDir(), "dnsmasq.pid"),
		"--host-record=a.test,"+egressA+","+egressA6+","+strconv.Itoa(ttl),
		"--host-record=b.test,"+egressB+","+egressB6,
		"--cname=c.test,a.test,"+strconv.Itoa(ttl))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _, err := testbed.Query(ns, "udp", egressDNS+":53", "a.test", dns.TypeA)
		if err == nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq does not answer a.test: %v %v\n%s", resp, err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

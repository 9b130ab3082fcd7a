package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// upstream is the outside's DNS server: outside.test has one address,
// big.test fifty (truncated over UDP); anything else does not exist.
type upstream struct {
	mu    sync.Mutex
	asked []string // network and name of every query
}

func (u *upstream) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	network := w.RemoteAddr().Network()
	u.mu.Lock()
	u.asked = append(u.asked, network+" "+q.Question[0].Name)
	u.mu.Unlock()
	resp := new(dns.Msg).SetReply(q)
	switch q.Question[0].Name {
	case "outside.test.":
		resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: "outside.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 10)})
	case "big.test.":
		for i := range 50 {
			resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: "big.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(100+i))})
		}
		if network == "udp" {
			resp.Truncate(dns.MinMsgSize)
		}
	default:
		resp.SetRcode(q, dns.RcodeNameError)
	}
	w.WriteMsg(resp)
}

func (u *upstream) saw(query string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Contains(u.asked, query)
}

// resolve asks the embedded DNS server of a sandbox.
func resolve(t *testing.T, h *testbed.Host, sandbox, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	resp, _, err := testbed.Query(h.NS(sandbox), network, "127.0.0.11:53", name, qtype)
	if err != nil {
		t.Fatalf("%s asks %s over %s: %v", sandbox, name, network, err)
	}
	return resp
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

func expectA(t *testing.T, h *testbed.Host, sandbox, name string, want ...string) {
	t.Helper()
	slices.Sort(want)
	for _, network := range []string{"udp", "tcp"} {
		resp := resolve(t, h, sandbox, network, name, dns.TypeA)
		if got := answerAddrs(resp); resp.Rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
			t.Errorf("%s resolving %s over %s: %s %v, want %v", sandbox, name, network, dns.RcodeToString[resp.Rcode], got, want)
		}
	}
}

func expectRcode(t *testing.T, h *testbed.Host, sandbox, name string, rcode int) {
	t.Helper()
	if resp := resolve(t, h, sandbox, "udp", name, dns.TypeA); resp.Rcode != rcode {
		t.Errorf("%s resolving %s: %s %v, want %s", sandbox, name, dns.RcodeToString[resp.Rcode], answerAddrs(resp), dns.RcodeToString[rcode])
	}
}

// modTimes is when a sandbox's hosts and resolv.conf were last written.
func modTimes(t *testing.T, etc string) [2]time.Time {
	t.Helper()
	var out [2]time.Time
	for i, name := range []string{"hosts", "resolv.conf"} {
		fi, err := os.Stat(filepath.Join(etc, name))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = fi.ModTime()
	}
	return out
}

func TestEmbeddedDNS(t *testing.T) {
	h, out := newPublishingHost(t)
	up := &upstream{}
	stopUpstream := testbed.ServeDNS(t, out.NS, testbed.UpstreamDNS+":53", up)
	app, back, internal := h.Name("app"), h.Name("back"), h.Name("int")
	h.MustCLI("network", "create", app)
	h.MustCLI("network", "create", back)
	h.MustCLI("network", "create", "--internal", internal)
	web, cl, db, both, plain, i1, i2 := h.Name("web"), h.Name("cl"), h.Name("db"), h.Name("both"), h.Name("plain"), h.Name("i1"), h.Name("i2")
	h.MustCLI("sandbox", "create", web, "--network", app, "--alias", "www", "--alias", "cache")
	h.MustCLI("sandbox", "create", cl, "--network", app, "--alias", "cache")
	h.MustCLI("sandbox", "create", db, "--network", back)
	h.MustCLI("sandbox", "create", both, "--network", back, "--network", app)
	h.MustCLI("sandbox", "create", plain)
	h.MustCLI("sandbox", "create", i1, "--network", internal)
	h.MustCLI("sandbox", "create", i2, "--network", internal)
	webIP, clIP, dbIP := h.IP(web, app), h.IP(cl, app), h.IP(db, back)

	// resolv.conf: the embedded server on user networks, the host's on the default one.
	if conf := h.MustCLI("exec", cl, "--", "cat", "/etc/resolv.conf"); !strings.Contains(conf, "nameserver 127.0.0.11") || !strings.Contains(conf, "options ndots:0") || !strings.Contains(conf, "search test.example") {
		t.Errorf("resolv.conf on a user network:\n%s", conf)
	}
	if conf := h.MustCLI("exec", plain, "--", "cat", "/etc/resolv.conf"); !strings.Contains(conf, "nameserver "+testbed.UpstreamDNS) || strings.Contains(conf, "127.0.0.11") {
		t.Errorf("resolv.conf on the default network:\n%s", conf)
	}

	// A change that leaves a sandbox's files as they are does not rewrite them.
	etc := h.Sandbox(cl).NetworkSettings.EtcDir
	before := modTimes(t, etc)
	h.MustCLI("sandbox", "create", h.Name("late"), "--network", app)
	if after := modTimes(t, etc); after != before {
		t.Errorf("files of an unaffected sandbox were rewritten: modified %v, then %v", before, after)
	}

	expectA(t, h, cl, web, webIP)
	expectA(t, h, cl, strings.ToUpper(web), webIP)
	expectA(t, h, cl, "www", webIP)
	expectA(t, h, cl, web+"."+app, webIP)
	expectA(t, h, cl, "cache", webIP, clIP)
	expectA(t, h, both, db, dbIP)   // shared on back
	expectA(t, h, both, web, webIP) // shared on app
	expectA(t, h, i1, i2, h.IP(i2, internal))
	// A sandbox on no shared network is not known: the question goes
	// upstream, which has never heard of it.
	expectRcode(t, h, cl, db, dns.RcodeNameError)
	if !up.saw("udp " + db + ".") {
		t.Error("an unknown name was not forwarded upstream")
	}
	// PTR.
	ptr := resolve(t, h, cl, "udp", reverseName(webIP), dns.TypePTR)
	if len(ptr.Answer) != 1 || ptr.Answer[0].(*dns.PTR).Ptr != web+"."+app+"." {
		t.Errorf("PTR of %s: %v", webIP, ptr.Answer)
	}
	// Upstream, over UDP and TCP; a truncated upstream answer is asked again over TCP.
	expectA(t, h, cl, "outside.test", "192.0.2.10")
	if big := resolve(t, h, cl, "tcp", "big.test", dns.TypeA); len(big.Answer) != 50 || !up.saw("tcp big.test.") {
		t.Errorf("big.test over TCP: %d answers; upstream asked %v", len(big.Answer), up.asked)
	}
	if big := resolve(t, h, cl, "udp", "big.test", dns.TypeA); !big.Truncated {
		t.Errorf("big.test over UDP came back untruncated with %d answers", len(big.Answer))
	}
	// Internal networks do not forward.
	expectRcode(t, h, i1, "outside.test", dns.RcodeRefused)

	// Records follow the store at once.
	h.MustCLI("network", "connect", app, db)
	expectA(t, h, cl, db, h.IP(db, app))
	h.MustCLI("network", "disconnect", app, db)
	expectRcode(t, h, cl, db, dns.RcodeNameError)
	h.MustCLI("sandbox", "rm", web)
	expectA(t, h, cl, "cache", clIP)
	expectRcode(t, h, cl, "www", dns.RcodeNameError)
	h.Stop(syscall.SIGKILL)
	h.Start()
	expectA(t, h, cl, both, h.IP(both, app))

	// An upstream that is gone gives SERVFAIL quickly, not a hang.
	stopUpstream()
	resp, took, err := testbed.Query(h.NS(cl), "udp", "127.0.0.11:53", "outside.test", dns.TypeA)
	if err != nil || resp.Rcode != dns.RcodeServerFailure || took > 2500*time.Millisecond {
		t.Errorf("with the upstream gone: %v %v after %s; want SERVFAIL within 2s", resp, err, took)
	}
}

func reverseName(ip string) string {
	p := strings.Split(ip, ".")
	return fmt.Sprintf("%s.%s.%s.%s.in-addr.arpa.", p[3], p[2], p[1], p[0])
}

func TestLinks(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	web, cl := h.Name("web"), h.Name("cl")
	h.MustCLI("sandbox", "create", web)
	h.MustCLI("sandbox", "create", cl, "--link", web+":db")
	entry := func() string {
		for _, line := range strings.Split(h.MustCLI("exec", cl, "--", "cat", "/etc/hosts"), "\n") {
			if strings.HasSuffix(line, "db "+web) {
				return line
			}
		}
		return ""
	}
	if got, want := entry(), h.IP(web, "bridge")+"\tdb "+web; got != want {
		t.Fatalf("hosts entry %q, want %q", got, want)
	}
	// The entry follows web to a new address.
	old := h.IP(web, "bridge")
	h.MustCLI("network", "disconnect", "bridge", web)
	h.MustCLI("network", "connect", "bridge", web)
	if now := h.IP(web, "bridge"); now == old || entry() != now+"\tdb "+web {
		t.Fatalf("after web moved from %s to %s the entry is %q", old, now, entry())
	}
	if out, err := h.CLI("sandbox", "create", h.Name("x"), "--link", "nosuch:db"); err == nil || !strings.Contains(out, "link to nosuch: sandbox nosuch: not found") {
		t.Fatalf("link to a missing sandbox: %v %s", err, out)
	}
}

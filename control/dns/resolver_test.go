package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// writer is a fake dns.ResponseWriter that keeps what is written.
type writer struct {
	network string
	msgs    []*dns.Msg
}

func (w *writer) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 11), Port: 53} }
func (w *writer) RemoteAddr() net.Addr {
	if w.network == "tcp" {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (w *writer) WriteMsg(m *dns.Msg) error { w.msgs = append(w.msgs, m); return nil }
func (w *writer) Write([]byte) (int, error) { return 0, nil }
func (w *writer) Close() error              { return nil }
func (w *writer) TsigStatus() error         { return nil }
func (w *writer) TsigTimersOnly(bool)       {}
func (w *writer) Hijack()                   {}

var (
	ip       = netip.MustParseAddr
	upstream = netip.MustParseAddrPort("10.99.0.2:53")
)

// testView: web on app (dual-stack) and back (IPv4 only), db on back only,
// two "cache" aliases on app (one of them dual-stack), v6only on app with
// no IPv4 address, api on another network, and an asker on an internal
// network.
func testView() *View {
	return NewView(map[string]Asker{
		"client":   {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream}},
		"both":     {Networks: []string{"back", "app"}, Forward: true, Upstreams: []netip.AddrPort{upstream}},
		"internal": {Networks: []string{"int"}, Forward: false},
	}, []Record{
		{Network: "app", NetworkName: "appnet", Names: []string{"web", "0123456789ab", "www"}, Addr: ip("172.19.0.2"), Addr6: ip("fd00:19::2")},
		{Network: "back", NetworkName: "backnet", Names: []string{"web"}, Addr: ip("172.20.0.2")},
		{Network: "back", NetworkName: "backnet", Names: []string{"db"}, Addr: ip("172.20.0.3")},
		{Network: "app", NetworkName: "appnet", Names: []string{"c1", "cache"}, Addr: ip("172.19.0.5"), Addr6: ip("fd00:19::5")},
		{Network: "app", NetworkName: "appnet", Names: []string{"c2", "cache"}, Addr: ip("172.19.0.6")},
		{Network: "app", NetworkName: "appnet", Names: []string{"v6only"}, Addr6: ip("fd00:19::7%eth0")},
		{Network: "other", NetworkName: "othernet", Names: []string{"api"}, Addr: ip("172.21.0.2")},
	})
}

// fakeUpstream answers every query NXDOMAIN, or truncated over UDP, and
// records what it was asked over which network.
type fakeUpstream struct {
	mu       sync.Mutex
	asked    []string
	truncate bool
	block    bool
}

func (f *fakeUpstream) exchange(ctx context.Context, q *dns.Msg, server netip.AddrPort, network string) (*dns.Msg, error) {
	f.mu.Lock()
	f.asked = append(f.asked, network+" "+q.Question[0].Name)
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	resp := new(dns.Msg).SetRcode(q, dns.RcodeNameError)
	resp.Truncated = f.truncate && network == "udp"
	return resp, nil
}

func query(name string, qtype uint16) *dns.Msg {
	return new(dns.Msg).SetQuestion(name, qtype)
}

func ask(r *Resolver, sandbox string, q *dns.Msg, network string) *dns.Msg {
	w := &writer{network: network}
	r.Handler(sandbox).ServeDNS(w, q)
	return w.msgs[0]
}

func addrsOf(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name, sandbox, qname string
		qtype                uint16
		rcode                int
		addrs                []string
		forwarded            bool
	}{
		{"by name", "client", "web.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"case does not matter", "client", "WeB.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"by alias", "client", "www.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"by short ID", "client", "0123456789ab.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"name.network", "client", "web.appnet.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"alias.network", "client", "cache.appnet.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.5", "172.19.0.6"}, false},
		{"an alias of two", "client", "cache.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.5", "172.19.0.6"}, false},
		{"the address on the shared network", "both", "web.", dns.TypeA, dns.RcodeSuccess, []string{"172.20.0.2"}, false},
		{"the other network's name.network", "both", "web.appnet.", dns.TypeA, dns.RcodeSuccess, []string{"172.19.0.2"}, false},
		{"AAAA by name", "client", "web.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::2"}, false},
		{"AAAA by alias", "client", "www.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::2"}, false},
		{"AAAA by short ID", "client", "0123456789ab.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::2"}, false},
		{"AAAA of name.network", "client", "web.appnet.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::2"}, false},
		{"AAAA of an alias of two, one with IPv6", "client", "cache.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::5"}, false},
		{"AAAA of alias.network", "client", "cache.appnet.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::5"}, false},
		{"AAAA of an IPv4-only sandbox: no data, not forwarded", "client", "c2.", dns.TypeAAAA, dns.RcodeSuccess, nil, false},
		{"AAAA on the shared IPv4-only network: no data, as Docker", "both", "web.", dns.TypeAAAA, dns.RcodeSuccess, nil, false},
		{"AAAA without a zone", "client", "v6only.", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:19::7"}, false},
		{"A of an IPv6-only sandbox: no data, not forwarded", "client", "v6only.", dns.TypeA, dns.RcodeSuccess, nil, false},
		{"MX of a known name: no data, not forwarded", "client", "web.", dns.TypeMX, dns.RcodeSuccess, nil, false},
		{"AAAA not on a shared network: forwarded", "client", "db.", dns.TypeAAAA, dns.RcodeNameError, nil, true},
		{"not on a shared network: forwarded", "client", "db.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"another network's sandbox: forwarded", "client", "api.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"an outside name: forwarded", "client", "example.com.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"internal networks do not forward", "internal", "example.com.", dns.TypeA, dns.RcodeRefused, nil, false},
		{"an unknown asker is refused", "stranger", "web.", dns.TypeA, dns.RcodeRefused, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &fakeUpstream{}
			r := newResolver(up.exchange)
			r.SetView(testView())
			q := query(tt.qname, tt.qtype)
			resp := ask(r, tt.sandbox, q, "udp")
			if resp.Rcode != tt.rcode || !slices.Equal(addrsOf(resp), tt.addrs) || resp.Id != q.Id {
				t.Errorf("rcode %s, answers %v, id %d; want %s, %v, %d", dns.RcodeToString[resp.Rcode], addrsOf(resp), resp.Id,
					dns.RcodeToString[tt.rcode], tt.addrs, q.Id)
			}
			if forwarded := len(up.asked) > 0; forwarded != tt.forwarded {
				t.Errorf("forwarded = %v, want %v", forwarded, tt.forwarded)
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	r := newResolver((&fakeUpstream{}).exchange)
	r.SetView(testView())
	firsts := map[string]bool{}
	for range 64 {
		resp := ask(r, "client", query("cache.", dns.TypeA), "udp")
		firsts[resp.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Fatalf("over 64 answers the first address was always one of %v: no round robin", firsts)
	}
}

func TestPTR(t *testing.T) {
	const web6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa."
	tests := []struct {
		name, sandbox, qname string
		rcode                int
		ptr                  string // the answer, "" for none
		forwarded            bool
	}{
		{"IPv4", "client", "2.0.19.172.in-addr.arpa.", dns.RcodeSuccess, "web.appnet.", false},
		{"IPv4 of an alias's second sandbox", "client", "6.0.19.172.in-addr.arpa.", dns.RcodeSuccess, "c2.appnet.", false},
		{"IPv6", "client", web6, dns.RcodeSuccess, "web.appnet.", false},
		{"IPv6 in upper case", "client", strings.ToUpper(web6), dns.RcodeSuccess, "web.appnet.", false},
		{"IPv6 of an IPv6-only sandbox", "client", "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeSuccess, "v6only.appnet.", false},
		{"IPv6 on the asker's second network", "both", "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeSuccess, "c1.appnet.", false},
		{"IPv6 unknown: forwarded", "client", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 too few nibbles: forwarded", "client", "2.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 too many nibbles: forwarded", "client", "0." + web6, dns.RcodeNameError, "", true},
		{"IPv6 a two-digit label: forwarded", "client", "02.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 a non-hex label: forwarded", "client", "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 an empty label: forwarded", "client", ".0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 a signed label: forwarded", "client", "+.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.RcodeNameError, "", true},
		{"the ip6.arpa zone itself: forwarded", "client", "ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv4 as ip6.arpa nibbles: forwarded", "client", "2.0.0.0.3.1.c.a.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", dns.RcodeNameError, "", true},
		{"IPv6 on an internal network, unknown: refused", "internal", web6, dns.RcodeRefused, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &fakeUpstream{}
			r := newResolver(up.exchange)
			r.SetView(testView())
			resp := ask(r, tt.sandbox, query(tt.qname, dns.TypePTR), "udp")
			var ptr string
			if len(resp.Answer) == 1 {
				ptr = resp.Answer[0].(*dns.PTR).Ptr
			}
			if resp.Rcode != tt.rcode || ptr != tt.ptr || len(resp.Answer) > 1 {
				t.Errorf("rcode %s, answers %v; want %s, %q", dns.RcodeToString[resp.Rcode], resp.Answer, dns.RcodeToString[tt.rcode], tt.ptr)
			}
			if forwarded := len(up.asked) > 0; forwarded != tt.forwarded {
				t.Errorf("forwarded = %v, want %v", forwarded, tt.forwarded)
			}
		})
	}
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	up := &fakeUpstream{truncate: true}
	r := newResolver(up.exchange)
	r.SetView(testView())
	ask(r, "client", query("example.com.", dns.TypeA), "udp")
	if !slices.Equal(up.asked, []string{"udp example.com.", "tcp example.com."}) {
		t.Fatalf("asked %v, want UDP then TCP", up.asked)
	}
}

func TestUnreachableUpstreamFailsFast(t *testing.T) {
	r := newResolver((&fakeUpstream{block: true}).exchange)
	r.SetView(testView())
	start := time.Now()
	resp := ask(r, "client", query("example.com.", dns.TypeA), "udp")
	if took := time.Since(start); resp.Rcode != dns.RcodeServerFailure || took > 2*time.Second {
		t.Fatalf("rcode %s after %s; want SERVFAIL within 2s", dns.RcodeToString[resp.Rcode], took)
	}
}

// A flood of forwarded queries from one sandbox is turned away past the
// in-flight limit, and other sandboxes still get answers.
func TestFloodIsContained(t *testing.T) {
	up := &fakeUpstream{block: true}
	r := newResolver(up.exchange)
	r.SetView(testView())
	var wg sync.WaitGroup
	for range maxInFlight {
		wg.Add(1)
		go func() { defer wg.Done(); ask(r, "client", query("slow.example.", dns.TypeA), "udp") }()
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if resp := ask(r, "client", query("one-more.example.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeServerFailure || time.Since(start) > 100*time.Millisecond {
		t.Errorf("past the limit: %s after %s; want SERVFAIL at once", dns.RcodeToString[resp.Rcode], time.Since(start))
	}
	if resp := ask(r, "both", query("web.", dns.TypeA), "udp"); !slices.Equal(addrsOf(resp), []string{"172.20.0.2"}) {
		t.Errorf("another sandbox was not answered during the flood: %v", resp)
	}
	wg.Wait()
}

func TestMalformedQueries(t *testing.T) {
	r := newResolver((&fakeUpstream{}).exchange)
	r.SetView(testView())
	noQuestion := new(dns.Msg)
	twoQuestions := query("web.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	notQuery := query("web.", dns.TypeA)
	notQuery.Opcode = dns.OpcodeUpdate
	for name, q := range map[string]*dns.Msg{"no question": noQuestion, "two questions": twoQuestions, "not a query": notQuery} {
		if resp := ask(r, "client", q, "udp"); resp.Rcode != dns.RcodeFormatError {
			t.Errorf("%s: rcode %s, want FORMERR", name, dns.RcodeToString[resp.Rcode])
		}
	}
}

// FuzzAnswer feeds the resolver whatever unpacks as a DNS message: it must
// answer (or refuse) without panicking.
func FuzzAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{query("web.", dns.TypeA), query("2.0.19.172.in-addr.arpa.", dns.TypePTR),
		query("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.9.1.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR), query("web.", dns.TypeAAAA),
		query("cache.appnet.", dns.TypeANY)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	r := newResolver((&fakeUpstream{}).exchange)
	r.SetView(testView())
	f.Fuzz(func(t *testing.T, data []byte) {
		var q dns.Msg
		if q.Unpack(data) != nil {
			return
		}
		for _, sandbox := range []string{"client", "both", "internal", "stranger"} {
			if resp := r.Answer(sandbox, &q, "udp"); resp == nil {
				t.Fatal("no answer")
			}
		}
	})
}

// TestIPv6Upstream forwards through the pool to a real server on ::1,
// over both networks, by a plain and by a zoned address: the upstream's
// address must reach the dialer as [addr%zone]:port.
func TestIPv6Upstream(t *testing.T) {
	// The answer tells which network the query came in on.
	answers := map[string]string{"udp": "2001:db8::1", "tcp": "2001:db8::2"}
	server := serve(t, "::1", dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		resp := new(dns.Msg).SetReply(q)
		resp.Answer = append(resp.Answer, &dns.AAAA{
			Hdr:  dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60},
			AAAA: net.ParseIP(answers[w.RemoteAddr().Network()]),
		})
		w.WriteMsg(resp)
	}))
	for _, addr := range []string{"::1", "::1%lo"} {
		upstream := netip.AddrPortFrom(netip.MustParseAddr(addr), server.Port())
		r := NewResolver(dialHere)
		r.SetView(NewView(map[string]Asker{"client": {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream}}}, nil))
		for network, want := range answers {
			// A name per network: the answer over one would be cached for the other.
			resp := ask(r, "client", query(network+".outside.example.", dns.TypeAAAA), network)
			if got := addrsOf(resp); resp.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{want}) {
				t.Errorf("via %s over %s: rcode %s, answers %v; want %s", upstream, network, dns.RcodeToString[resp.Rcode], got, want)
			}
		}
		r.closeUpstreams()
	}
}

// serve runs handler on addr (an IP address) over UDP and TCP, on one
// port, for the test's duration.
func serve(t *testing.T, addr string, handler dns.Handler) netip.AddrPort {
	t.Helper()
	var (
		pc   net.PacketConn
		ln   net.Listener
		port int
	)
	// The kernel picks a free UDP port, which a TCP socket of another
	// program may hold: then another port.
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", net.JoinHostPort(addr, "0")); err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		if ln, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port))); err == nil {
			break
		}
		pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			t.Fatal(err)
		}
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port))
}

// dialHere is a Dial for the test's own namespace.
func dialHere(ctx context.Context, network string, server netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, server.String())
}

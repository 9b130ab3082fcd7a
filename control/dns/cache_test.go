package dns

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// scripted is an upstream that answers with reply, counting what it is
// asked; with gate set it holds every query until the gate closes.
type scripted struct {
	mu    sync.Mutex
	asked int
	reply func(q *dns.Msg, network string) *dns.Msg
	gate  chan struct{}
}

func (s *scripted) exchange(ctx context.Context, q *dns.Msg, _ netip.AddrPort, network string) (*dns.Msg, error) {
	s.mu.Lock()
	s.asked++
	s.mu.Unlock()
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.reply(q, network), nil
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}

// clock is a fake time for the cache, moved by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

// reply builds an upstream answer of rcode with the records given.
func reply(rcode int, answer, authority []string) func(*dns.Msg, string) *dns.Msg {
	return func(q *dns.Msg, _ string) *dns.Msg {
		m := new(dns.Msg).SetRcode(q, rcode)
		for _, s := range answer {
			m.Answer = append(m.Answer, rr(s))
		}
		for _, s := range authority {
			m.Ns = append(m.Ns, rr(s))
		}
		return m
	}
}

// TestCache asks the same question twice, after a while, and checks whether
// upstream was asked again and what TTL the second answer carries.
func TestCache(t *testing.T) {
	a := func(ttl string) string { return "example.com. " + ttl + " IN A 192.0.2.1" }
	tests := []struct {
		name      string
		reply     func(*dns.Msg, string) *dns.Msg
		after     time.Duration
		wantAsked int // exchanges with upstream over both questions
		wantRcode int
		wantTTL   int // of the second answer's first record; -1: it has none
	}{
		{"positive: TTL counts down", reply(dns.RcodeSuccess, []string{a("60")}, nil), 10 * time.Second, 1, dns.RcodeSuccess, 50},
		{"positive: whole seconds", reply(dns.RcodeSuccess, []string{a("60")}, nil), 1500 * time.Millisecond, 1, dns.RcodeSuccess, 59},
		{"positive: the RRset's smallest TTL", reply(dns.RcodeSuccess, []string{"example.com. 300 IN CNAME www.example.com.", "www.example.com. 30 IN A 192.0.2.1"}, nil), 10 * time.Second, 1, dns.RcodeSuccess, 20},
		{"positive: expires", reply(dns.RcodeSuccess, []string{a("60")}, nil), 60 * time.Second, 2, dns.RcodeSuccess, 60},
		{"positive: kept an hour at most", reply(dns.RcodeSuccess, []string{a("86400")}, nil), 3599 * time.Second, 1, dns.RcodeSuccess, 1},
		{"positive: asked again after an hour", reply(dns.RcodeSuccess, []string{a("86400")}, nil), time.Hour, 2, dns.RcodeSuccess, 3600},
		{"positive: TTL 0 is not cached", reply(dns.RcodeSuccess, []string{a("0")}, nil), 0, 2, dns.RcodeSuccess, 0},
		{"NXDOMAIN: SOA MINIMUM below its TTL", reply(dns.RcodeNameError, nil, []string{soaOf(300, 30)}), 10 * time.Second, 1, dns.RcodeNameError, 20},
		{"NXDOMAIN: SOA TTL below its MINIMUM", reply(dns.RcodeNameError, nil, []string{soaOf(20, 3600)}), 19 * time.Second, 1, dns.RcodeNameError, 1},
		{"NXDOMAIN: expires", reply(dns.RcodeNameError, nil, []string{soaOf(300, 30)}), 30 * time.Second, 2, dns.RcodeNameError, 30},
		{"NXDOMAIN: kept half an hour at most", reply(dns.RcodeNameError, nil, []string{soaOf(86400, 86400)}), 1800 * time.Second, 2, dns.RcodeNameError, 1800},
		{"NXDOMAIN without SOA: not cached", reply(dns.RcodeNameError, nil, nil), 0, 2, dns.RcodeNameError, -1},
		{"NODATA with SOA", reply(dns.RcodeSuccess, nil, []string{soaOf(300, 60)}), 30 * time.Second, 1, dns.RcodeSuccess, 30},
		{"NODATA without SOA: not cached", reply(dns.RcodeSuccess, nil, []string{"example.com. 3600 IN NS ns.example.com."}), 0, 2, dns.RcodeSuccess, 3600},
		{"SERVFAIL: not cached", reply(dns.RcodeServerFailure, nil, nil), 0, 2, dns.RcodeServerFailure, -1},
		{"REFUSED: not cached", reply(dns.RcodeRefused, nil, nil), 0, 2, dns.RcodeRefused, -1},
		{"truncated even over TCP: not cached", func(q *dns.Msg, network string) *dns.Msg {
			m := reply(dns.RcodeSuccess, []string{a("60")}, nil)(q, network)
			m.Truncated = true
			return m
		}, 0, 2, dns.RcodeSuccess, 60},
		{"larger than 4096 bytes: not cached", func(q *dns.Msg, network string) *dns.Msg {
			m := new(dns.Msg).SetReply(q)
			for i := range 50 {
				m.Answer = append(m.Answer, rr("example.com. 60 IN TXT "+strings.Repeat("x", 90)+string(rune('a'+i%26))))
			}
			return m
		}, 0, 2, dns.RcodeSuccess, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &scripted{reply: tt.reply}
			r := newResolver(up.exchange)
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			r.now = c.now
			r.SetView(testView())
			ask(r, "client", query("example.com.", dns.TypeA), "tcp")
			c.t = c.t.Add(tt.after)
			q := query("example.com.", dns.TypeA)
			resp := ask(r, "client", q, "tcp")
			ttl := -1
			if rrs := append(resp.Answer, resp.Ns...); len(rrs) > 0 {
				ttl = int(rrs[0].Header().Ttl)
			}
			if up.count() != tt.wantAsked || resp.Rcode != tt.wantRcode || ttl != tt.wantTTL || resp.Id != q.Id {
				t.Errorf("upstream asked %d times, then %s with TTL %d, id %d; want %d, %s, %d, id %d", up.count(),
					dns.RcodeToString[resp.Rcode], ttl, resp.Id, tt.wantAsked, dns.RcodeToString[tt.wantRcode], tt.wantTTL, q.Id)
			}
		})
	}
}

// soaOf is the SOA record of a negative answer, with its TTL and MINIMUM.
func soaOf(ttl, minimum int) string {
	return "example.com. " + strconv.Itoa(ttl) + " IN SOA ns.example.com. admin.example.com. 1 7200 3600 1209600 " + strconv.Itoa(minimum)
}

// TestCacheKeys asks a question, then another, and checks whether the
// second was answered from the first's answer.
func TestCacheKeys(t *testing.T) {
	other := netip.MustParseAddrPort("10.99.0.3:53")
	view := NewView(map[string]Asker{
		"client":    {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream}},
		"neighbour": {Networks: []string{"back"}, Forward: true, Upstreams: []netip.AddrPort{upstream}},
		"elsewhere": {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{other}},
		"both":      {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream, other}},
	}, nil)
	withEDNS := func(q *dns.Msg, do bool) *dns.Msg { return q.SetEdns0(1232, do) }
	tests := []struct {
		name          string
		first, second string // askers
		q1, q2        *dns.Msg
		shared        bool
	}{
		{"another sandbox with the same upstreams", "client", "neighbour", query("example.com.", dns.TypeA), query("example.com.", dns.TypeA), true},
		{"another upstream", "client", "elsewhere", query("example.com.", dns.TypeA), query("example.com.", dns.TypeA), false},
		{"more upstreams", "client", "both", query("example.com.", dns.TypeA), query("example.com.", dns.TypeA), false},
		{"case does not matter", "client", "client", query("example.com.", dns.TypeA), query("ExAmPlE.CoM.", dns.TypeA), true},
		{"another type", "client", "client", query("example.com.", dns.TypeA), query("example.com.", dns.TypeAAAA), false},
		{"another class", "client", "client", query("example.com.", dns.TypeA), func() *dns.Msg {
			q := query("example.com.", dns.TypeA)
			q.Question[0].Qclass = dns.ClassCHAOS
			return q
		}(), false},
		{"DO set", "client", "client", query("example.com.", dns.TypeA), withEDNS(query("example.com.", dns.TypeA), true), false},
		{"EDNS without DO", "client", "client", query("example.com.", dns.TypeA), withEDNS(query("example.com.", dns.TypeA), false), true},
		{"EDNS, then none", "client", "client", withEDNS(query("example.com.", dns.TypeA), false), query("example.com.", dns.TypeA), true},
		{"CD set", "client", "client", query("example.com.", dns.TypeA), func() *dns.Msg {
			q := query("example.com.", dns.TypeA)
			q.CheckingDisabled = true
			return q
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &scripted{reply: func(q *dns.Msg, _ string) *dns.Msg {
				m := new(dns.Msg).SetReply(q)
				m.Answer = append(m.Answer, rr(q.Question[0].Name+" 60 IN A 192.0.2.1"))
				if opt := q.IsEdns0(); opt != nil {
					m.SetEdns0(4096, opt.Do())
				}
				return m
			}}
			r := newResolver(up.exchange)
			r.SetView(view)
			ask(r, tt.first, tt.q1, "udp")
			resp := ask(r, tt.second, tt.q2, "udp")
			if shared := up.count() == 1; shared != tt.shared {
				t.Errorf("answered from the cache: %v, want %v", shared, tt.shared)
			}
			// Whether cached or not, the answer is the asker's: its ID, its
			// question as spelled, an OPT record only if it sent one.
			if resp.Id != tt.q2.Id || resp.Question[0] != tt.q2.Question[0] || (resp.IsEdns0() != nil) != (tt.q2.IsEdns0() != nil) {
				t.Errorf("answer %v to %v", resp, tt.q2)
			}
		})
	}
}

// A forwarded answer never shadows a name of the asker's networks, and
// those are never cached.
func TestViewBeforeCache(t *testing.T) {
	up := &scripted{reply: reply(dns.RcodeSuccess, []string{"db. 600 IN A 192.0.2.1"}, nil)}
	r := newResolver(up.exchange)
	r.SetView(testView())
	if got := addrsOf(ask(r, "client", query("db.", dns.TypeA), "udp")); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("db from upstream: %v", got)
	}
	ask(r, "client", query("web.", dns.TypeA), "udp")
	// db joins the asker's network: its address there, not the cached one.
	r.SetView(testView().Apply(Change{Put: []Record{{Network: "app", NetworkName: "appnet", Names: []string{"db"}, Addr: ip("172.19.0.9")}}}))
	if got := addrsOf(ask(r, "client", query("db.", dns.TypeA), "udp")); len(got) != 1 || got[0] != "172.19.0.9" {
		t.Errorf("db after it joined the network: %v, want 172.19.0.9", got)
	}
	if s := r.Stats(); s.CacheEntries != 1 || s.Local != 2 || s.Forwarded != 1 || s.CacheHit != 0 {
		t.Errorf("stats %+v, want one entry (db from upstream), two local answers", s)
	}
}

// Identical questions asked while one is on its way upstream wait for its
// answer: upstream is asked once, and each asker gets its own ID.
func TestCoalescing(t *testing.T) {
	const n = 16
	up := &scripted{reply: reply(dns.RcodeSuccess, []string{"example.com. 60 IN A 192.0.2.1"}, nil), gate: make(chan struct{})}
	r := newResolver(up.exchange)
	r.SetView(testView())
	qs := make([]*dns.Msg, n)
	resps := make([]*dns.Msg, n)
	var wg sync.WaitGroup
	for i := range n {
		qs[i] = query("example.com.", dns.TypeA)
		sandbox := []string{"client", "both"}[i%2] // same upstreams, other networks
		wg.Go(func() { resps[i] = ask(r, sandbox, qs[i], "udp") })
	}
	// Let the first through once every one of them has missed the cache;
	// a late one finds the answer in the cache.
	waitFor(t, func() bool { return up.count() == 1 && r.Stats().CacheMisses == n })
	close(up.gate)
	wg.Wait()
	for i, resp := range resps {
		if resp.Id != qs[i].Id || len(resp.Answer) != 1 {
			t.Errorf("asker %d: id %d, %d answers; want id %d, one answer", i, resp.Id, len(resp.Answer), qs[i].Id)
		}
	}
	if s := r.Stats(); up.count() != 1 || s.Forwarded+s.CacheHit != n || s.Coalesced == 0 {
		t.Errorf("upstream asked %d times, stats %+v; want once, %d answered", up.count(), s, n)
	}
}

// waitFor polls cond until it holds, failing after a generous bound that
// only a hung test reaches.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}

// TestUpstreamLimit fills the global bound on queries in flight with
// queries a real server holds, from two sandboxes: a third sandbox, under
// its own limit, is answered SERVFAIL while they are still held, and
// cached answers still flow.
func TestUpstreamLimit(t *testing.T) {
	var mu sync.Mutex
	held := 0
	release := make(chan struct{})
	server := serve(t, "127.0.0.1", dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		resp := new(dns.Msg).SetReply(q)
		resp.Answer = append(resp.Answer, rr(q.Question[0].Name+" 60 IN A 192.0.2.1"))
		if strings.HasPrefix(q.Question[0].Name, "slow") {
			mu.Lock()
			held++
			mu.Unlock()
			<-release
		}
		w.WriteMsg(resp)
	}))
	up := []netip.AddrPort{server}
	r := NewResolver(dialHere)
	t.Cleanup(r.closeUpstreams)
	r.upstream = make(limit, 2)
	r.SetView(NewView(map[string]Asker{
		"a": {Networks: []string{"n"}, Forward: true, Upstreams: up},
		"b": {Networks: []string{"n"}, Forward: true, Upstreams: up},
		"c": {Networks: []string{"n"}, Forward: true, Upstreams: up},
	}, nil))
	ask(r, "c", query("cached.example.", dns.TypeA), "udp")

	var wg sync.WaitGroup
	slow := make([]*dns.Msg, 2)
	for i, sandbox := range []string{"a", "b"} {
		wg.Go(func() { slow[i] = ask(r, sandbox, query("slow"+sandbox+".example.", dns.TypeA), "udp") })
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return held == 2 })
	if resp := ask(r, "c", query("more.example.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("past the bound: %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	if resp := ask(r, "c", query("cached.example.", dns.TypeA), "udp"); len(resp.Answer) != 1 {
		t.Errorf("a cached name while upstream is busy: %v", resp)
	}
	close(release)
	wg.Wait()
	for i, resp := range slow {
		if len(resp.Answer) != 1 {
			t.Errorf("held query %d: %v", i, resp)
		}
	}
	if s := r.Stats(); s.Dropped != 1 || s.Forwarded != 3 || s.CacheHit != 1 {
		t.Errorf("stats %+v, want 1 dropped, 3 forwarded, 1 cache hit", s)
	}
}

// TestPool forwards through the pool of sockets to a real server on
// 127.0.0.1 that misbehaves by name.
func TestPool(t *testing.T) {
	server := serve(t, "127.0.0.1", dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		name := q.Question[0].Name
		resp := new(dns.Msg).SetReply(q)
		resp.Answer = append(resp.Answer, rr(name+" 60 IN A 192.0.2.1"))
		switch {
		case strings.HasPrefix(name, "silent"):
			return
		case strings.HasPrefix(name, "forged"):
			// Replies that are not to this query come first: another ID,
			// another name, the name in other letters, not a response.
			for _, forge := range []func(*dns.Msg){
				func(m *dns.Msg) { m.Id++ },
				func(m *dns.Msg) { m.Question[0].Name = "other.example." },
				func(m *dns.Msg) { m.Question[0].Name = strings.ToUpper(name) },
				func(m *dns.Msg) { m.Response = false },
			} {
				f := resp.Copy()
				f.Answer[0].(*dns.A).A = net.IPv4(203, 0, 113, 1)
				forge(f)
				w.WriteMsg(f)
			}
		case strings.HasPrefix(name, "big") && w.RemoteAddr().Network() == "udp":
			resp.Answer = nil
			resp.Truncated = true
		}
		w.WriteMsg(resp)
	}))
	dials := map[string]int{}
	var mu sync.Mutex
	r := NewResolver(func(ctx context.Context, network string, s netip.AddrPort) (net.Conn, error) {
		mu.Lock()
		dials[network]++
		mu.Unlock()
		return dialHere(ctx, network, s)
	})
	t.Cleanup(r.closeUpstreams)
	closed := netip.AddrPortFrom(server.Addr(), freePort(t))
	r.SetView(NewView(map[string]Asker{
		"client": {Networks: []string{"n"}, Forward: true, Upstreams: []netip.AddrPort{server}},
		"gone":   {Networks: []string{"n"}, Forward: true, Upstreams: []netip.AddrPort{closed}},
	}, nil))
	tests := []struct {
		name, sandbox, qname, network string
		rcode                         int
		addrs                         []string
	}{
		{"an answer", "client", "plain.example.", "udp", dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"over TCP", "client", "tcp.example.", "tcp", dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"forged replies are ignored", "client", "forged.example.", "udp", dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"truncated: asked again over TCP", "client", "big.example.", "udp", dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"no reply: SERVFAIL at the end of the budget", "client", "silent.example.", "udp", dns.RcodeServerFailure, nil},
		{"the socket still works after", "client", "after.example.", "udp", dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"nobody listening: SERVFAIL", "gone", "plain.example.", "udp", dns.RcodeServerFailure, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := query(tt.qname, dns.TypeA)
			resp := ask(r, tt.sandbox, q, tt.network)
			if resp.Rcode != tt.rcode || strings.Join(addrsOf(resp), ",") != strings.Join(tt.addrs, ",") || resp.Id != q.Id {
				t.Errorf("%s %v id %d; want %s %v id %d", dns.RcodeToString[resp.Rcode], addrsOf(resp), resp.Id, dns.RcodeToString[tt.rcode], tt.addrs, q.Id)
			}
		})
	}
	// Many queries later, the UDP sockets are still the few first opened.
	for i := range 200 {
		ask(r, "client", query("n"+strconv.Itoa(i)+".example.", dns.TypeA), "udp")
	}
	mu.Lock()
	defer mu.Unlock()
	if dials["udp"] > 2*socketsPerServer || dials["tcp"] != 2 {
		t.Errorf("dialed %v for %d queries; want at most %d UDP sockets (two servers) and a TCP connection per TCP query", dials, 200+len(tests), 2*socketsPerServer)
	}
}

// freePort is a UDP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) uint16 {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// TestStats counts one outcome per query.
func TestStats(t *testing.T) {
	up := &scripted{reply: func(q *dns.Msg, network string) *dns.Msg {
		if q.Question[0].Name == "fail." {
			return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
		}
		return reply(dns.RcodeNameError, nil, []string{soaOf(60, 60)})(q, network)
	}}
	r := newResolver(up.exchange)
	r.SetView(testView())
	for _, q := range []struct {
		sandbox string
		q       *dns.Msg
	}{
		{"client", query("web.", dns.TypeA)},
		{"client", query("2.0.19.172.in-addr.arpa.", dns.TypePTR)},
		{"client", query("nowhere.example.", dns.TypeA)},
		{"both", query("nowhere.example.", dns.TypeA)},
		{"client", query("fail.", dns.TypeA)},
		{"internal", query("nowhere.example.", dns.TypeA)},
		{"stranger", query("web.", dns.TypeA)},
		{"client", new(dns.Msg)},
	} {
		ask(r, q.sandbox, q.q, "udp")
	}
	want := Stats{Local: 2, CacheHit: 1, Forwarded: 2, Refused: 2, Malformed: 1, NXDomain: 2, CacheMisses: 2, CacheEntries: 1}
	if got := r.Stats(); got != want {
		t.Errorf("stats %+v\nwant  %+v", got, want)
	}
}

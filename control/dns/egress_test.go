package dns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/egress"
)

// cnameUpstream answers a.test (A and AAAA, TTL 300), short.test (TTL 0),
// www.test as a CNAME to a.test, and every other name with an address
// too, counting what it was asked.
type cnameUpstream struct {
	mu    sync.Mutex
	asked []string
}

func (u *cnameUpstream) exchange(_ context.Context, q *dns.Msg, _ netip.AddrPort, _ string) (*dns.Msg, error) {
	u.mu.Lock()
	u.asked = append(u.asked, q.Question[0].Name)
	u.mu.Unlock()
	resp := new(dns.Msg).SetReply(q)
	name, qtype := q.Question[0].Name, q.Question[0].Qtype
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	target, ttl := name, "300"
	switch name {
	case "www.test.":
		resp.Answer = append(resp.Answer, rr("www.test. 60 IN CNAME a.test."))
		target = "a.test."
	case "short.test.":
		ttl = "0"
	}
	if qtype == dns.TypeA {
		resp.Answer = append(resp.Answer, rr(target+" "+ttl+" IN A 192.0.2.10"))
	} else if qtype == dns.TypeAAAA {
		resp.Answer = append(resp.Answer, rr(target+" "+ttl+" IN AAAA 2001:db8::10"))
	}
	return resp, nil
}

// learnt is a Learn hook that keeps what it was told.
type learnt struct {
	mu    sync.Mutex
	calls []string
	ttls  []time.Duration
	fail  bool
}

func (l *learnt) learn(sources []netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return errors.New("map full")
	}
	l.calls = append(l.calls, name+" "+addrs[0].String()+" for "+sources[0].String())
	l.ttls = append(l.ttls, ttl)
	return nil
}

var (
	listedSource  = ip("172.19.0.9")
	listedSource6 = ip("fd00:19::9")
)

func egressResolver(t *testing.T) (*Resolver, *cnameUpstream, *learnt) {
	t.Helper()
	up, l := &cnameUpstream{}, &learnt{}
	r := newResolver(up.exchange)
	r.LearnWith(l.learn)
	list := egress.List{"a.test", "www.test", "short.test", "*.example.com", "10.90.0.0/28"}
	r.SetView(NewView(map[string]Asker{
		"listed": {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream},
			Egress: []EgressList{{Sources: []netip.Addr{listedSource, listedSource6}, List: list}}},
		// One endpoint listed, one not: it may still ask for anything.
		"half": {Networks: []string{"app"}, Forward: true, Upstreams: []netip.AddrPort{upstream},
			Egress: []EgressList{{Sources: []netip.Addr{listedSource}, List: list}}, Unlisted: true},
	}, []Record{{Network: "app", NetworkName: "appnet", Names: []string{"web"}, Addr: ip("172.19.0.2")}}))
	return r, up, l
}

// A sandbox with a list has the addresses answered for an allowed name
// let through before it gets the answer, for the answer's TTL (a CNAME
// chain's least, at least minLearnTTL), from a cache hit too.
func TestEgressAnswersLearnt(t *testing.T) {
	r, _, l := egressResolver(t)
	for _, c := range []struct {
		qname string
		qtype uint16
		want  string
		ttl   time.Duration
	}{
		{"a.test.", dns.TypeA, "a.test. 192.0.2.10 for 172.19.0.9", 300 * time.Second},
		{"A.Test.", dns.TypeAAAA, "a.test. 2001:db8::10 for 172.19.0.9", 300 * time.Second},
		{"www.test.", dns.TypeA, "www.test. 192.0.2.10 for 172.19.0.9", 60 * time.Second},
		{"short.test.", dns.TypeA, "short.test. 192.0.2.10 for 172.19.0.9", minLearnTTL},
		{"api.example.com.", dns.TypeA, "api.example.com. 192.0.2.10 for 172.19.0.9", 300 * time.Second},
	} {
		l.calls, l.ttls = nil, nil
		resp := ask(r, "listed", query(c.qname, c.qtype), "udp")
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 {
			t.Fatalf("%s: %s", c.qname, resp)
		}
		if !slices.Equal(l.calls, []string{c.want}) || l.ttls[0] != c.ttl {
			t.Errorf("%s: learnt %q for %v, want %q for %v", c.qname, l.calls, l.ttls, c.want, c.ttl)
		}
	}
	// Answered from the cache, the address is let through again, for
	// what is left of the TTL.
	l.calls = nil
	if resp := ask(r, "listed", query("a.test.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeSuccess || len(l.calls) != 1 {
		t.Errorf("a cached answer: %d, learnt %q", resp.Rcode, l.calls)
	}
}

// A name no list allows is refused, not asked upstream, where its labels
// could carry out what the list keeps in; the names of the sandbox's
// networks still answer. A sandbox with an endpoint that has no list
// asks upstream as ever, and learns nothing for names its list does not
// allow.
func TestEgressNamesRefused(t *testing.T) {
	r, up, l := egressResolver(t)
	for _, name := range []string{"b.test.", "example.com.", "secret.attacker.test.", "10.2.0.192.in-addr.arpa."} {
		if resp := ask(r, "listed", query(name, dns.TypeA), "udp"); resp.Rcode != dns.RcodeRefused {
			t.Errorf("%s: rcode %d, want REFUSED", name, resp.Rcode)
		}
	}
	if resp := ask(r, "listed", query("web.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("a name of its network: %s", resp)
	}
	if len(up.asked) != 0 || len(l.calls) != 0 {
		t.Errorf("asked upstream %q, learnt %q; want nothing", up.asked, l.calls)
	}
	if resp := ask(r, "half", query("b.test.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeSuccess || len(l.calls) != 0 {
		t.Errorf("an unlisted endpoint's sandbox: %s, learnt %q", resp, l.calls)
	}
}

// An answer whose addresses cannot be let through is not given: the
// sandbox would connect and be refused.
func TestEgressLearnFailure(t *testing.T) {
	r, _, l := egressResolver(t)
	l.fail = true
	if resp := ask(r, "listed", query("a.test.", dns.TypeA), "udp"); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %d, want SERVFAIL", resp.Rcode)
	}
}

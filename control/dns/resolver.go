package dns

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

const (
	// ttl of local answers, as Docker's.
	ttl = 600
	// forwardBudget bounds a forwarded query: an unreachable upstream
	// gives SERVFAIL within it, not a hang.
	forwardBudget = 1800 * time.Millisecond
	// maxInFlight bounds the forwarded queries of one sandbox, so a flood
	// from one sandbox never starves the others.
	maxInFlight = 64
	// maxUpstream bounds the queries in flight to upstream servers from
	// all sandboxes together, which bounds the daemon's goroutines and
	// sockets' backlog and spares the upstream a flood: four sandboxes at
	// their own limit fill it, so one alone never takes more than a
	// quarter.
	maxUpstream = 4 * maxInFlight
)

// errBusy is what a query past the upstream limit gets.
var errBusy = errors.New("too many queries in flight to upstream servers")

// Resolver answers queries against the current View.
type Resolver struct {
	view     atomic.Pointer[View]
	exchange exchange
	pool     *pool // nil when exchange is a test's
	cache    *cache
	flights  flights
	upstream limit // queries in flight to upstream, from every sandbox
	now      func() time.Time
	mu       sync.Mutex
	inFlight map[string]limit // by sandbox ID
	perAsker int              // the size of each of those limits
	counts   [numOutcomes]atomic.Uint64
	nxdomain atomic.Uint64
	misses   atomic.Uint64
	shared   atomic.Uint64
	learn    Learn
}

// NewResolver returns a resolver with an empty view that forwards over
// sockets opened with dial.
func NewResolver(dial Dial) *Resolver {
	p := newPool(dial)
	r := newResolver(p.exchange)
	r.pool = p
	return r
}

func newResolver(ex exchange) *Resolver {
	r := &Resolver{exchange: ex, cache: newCache(cacheSize), flights: flights{calls: map[cacheKey]*call{}},
		upstream: make(limit, maxUpstream), now: time.Now, inFlight: map[string]limit{}, perAsker: maxInFlight}
	r.view.Store(NewView(nil, nil))
	return r
}

// SetView swaps in a new view; queries already being answered finish with
// the old one. Sockets to servers no sandbox uses any more are closed.
func (r *Resolver) SetView(v *View) {
	r.view.Store(v)
	if r.pool != nil {
		servers := map[netip.AddrPort]bool{}
		for s := range v.upstreams {
			servers[s] = true
		}
		r.pool.keep(servers)
	}
}

// closeUpstreams closes every socket to upstream servers; a later query
// opens them again.
func (r *Resolver) closeUpstreams() {
	if r.pool != nil {
		r.pool.keep(nil)
	}
}

// Handler answers the queries of one sandbox.
func (r *Resolver) Handler(sandboxID string) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		network := w.RemoteAddr().Network()
		resp := r.Answer(sandboxID, q, network)
		if network == "udp" {
			fitUDP(q, resp)
		}
		w.WriteMsg(resp)
	})
}

// fitUDP truncates an answer over UDP to what the client can take; past
// that it sees TC and asks over TCP.
func fitUDP(q, resp *dns.Msg) {
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	resp.Truncate(size)
}

// Answer answers q from sandboxID, received over network ("udp" or "tcp").
func (r *Resolver) Answer(sandboxID string, q *dns.Msg, network string) *dns.Msg {
	resp, how := r.answer(sandboxID, q, network, true)
	return r.count(resp, how)
}

// AnswerNow answers q when it can without waiting for an upstream server:
// a name of the sandbox's networks, a refusal, a cached answer. ok is
// false for a query that goes upstream: Answer answers it.
func (r *Resolver) AnswerNow(sandboxID string, q *dns.Msg, network string) (resp *dns.Msg, ok bool) {
	resp, how := r.answer(sandboxID, q, network, false)
	if how == pending {
		return nil, false
	}
	return r.count(resp, how), true
}

func (r *Resolver) count(resp *dns.Msg, how outcome) *dns.Msg {
	r.counts[how].Add(1)
	if resp.Rcode == dns.RcodeNameError {
		r.nxdomain.Add(1)
	}
	return resp
}

// answer answers q; without wait, a query that has to go upstream gets
// the outcome pending and no answer.
func (r *Resolver) answer(sandboxID string, q *dns.Msg, network string, wait bool) (*dns.Msg, outcome) {
	resp := new(dns.Msg)
	if len(q.Question) != 1 || q.Opcode != dns.OpcodeQuery {
		return resp.SetRcode(q, dns.RcodeFormatError), malformed
	}
	resp.SetReply(q)
	resp.RecursionAvailable = true
	v := r.view.Load()
	asker, ok := v.Asker(sandboxID)
	if !ok {
		return resp.SetRcode(q, dns.RcodeRefused), refused
	}
	question := q.Question[0]
	name := strings.ToLower(question.Name)
	if question.Qclass == dns.ClassINET {
		if addrs, ok := v.lookup(asker, name); ok {
			// A known name answers for itself, as Docker's resolver does:
			// the addresses of the asked family, and no data (NOERROR, no
			// answer) for a family or type it lacks, never NXDOMAIN nor a
			// trip upstream that could answer for it.
			resp.Answer = addressRRs(question, addrs)
			return resp, local
		}
		if question.Qtype == dns.TypePTR {
			if addr, ok := ptrAddr(name); ok {
				if target, ok := v.reverse(asker, addr); ok {
					resp.Answer = append(resp.Answer, &dns.PTR{
						Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
						Ptr: target,
					})
					return resp, local
				}
			}
		}
	}
	sources, listed := asker.egressSources(name)
	if !asker.Forward || len(asker.Upstreams) == 0 || (listed && len(sources) == 0) {
		return resp.SetRcode(q, dns.RcodeRefused), refused
	}
	resp, how := r.forward(sandboxID, asker, q, network, wait)
	if len(sources) > 0 && (how == forwarded || how == cacheHit) {
		if err := r.learnAnswer(sources, name, resp); err != nil {
			return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure), failed
		}
	}
	return resp, how
}

// minLearnTTL is the least time an answered address stays reachable: an
// answer of TTL 0 must still serve the connect that asked for it.
const minLearnTTL = 5 * time.Second

// Learn lets sources reach addrs, which the resolver answered for name,
// for ttl. The answer waits for it: the sandbox's first connect must
// find its way open.
type Learn func(sources []netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error

// LearnWith makes learn what the resolver tells of the addresses it
// answers for names that egress lists allow.
func (r *Resolver) LearnWith(learn Learn) { r.learn = learn }

// learnAnswer hands the A and AAAA records of resp to the learn hook, for
// the least TTL of the answer (a CNAME chain's included: the name asked
// stands for all of it), at least minLearnTTL.
func (r *Resolver) learnAnswer(sources []netip.Addr, name string, resp *dns.Msg) error {
	if r.learn == nil || resp.Rcode != dns.RcodeSuccess {
		return nil
	}
	var (
		addrs []netip.Addr
		ttl   = uint32(math.MaxUint32)
	)
	for _, rr := range resp.Answer {
		ttl = min(ttl, rr.Header().Ttl)
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	return r.learn(sources, name, addrs, max(time.Duration(ttl)*time.Second, minLearnTTL))
}

// addressRRs are the A or AAAA records of addrs that question asks for,
// in random order so that clients spread over the addresses of an alias.
func addressRRs(question dns.Question, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	for _, i := range rand.Perm(len(addrs)) {
		a := addrs[i]
		hdr := dns.RR_Header{Name: question.Name, Rrtype: question.Qtype, Class: dns.ClassINET, Ttl: ttl}
		switch {
		case question.Qtype == dns.TypeA && a.Is4():
			rrs = append(rrs, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case question.Qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return rrs
}

// ptrAddr parses a reverse name: an in-addr.arpa name of four decimal
// labels, or an ip6.arpa name of 32 one-digit hex labels. Anything else
// (a partial name, a zone apex, labels of another shape) is not an address
// of ours and goes upstream, as with Docker.
func ptrAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
		return a, err == nil && a.Is4()
	}
	rest, ok := strings.CutSuffix(name, ".ip6.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	nibbles := strings.Split(rest, ".")
	if len(nibbles) != 32 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, n := range nibbles {
		if len(n) != 1 {
			return netip.Addr{}, false
		}
		d, err := strconv.ParseUint(n, 16, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		// The first label is the lowest nibble of the last byte.
		pos := 31 - i
		b[pos/2] |= byte(d) << (4 * (1 - pos%2))
	}
	return netip.AddrFrom16(b), true
}

// forward answers from the cache or, past it, from the asker's upstream
// servers. The view was asked first, so a cached answer never shadows a
// name of the asker's networks.
func (r *Resolver) forward(sandboxID string, asker Asker, q *dns.Msg, network string, wait bool) (*dns.Msg, outcome) {
	key, now := keyOf(q, asker), r.now()
	if e := r.cache.get(key, now); e != nil {
		return e.answer(q, now), cacheHit
	}
	if !wait {
		return nil, pending
	}
	r.misses.Add(1)
	// Waiting for an identical query takes a slot too: it holds a
	// goroutine as long as the query it waits for.
	slots := r.slots(sandboxID)
	if !slots.take() {
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure), dropped
	}
	defer slots.give()
	e, err, shared := r.flights.do(key, func() (*entry, error) {
		// An identical query may have filled the cache since the miss.
		if e := r.cache.get(key, r.now()); e != nil {
			return e, nil
		}
		return r.ask(key, asker, q, network)
	})
	if shared {
		r.shared.Add(1)
	}
	switch {
	case errors.Is(err, errBusy):
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure), dropped
	case err != nil:
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure), failed
	}
	return e.answer(q, r.now()), forwarded
}

// ask asks the asker's upstream servers in turn, over the network the
// query came in on, retrying over TCP when a UDP answer is truncated, and
// caches what may be cached.
func (r *Resolver) ask(key cacheKey, asker Asker, q *dns.Msg, network string) (*entry, error) {
	if !r.upstream.take() {
		return nil, errBusy
	}
	defer r.upstream.give()
	ctx, cancel := context.WithTimeout(context.Background(), forwardBudget)
	defer cancel()
	if network != "tcp" {
		network = "udp"
	}
	var err error
	for _, server := range asker.Upstreams {
		var resp *dns.Msg
		resp, err = r.exchange(ctx, q, server, network)
		if err == nil && resp.Truncated && network == "udp" {
			resp, err = r.exchange(ctx, q, server, "tcp")
		}
		if err == nil {
			e := newEntry(resp, r.now())
			r.cache.put(key, e)
			return e, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// limit is a counting semaphore that never waits: past its size, the
// caller answers SERVFAIL at once rather than stall its client.
type limit chan struct{}

func (l limit) take() bool {
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l limit) give() { <-l }

func (r *Resolver) slots(sandboxID string) limit {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.inFlight[sandboxID]
	if !ok {
		s = make(limit, r.perAsker)
		r.inFlight[sandboxID] = s
	}
	return s
}

// forget drops a sandbox's in-flight accounting when its resolver goes.
func (r *Resolver) forget(sandboxID string) {
	r.mu.Lock()
	delete(r.inFlight, sandboxID)
	r.mu.Unlock()
}

// flights coalesces identical misses: while a question is being asked
// upstream, the same question from anyone with the same upstreams waits
// for that answer instead of asking again.
type flights struct {
	mu    sync.Mutex
	calls map[cacheKey]*call
}

type call struct {
	done chan struct{}
	e    *entry
	err  error
}

// do runs ask once for all callers of key at the same time; shared tells a
// caller that another one asked for it.
func (f *flights) do(key cacheKey, ask func() (*entry, error)) (e *entry, err error, shared bool) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		<-c.done
		return c.e, c.err, true
	}
	c := &call{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()
	c.e, c.err = ask()
	f.mu.Lock()
	delete(f.calls, key)
	f.mu.Unlock()
	close(c.done)
	return c.e, c.err, false
}

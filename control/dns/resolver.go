package dns

import (
	"context"
	"math/rand/v2"
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
)

// Exchange sends a query to an upstream server over "udp" or "tcp". The
// control plane supplies one that runs in the dataplane's namespace.
type Exchange func(ctx context.Context, q *dns.Msg, server netip.AddrPort, network string) (*dns.Msg, error)

// Resolver answers queries against the current View.
type Resolver struct {
	view     atomic.Pointer[View]
	exchange Exchange
	mu       sync.Mutex
	inFlight map[string]chan struct{} // by sandbox ID
}

// NewResolver returns a resolver with an empty view.
func NewResolver(exchange Exchange) *Resolver {
	r := &Resolver{exchange: exchange, inFlight: map[string]chan struct{}{}}
	r.view.Store(NewView(nil, nil))
	return r
}

// SetView swaps in a new view; queries already being answered finish with
// the old one.
func (r *Resolver) SetView(v *View) { r.view.Store(v) }

// Handler answers the queries of one sandbox.
func (r *Resolver) Handler(sandboxID string) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		network := w.RemoteAddr().Network()
		resp := r.Answer(sandboxID, q, network)
		if network == "udp" {
			// What the client can take; past that it sees TC and asks over TCP.
			size := dns.MinMsgSize
			if opt := q.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			resp.Truncate(size)
		}
		w.WriteMsg(resp)
	})
}

// Answer answers q from sandboxID, received over network ("udp" or "tcp").
func (r *Resolver) Answer(sandboxID string, q *dns.Msg, network string) *dns.Msg {
	resp := new(dns.Msg)
	if len(q.Question) != 1 || q.Opcode != dns.OpcodeQuery {
		return resp.SetRcode(q, dns.RcodeFormatError)
	}
	resp.SetReply(q)
	resp.RecursionAvailable = true
	v := r.view.Load()
	asker, ok := v.Sandboxes[sandboxID]
	if !ok {
		return resp.SetRcode(q, dns.RcodeRefused)
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
			return resp
		}
		if question.Qtype == dns.TypePTR {
			if addr, ok := ptrAddr(name); ok {
				if target, ok := v.reverse(asker, addr); ok {
					resp.Answer = append(resp.Answer, &dns.PTR{
						Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
						Ptr: target,
					})
					return resp
				}
			}
		}
	}
	if !asker.Forward || len(asker.Upstreams) == 0 {
		return resp.SetRcode(q, dns.RcodeRefused)
	}
	return r.forward(sandboxID, asker, q, network)
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

// forward asks the asker's upstream servers in turn, over the network the
// query came in on, retrying over TCP when a UDP answer is truncated.
func (r *Resolver) forward(sandboxID string, asker Asker, q *dns.Msg, network string) *dns.Msg {
	slot := r.slots(sandboxID)
	select {
	case slot <- struct{}{}:
		defer func() { <-slot }()
	default:
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardBudget)
	defer cancel()
	if network != "tcp" {
		network = "udp"
	}
	for _, server := range asker.Upstreams {
		resp, err := r.exchange(ctx, q, server, network)
		if err == nil && resp.Truncated && network == "udp" {
			resp, err = r.exchange(ctx, q, server, "tcp")
		}
		if err == nil {
			resp.Id = q.Id
			return resp
		}
		if ctx.Err() != nil {
			break
		}
	}
	return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
}

func (r *Resolver) slots(sandboxID string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.inFlight[sandboxID]
	if !ok {
		s = make(chan struct{}, maxInFlight)
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

// ClientExchange is an Exchange with miekg/dns's client, for a caller
// that is already in the right namespace.
func ClientExchange(ctx context.Context, q *dns.Msg, server netip.AddrPort, network string) (*dns.Msg, error) {
	c := dns.Client{Net: network, UDPSize: dns.DefaultMsgSize}
	resp, _, err := c.ExchangeContext(ctx, q, server.String())
	return resp, err
}

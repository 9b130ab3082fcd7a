package dns

import (
	"context"
	"math/rand/v2"
	"net/netip"
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
			// A known name: A records, and no data for other types
			// rather than a trip upstream.
			if question.Qtype == dns.TypeA {
				for _, i := range rand.Perm(len(addrs)) {
					resp.Answer = append(resp.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
						A:   addrs[i].AsSlice(),
					})
				}
			}
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

// ptrAddr parses an in-addr.arpa name.
func ptrAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	return a, err == nil && a.Is4()
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

package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// socketsPerServer is how many UDP sockets the pool keeps to each
	// upstream server: a few, so that replies are read on both cores and
	// the queries of a busy moment leave from more than one port.
	socketsPerServer = 4
	// socketUses is how many queries a socket carries before a fresh one
	// replaces it, so the source port of forwarded queries keeps changing
	// (RFC 5452) at the cost of one namespace entry per socketUses queries.
	socketUses = 1024
	// ednsSize is the UDP payload size asked of upstream servers when the
	// asker set none (DNS flag day 2020): answers up to it come over UDP
	// instead of truncated at 512 bytes and asked again over TCP.
	ednsSize = 1232
)

// Dial opens a socket to an upstream server, over "udp" or "tcp", in the
// namespace forwarded queries leave from. A socket stays in the namespace
// it was opened in whichever goroutine uses it later, so the resolver dials
// seldom and keeps its UDP sockets.
type Dial func(ctx context.Context, network string, server netip.AddrPort) (net.Conn, error)

// exchange sends a query to an upstream server over "udp" or "tcp" and
// waits for its reply; the seam between the resolver and the pool.
type exchange func(ctx context.Context, q *dns.Msg, server netip.AddrPort, network string) (*dns.Msg, error)

// pool exchanges queries with upstream servers over UDP sockets it keeps,
// and over a TCP connection of their own (TCP is for answers too big for
// UDP, which the cache then holds, so it is rare).
type pool struct {
	dial    Dial
	mu      sync.Mutex
	servers map[netip.AddrPort]*[socketsPerServer]*udpSocket
}

func newPool(dial Dial) *pool {
	return &pool{dial: dial, servers: map[netip.AddrPort]*[socketsPerServer]*udpSocket{}}
}

func (p *pool) exchange(ctx context.Context, q *dns.Msg, server netip.AddrPort, network string) (*dns.Msg, error) {
	out := *q // the asker's message is shared with its handler: change a copy
	if q.IsEdns0() == nil {
		out.Extra = append(append([]dns.RR(nil), q.Extra...), ednsOPT())
	}
	if network == "tcp" {
		return p.exchangeTCP(ctx, &out, server)
	}
	s, err := p.socket(ctx, server)
	if err != nil {
		return nil, err
	}
	return s.exchange(ctx, &out)
}

func ednsOPT() *dns.OPT {
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(ednsSize)
	return opt
}

func (p *pool) exchangeTCP(ctx context.Context, q *dns.Msg, server netip.AddrPort) (*dns.Msg, error) {
	c, err := p.dial(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", server, err)
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	q.Id = dns.Id()
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("send query to %s over tcp: %w", server, err)
	}
	for {
		resp, err := co.ReadMsg()
		if err != nil {
			return nil, fmt.Errorf("read answer from %s over tcp: %w", server, err)
		}
		if answers(resp, q) {
			return resp, nil
		}
	}
}

// answers tells whether resp is the reply to q: its ID and its question,
// spelled exactly as asked, so that a forged reply must guess both.
func answers(resp, q *dns.Msg) bool {
	return resp.Response && resp.Id == q.Id && len(resp.Question) == 1 && resp.Question[0] == q.Question[0]
}

// socket picks one of server's sockets at random, opening or replacing it
// when it is missing or used up.
func (p *pool) socket(ctx context.Context, server netip.AddrPort) (*udpSocket, error) {
	i := rand.N(socketsPerServer)
	p.mu.Lock()
	sockets := p.servers[server]
	if sockets == nil {
		sockets = new([socketsPerServer]*udpSocket)
		p.servers[server] = sockets
	}
	if s := sockets[i]; s != nil && s.use() {
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	// Dial without the lock: it enters a namespace, and other queries need
	// not wait for that.
	c, err := p.dial(ctx, "udp", server)
	if err != nil {
		return nil, fmt.Errorf("open a socket to %s: %w", server, err)
	}
	fresh := newUDPSocket(c)
	p.mu.Lock()
	defer p.mu.Unlock()
	fresh.use()
	if p.servers[server] != sockets {
		// The server was dropped meanwhile: this query still goes, and the
		// socket closes after it.
		fresh.retire()
		return fresh, nil
	}
	if old := sockets[i]; old != nil {
		old.retire()
	}
	sockets[i] = fresh
	return fresh, nil
}

// keep closes the sockets of servers not in want; pending queries to them
// still get their answers.
func (p *pool) keep(want map[netip.AddrPort]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for server, sockets := range p.servers {
		if want[server] {
			continue
		}
		for _, s := range sockets {
			if s != nil {
				s.retire()
			}
		}
		delete(p.servers, server)
	}
}

// udpSocket is one connected UDP socket with a reader that hands each
// reply to the query waiting for it. Connected, the kernel drops datagrams
// from any other address and reports an ICMP unreachable as an error.
type udpSocket struct {
	conn    net.Conn
	mu      sync.Mutex
	pending map[uint16]*waiter
	uses    int  // queries it was picked for
	active  int  // of those, the ones not yet over
	retired bool // no new queries; closed once the active ones end
}

type waiter struct {
	q     *dns.Msg
	reply chan *dns.Msg // buffered: the reader never blocks
	fail  chan error    // buffered
}

func newUDPSocket(c net.Conn) *udpSocket {
	s := &udpSocket{conn: c, pending: map[uint16]*waiter{}}
	go s.read()
	return s
}

// use counts one more query on s, false when s is used up or retired.
// Every use is ended by exchange.
func (s *udpSocket) use() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired || s.uses >= socketUses {
		return false
	}
	s.uses++
	s.active++
	return true
}

func (s *udpSocket) retire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = true
	if s.active == 0 {
		s.conn.Close()
	}
}

// exchange sends q on s, which the caller has use()d, and waits for its
// reply.
func (s *udpSocket) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	w := &waiter{q: q, reply: make(chan *dns.Msg, 1), fail: make(chan error, 1)}
	s.mu.Lock()
	for {
		// IDs are random (RFC 5452) and unique among the socket's pending
		// queries, so a reply has one taker.
		q.Id = uint16(rand.N(1 << 16))
		if _, taken := s.pending[q.Id]; !taken {
			break
		}
	}
	s.pending[q.Id] = w
	s.mu.Unlock()
	defer s.end(q.Id, w)
	b, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	if _, err := s.conn.Write(b); err != nil {
		return nil, fmt.Errorf("send query to %s: %w", s.conn.RemoteAddr(), err)
	}
	select {
	case resp := <-w.reply:
		return resp, nil
	case err := <-w.fail:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *udpSocket) end(id uint16, w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[id] == w { // else answered, and the ID maybe reused
		delete(s.pending, id)
	}
	s.active--
	if s.retired && s.active == 0 {
		s.conn.Close()
	}
}

func (s *udpSocket) read() {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := s.conn.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Nothing says which query an ICMP unreachable answers: fail
			// them all, so the resolver moves to its next server now rather
			// than at the end of its budget.
			s.failAll(fmt.Errorf("read answer from %s: %w", s.conn.RemoteAddr(), err))
			time.Sleep(time.Millisecond) // an error that repeats must not spin
			continue
		}
		resp := new(dns.Msg)
		if resp.Unpack(buf[:n]) != nil {
			continue
		}
		s.mu.Lock()
		if w, ok := s.pending[resp.Id]; ok && answers(resp, w.q) {
			delete(s.pending, resp.Id)
			w.reply <- resp
		}
		s.mu.Unlock()
	}
}

func (s *udpSocket) failAll(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.pending {
		delete(s.pending, id)
		w.fail <- err
	}
}

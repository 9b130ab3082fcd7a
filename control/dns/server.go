package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// Address is where every sandbox's resolver listens, as Docker's.
const Address = "127.0.0.11:53"

// Servers runs one resolver listener pair (UDP and TCP) per sandbox.
type Servers struct {
	resolver *Resolver
	mu       sync.Mutex
	running  map[string]*listener // by sandbox ID
}

type listener struct {
	netns string
	udp   *net.UDPConn
	tcp   *dns.Server
}

// NewServers returns a set of servers answering with resolver.
func NewServers(resolver *Resolver) *Servers {
	return &Servers{resolver: resolver, running: map[string]*listener{}}
}

// Sync runs a listener in exactly the sandboxes of want (sandbox ID to the
// path of its namespace).
func (s *Servers) Sync(want map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, l := range s.running {
		if want[id] != l.netns {
			l.stop()
			s.resolver.forget(id)
			delete(s.running, id)
		}
	}
	for id, netns := range want {
		if _, ok := s.running[id]; ok {
			continue
		}
		l, err := s.start(id, netns)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.running[id] = l
	}
	return errors.Join(errs...)
}

// Close stops every listener and closes the resolver's sockets to
// upstream servers.
func (s *Servers) Close() {
	s.Sync(nil)
	s.resolver.closeUpstreams()
}

// start opens the sockets inside the sandbox's namespace (they stay there)
// and serves them from ordinary goroutines.
func (s *Servers) start(id, netns string) (*listener, error) {
	var (
		pc *net.UDPConn
		ln net.Listener
	)
	err := namespace.Do(netns, func() error {
		var err error
		if pc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(Address))); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp4", Address); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", Address, netns, err)
	}
	l := &listener{netns: netns, udp: pc,
		tcp: &dns.Server{Listener: ln, Handler: s.resolver.Handler(id), MaxTCPQueries: 128},
	}
	go s.serveUDP(id, pc)
	go l.tcp.ActivateAndServe()
	return l, nil
}

// serveUDP answers a sandbox's queries over UDP. What needs no upstream
// server (names of its networks, cached answers) is answered as it is
// read: miekg/dns's server starts a goroutine per query, whose scheduling
// was most of what a local answer cost in CPU and in tail latency. One
// reader: a second on the same socket would be woken for every datagram
// the first takes, only to find none. A query that goes upstream, which
// may wait up to forwardBudget, gets a goroutine of its own.
func (s *Servers) serveUDP(sandboxID string, pc *net.UDPConn) {
	buf := make([]byte, dns.MaxMsgSize)
	// Answers written here are packed into one buffer, used again: one
	// allocation less per query.
	out := make([]byte, dns.MaxMsgSize)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		q := new(dns.Msg)
		// Not a query (a reply sent here, say): answering it could start
		// a loop between two servers.
		if q.Unpack(buf[:n]) != nil || q.Response {
			continue
		}
		if resp, ok := s.resolver.AnswerNow(sandboxID, q, "udp"); ok {
			writeUDP(pc, from, q, resp, out)
			continue
		}
		go func() { writeUDP(pc, from, q, s.resolver.Answer(sandboxID, q, "udp"), nil) }()
	}
}

// writeUDP packs resp, fitted to what q accepts, into buf (or a new
// buffer when nil) and sends it.
func writeUDP(pc *net.UDPConn, to netip.AddrPort, q, resp *dns.Msg, buf []byte) {
	fitUDP(q, resp)
	if b, err := resp.PackBuffer(buf); err == nil {
		pc.WriteToUDPAddrPort(b, to)
	}
}

func (l *listener) stop() {
	// Shutdown waits for the server to have started; closing the sockets
	// ends it either way.
	l.udp.Close()
	l.tcp.Listener.Close()
}

package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

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
	udp      *udpLoop             // nil while no sandbox has a listener
	// entered counts the namespaces entered to open listeners, for tests
	// to see what a change costs.
	entered atomic.Uint64
}

type listener struct {
	netns string
	udp   *udpListener
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
	for id := range s.running {
		if _, ok := want[id]; !ok {
			s.set(id, "")
		}
	}
	for id, netns := range want {
		errs = append(errs, s.set(id, netns))
	}
	return errors.Join(errs...)
}

// Set runs sandbox id's listener in the namespace at netns, or none when
// netns is "": a change to one sandbox enters its namespace only.
func (s *Servers) Set(id, netns string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set(id, netns)
}

func (s *Servers) set(id, netns string) error {
	if l, ok := s.running[id]; ok {
		if l.netns == netns {
			return nil
		}
		s.stop(l)
		s.resolver.forget(id)
		delete(s.running, id)
	}
	var err error
	if netns != "" {
		var l *listener
		if l, err = s.start(id, netns); err == nil {
			s.running[id] = l
		}
	}
	if len(s.running) == 0 && s.udp != nil {
		s.udp.close()
		s.udp = nil
	}
	return err
}

// Running are the sandboxes with a listener, by ID.
func (s *Servers) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id := range s.running {
		out = append(out, id)
	}
	return out
}

// Entered is how many times listeners were opened in a sandbox's
// namespace.
func (s *Servers) Entered() uint64 { return s.entered.Load() }

// Close stops every listener and closes the resolver's sockets to
// upstream servers.
func (s *Servers) Close() {
	s.Sync(nil)
	s.resolver.closeUpstreams()
}

// start opens the sockets inside the sandbox's namespace (they stay
// there); the UDP loop reads the UDP one, a goroutine serves TCP.
func (s *Servers) start(id, netns string) (*listener, error) {
	if s.udp == nil {
		loop, err := newUDPLoop()
		if err != nil {
			return nil, err
		}
		s.udp = loop
	}
	l := &listener{netns: netns}
	var ln net.Listener
	s.entered.Add(1)
	err := namespace.Do(netns, func() error {
		var err error
		if l.udp, err = s.udp.listen(netip.MustParseAddrPort(Address), s.answerUDP(id)); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp4", Address); err != nil {
			s.udp.remove(l.udp)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", Address, netns, err)
	}
	l.tcp = &dns.Server{Listener: ln, Handler: s.resolver.Handler(id), MaxTCPQueries: 128}
	go l.tcp.ActivateAndServe()
	return l, nil
}

// answerUDP answers a sandbox's queries over UDP. What needs no upstream
// server (names of its networks, cached answers) is answered as it is
// read: miekg/dns's server starts a goroutine per query, whose scheduling
// was most of what a local answer cost in CPU and in tail latency. A query
// that goes upstream, which may wait up to forwardBudget, gets a
// goroutine of its own.
func (s *Servers) answerUDP(sandboxID string) udpHandler {
	return func(sock *udpListener, b []byte, from netip.AddrPort, out []byte) []byte {
		q := new(dns.Msg)
		// Not a query (a reply sent here, say): answering it could start
		// a loop between two servers.
		if q.Unpack(b) != nil || q.Response {
			return nil
		}
		if resp, ok := s.resolver.AnswerNow(sandboxID, q, "udp"); ok {
			return packUDP(q, resp, out)
		}
		go func() {
			if b := packUDP(q, s.resolver.Answer(sandboxID, q, "udp"), nil); b != nil {
				sock.writeTo(b, from)
			}
		}()
		return nil
	}
}

// packUDP packs resp, fitted to what q accepts, into buf (or a new buffer
// when nil).
func packUDP(q, resp *dns.Msg, buf []byte) []byte {
	fitUDP(q, resp)
	b, err := resp.PackBuffer(buf)
	if err != nil {
		return nil
	}
	return b
}

// stop closes a listener's sockets.
func (s *Servers) stop(l *listener) {
	s.udp.remove(l.udp)
	// Shutdown waits for the server to have started; closing the socket
	// ends it either way.
	l.tcp.Listener.Close()
}

package dns

import (
	"errors"
	"fmt"
	"net"
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
	udp   *dns.Server
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
		pc net.PacketConn
		ln net.Listener
	)
	err := namespace.Do(netns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", Address); err != nil {
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
	h := s.resolver.Handler(id)
	l := &listener{netns: netns,
		udp: &dns.Server{PacketConn: pc, Handler: h},
		tcp: &dns.Server{Listener: ln, Handler: h, MaxTCPQueries: 128},
	}
	go l.udp.ActivateAndServe()
	go l.tcp.ActivateAndServe()
	return l, nil
}

func (l *listener) stop() {
	// Shutdown waits for the server to have started; closing the sockets
	// ends it either way.
	l.udp.PacketConn.Close()
	l.tcp.Listener.Close()
}

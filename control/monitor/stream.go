package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Namer is what the hub asks of the engine to name events.
type Namer interface {
	// Filter returns f with its sandbox and network, each a name, an ID or
	// an ID's prefix, named as events name them; one that does not exist
	// is an error.
	Filter(f api.EventFilter) (api.EventFilter, error)
	// Names reads whose the dataplane namespace's interfaces and the
	// endpoints' addresses are now. It returns what it could read, with
	// the error that kept it from the rest.
	Names() (Names, error)
	// Answered is the name the resolver answered dst for to src, or "".
	Answered(src, dst netip.Addr) string
}

// Names are whose the interfaces and addresses events carry are.
type Names struct {
	Interfaces map[uint32]string       // the dataplane namespace's interfaces by ifindex
	HostSides  map[uint32]Endpoint     // endpoints by the ifindex of their host side
	Addrs      map[netip.Addr]Endpoint // endpoints by address, both families
}

// Endpoint is whose an interface or address is.
type Endpoint struct{ Sandbox, Network string }

// stream is one monitor client's stream.
type stream struct {
	hub    *Hub
	filter api.EventFilter
	sub    *sub
	names  *names
	once   sync.Once
}

// Next waits for the next event the filter picks, or for ctx to end.
func (s *stream) Next(ctx context.Context) (api.Event, error) {
	f := s.filter
	for {
		select {
		case <-ctx.Done():
			return api.Event{}, ctx.Err()
		case ev := <-s.sub.events:
			v := s.names.view(ev)
			if (f.Sandbox == "" || v.Sandbox == f.Sandbox || v.PeerSandbox == f.Sandbox) &&
				(f.Network == "" || v.Network == f.Network || v.PeerNetwork == f.Network) {
				return v, nil
			}
		}
	}
}

// Close ends the stream; after the last, the datapath writes no events.
func (s *stream) Close() {
	s.once.Do(func() { s.hub.unsubscribe(s.sub) })
}

// names names the interfaces and endpoints of one stream's events as
// they were when last read: an interface it does not know makes it read
// them again, at most once a second.
type names struct {
	namer Namer
	log   *slog.Logger
	Names
	read time.Time
}

func (n *names) refresh() {
	n.read = time.Now()
	var err error
	if n.Names, err = n.namer.Names(); err != nil {
		n.log.Warn("name events", "err", err)
	}
}

// view is an event as the API shows it, named.
func (n *names) view(ev dpmaps.Event) api.Event {
	if _, ok := n.Interfaces[ev.Ifindex]; !ok && time.Since(n.read) > time.Second {
		n.refresh()
	}
	v := api.Event{Time: time.Now().Add(ev.Time - dpmaps.Now()), Program: ev.Program, Interface: n.Interfaces[ev.Ifindex],
		Ifindex: ev.Ifindex, Type: "trace", Verdict: ev.Verdict, Proto: ev.Before.ProtoName(), Len: ev.Len,
		Before: flowView(ev.Before)}
	if v.Interface == "" {
		v.Interface = fmt.Sprintf("if%d", ev.Ifindex)
	}
	if ev.Drop {
		v.Type = "drop"
	}
	addrs := []netip.Addr{ev.Before.Src.Addr(), ev.Before.Dst.Addr()}
	if ev.Translated {
		after := flowView(ev.After)
		v.After = &after
		addrs = append(addrs, ev.After.Dst.Addr(), ev.After.Src.Addr())
	}
	own, ok := n.HostSides[ev.Ifindex]
	var peer Endpoint
	for _, a := range addrs {
		name, found := n.Addrs[a]
		switch {
		case !found:
		case !ok:
			own, ok = name, true
		case name != own && peer == Endpoint{}:
			peer = name
		}
	}
	v.DstName = n.namer.Answered(ev.Before.Src.Addr(), ev.Before.Dst.Addr())
	v.Sandbox, v.Network = own.Sandbox, own.Network
	v.PeerSandbox, v.PeerNetwork = peer.Sandbox, peer.Network
	return v
}

// flowView writes a flow's ends as address:port, or the address alone
// when the protocol has no port there.
func flowView(f dpmaps.Flow) api.EventFlow {
	end := func(ap netip.AddrPort) string {
		if ap.Port() == 0 {
			return ap.Addr().String()
		}
		return ap.String()
	}
	return api.EventFlow{Src: end(f.Src), Dst: end(f.Dst)}
}

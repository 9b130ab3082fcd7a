package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// monitorHub hands the datapath's events to the monitor clients. The
// datapath writes events only while the hub has a client: the first to
// come opens the ring buffer and sets the monitor map, the last to leave
// clears it and closes the ring buffer.
type monitorHub struct {
	// life serialises starting and stopping the reader, so that the ring
	// buffer never has two.
	life sync.Mutex
	// mu guards subs, which the reader walks for every event.
	mu     sync.Mutex
	subs   map[*monitorSub]bool
	reader *dpmaps.EventReader
	done   chan struct{} // closed when the reader's goroutine ends
}

// monitorSub is one client: the event types it asked for, and its queue.
// A client that falls behind by the whole queue loses events; the others
// and the datapath never wait for it.
type monitorSub struct {
	types  dpmaps.MonitorTypes
	events chan dpmaps.Event
}

const monitorQueue = 4096

// subscribe adds a client, starting the reader and switching the
// datapath's events on when it is the first.
func (h *monitorHub) subscribe(m *dpmaps.Maps, types dpmaps.MonitorTypes, log *slog.Logger) (*monitorSub, error) {
	h.life.Lock()
	defer h.life.Unlock()
	sub := &monitorSub{types: types, events: make(chan dpmaps.Event, monitorQueue)}
	if h.reader == nil {
		r, err := m.NewEventReader()
		if err != nil {
			return nil, err
		}
		// Events a monitor before this one left unread (or a daemon that
		// died with a monitor running) are none of this client's.
		if _, err := r.Pending(); err != nil {
			r.Close()
			return nil, err
		}
		h.reader, h.done = r, make(chan struct{})
		go h.read(r, h.done, log)
	}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*monitorSub]bool{}
	}
	h.subs[sub] = true
	all := h.types()
	h.mu.Unlock()
	if err := m.SetMonitor(all); err != nil {
		h.unsubscribeLocked(m, sub, log)
		return nil, err
	}
	return sub, nil
}

// unsubscribe removes a client; after the last, the datapath writes no
// more events.
func (h *monitorHub) unsubscribe(m *dpmaps.Maps, sub *monitorSub, log *slog.Logger) {
	h.life.Lock()
	defer h.life.Unlock()
	h.unsubscribeLocked(m, sub, log)
}

func (h *monitorHub) unsubscribeLocked(m *dpmaps.Maps, sub *monitorSub, log *slog.Logger) {
	h.mu.Lock()
	delete(h.subs, sub)
	all, left := h.types(), len(h.subs)
	h.mu.Unlock()
	if err := m.SetMonitor(all); err != nil {
		log.Warn("switch datapath events off", "err", err)
	}
	if left == 0 && h.reader != nil {
		h.reader.Close()
		<-h.done
		h.reader, h.done = nil, nil
	}
}

// types are the event types some client wants; guarded by mu.
func (h *monitorHub) types() (all dpmaps.MonitorTypes) {
	for s := range h.subs {
		all |= s.types
	}
	return all
}

// read hands each event to the clients that want its type.
func (h *monitorHub) read(r *dpmaps.EventReader, done chan struct{}, log *slog.Logger) {
	defer close(done)
	for {
		ev, err := r.Read()
		if errors.Is(err, dpmaps.ErrClosed) {
			return
		}
		if err != nil {
			log.Warn("read datapath events", "err", err)
			time.Sleep(100 * time.Millisecond) // an error that lasts must not spin
			continue
		}
		kind := dpmaps.MonitorTrace
		if ev.Drop {
			kind = dpmaps.MonitorDrop
		}
		h.mu.Lock()
		for s := range h.subs {
			if s.types&kind != 0 {
				select {
				case s.events <- ev:
				default: // the client is behind: it loses this one
				}
			}
		}
		h.mu.Unlock()
	}
}

// stop ends reading at the daemon's exit and switches the
// datapath's events off.
func (h *monitorHub) stop(m *dpmaps.Maps) error {
	h.life.Lock()
	defer h.life.Unlock()
	if h.reader != nil {
		h.reader.Close()
		<-h.done
		h.reader, h.done = nil, nil
	}
	return m.SetMonitor(0)
}

// monitorTypes reads the --type of a monitor.
func monitorTypes(s string) (dpmaps.MonitorTypes, error) {
	switch s {
	case "", "all":
		return dpmaps.MonitorAll, nil
	case "drop":
		return dpmaps.MonitorDrop, nil
	case "trace":
		return dpmaps.MonitorTrace, nil
	}
	return 0, errdefs.Invalidf("invalid event type %q: want drop, trace or all", s)
}

// Events opens a stream of the datapath's events that f picks. While a
// stream is open, the datapath writes events; Close it when done.
func (e *Engine) Events(f api.EventFilter) (api.EventStream, error) {
	types, err := monitorTypes(f.Type)
	if err != nil {
		return nil, err
	}
	// The filter's names as the events will carry them.
	err = e.store.View(func(tx *store.Tx) error {
		if f.Sandbox != "" {
			sb, err := tx.Sandbox(f.Sandbox)
			if err != nil {
				return err
			}
			f.Sandbox = sb.Name
		}
		if f.Network != "" {
			n, err := tx.Network(f.Network)
			if err != nil {
				return err
			}
			f.Network = n.Name
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sub, err := e.monitor.subscribe(e.maps, types, e.log)
	if err != nil {
		return nil, err
	}
	names := &eventNames{e: e}
	names.refresh()
	return &eventStream{e: e, filter: f, sub: sub, names: names}, nil
}

// eventStream is one monitor client's stream.
type eventStream struct {
	e      *Engine
	filter api.EventFilter
	sub    *monitorSub
	names  *eventNames
	once   sync.Once
}

// Next waits for the next event the filter picks, or for ctx to end.
func (s *eventStream) Next(ctx context.Context) (api.Event, error) {
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
func (s *eventStream) Close() {
	s.once.Do(func() { s.e.monitor.unsubscribe(s.e.maps, s.sub, s.e.log) })
}

// monitoring is what the datapath's events are on for: "drop", "trace",
// "all", or "" (off), as the monitor map says.
func (e *Engine) monitoring() (string, error) {
	types, err := e.maps.Monitoring()
	switch types {
	case dpmaps.MonitorDrop:
		return "drop", err
	case dpmaps.MonitorTrace:
		return "trace", err
	case dpmaps.MonitorAll:
		return "all", err
	}
	return "", err
}

// endpointName is whose an interface or address is.
type endpointName struct{ sandbox, network string }

// eventNames names the interfaces and endpoints of events, from the store
// and the dataplane namespace's interfaces as they were when last read:
// an interface it does not know makes it read them again, at most once a
// second.
type eventNames struct {
	e         *Engine
	ifnames   map[uint32]string
	byIfindex map[uint32]endpointName // endpoints' host sides
	byAddr    map[netip.Addr]endpointName
	read      time.Time
}

func (n *eventNames) refresh() {
	n.read = time.Now()
	nets, sbs, err := n.e.store.Snapshot()
	if err != nil {
		n.e.log.Warn("read the store to name events", "err", err)
		return
	}
	byID := store.ByID(nets)
	n.byAddr = map[netip.Addr]endpointName{}
	hostSides := map[string]endpointName{}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			name := endpointName{sb.Name, byID[ep.NetworkID].Name}
			for _, a := range []netip.Addr{ep.Addr, ep.Addr6} {
				if a.IsValid() {
					n.byAddr[a] = name
				}
			}
			if ep.HostSide != "" {
				hostSides[ep.HostSide] = name
			}
		}
	}
	n.ifnames, n.byIfindex = map[uint32]string{}, map[uint32]endpointName{}
	err = n.e.inHost(func() error {
		links, err := driver.Dump(netlink.LinkList)
		for _, l := range links {
			a := l.Attrs()
			n.ifnames[uint32(a.Index)] = a.Name
			if name, ok := hostSides[a.Name]; ok {
				n.byIfindex[uint32(a.Index)] = name
			}
		}
		return err
	})
	if err != nil {
		n.e.log.Warn("list interfaces to name events", "err", err)
	}
}

// view is an event as the API shows it, named.
func (n *eventNames) view(ev dpmaps.Event) api.Event {
	if _, ok := n.ifnames[ev.Ifindex]; !ok && time.Since(n.read) > time.Second {
		n.refresh()
	}
	v := api.Event{Time: time.Now().Add(ev.Time - dpmaps.Now()), Program: ev.Program, Interface: n.ifnames[ev.Ifindex],
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
	own, ok := n.byIfindex[ev.Ifindex]
	var peer endpointName
	for _, a := range addrs {
		name, found := n.byAddr[a]
		switch {
		case !found:
		case !ok:
			own, ok = name, true
		case name != own && peer == endpointName{}:
			peer = name
		}
	}
	v.Sandbox, v.Network = own.sandbox, own.network
	v.PeerSandbox, v.PeerNetwork = peer.sandbox, peer.network
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

package monitor

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Hub hands the datapath's events to the monitor clients.
type Hub struct {
	maps  *dpmaps.Maps
	namer Namer
	log   *slog.Logger
	// life serialises starting and stopping the reader, so that the ring
	// buffer never has two.
	life sync.Mutex
	// mu guards subs, which the reader walks for every event.
	mu     sync.Mutex
	subs   map[*sub]bool
	reader *dpmaps.EventReader
	done   chan struct{} // closed when the reader's goroutine ends
}

// sub is one client: the event types it asked for, and its queue.
type sub struct {
	types  dpmaps.MonitorTypes
	events chan dpmaps.Event
}

const queue = 4096

// New makes the hub of the events of the datapath behind m, naming them
// through namer. A daemon that died with a client left the datapath
// writing events nobody reads, which costs every packet: New switches
// them off.
func New(m *dpmaps.Maps, namer Namer, log *slog.Logger) (*Hub, error) {
	if types, err := m.Monitoring(); err != nil || types != 0 {
		if err := m.SetMonitor(0); err != nil {
			return nil, err
		}
		log.Info("switched off the datapath events a previous daemon's monitor left on")
	}
	return &Hub{maps: m, namer: namer, log: log}, nil
}

// Events opens a stream of the datapath's events that f picks. While a
// stream is open, the datapath writes events; Close it when done.
func (h *Hub) Events(f api.EventFilter) (api.EventStream, error) {
	types, err := parseTypes(f.Type)
	if err != nil {
		return nil, err
	}
	if f, err = h.namer.Filter(f); err != nil {
		return nil, err
	}
	s, err := h.subscribe(types)
	if err != nil {
		return nil, err
	}
	n := &names{namer: h.namer, log: h.log}
	n.refresh()
	return &stream{hub: h, filter: f, sub: s, names: n}, nil
}

// Monitoring is what the datapath's events are on for: "drop", "trace",
// "all", or "" (off), as the monitor map says.
func (h *Hub) Monitoring() (string, error) {
	types, err := h.maps.Monitoring()
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

// Close ends reading at the daemon's exit and switches the datapath's
// events off.
func (h *Hub) Close() error {
	h.life.Lock()
	defer h.life.Unlock()
	h.stopReader()
	return h.maps.SetMonitor(0)
}

// parseTypes reads the --type of a monitor.
func parseTypes(s string) (dpmaps.MonitorTypes, error) {
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

// subscribe adds a client, starting the reader and switching the
// datapath's events on when it is the first.
func (h *Hub) subscribe(types dpmaps.MonitorTypes) (*sub, error) {
	h.life.Lock()
	defer h.life.Unlock()
	s := &sub{types: types, events: make(chan dpmaps.Event, queue)}
	if h.reader == nil {
		r, err := h.maps.NewEventReader()
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
		go h.read(r, h.done)
	}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*sub]bool{}
	}
	h.subs[s] = true
	all := h.types()
	h.mu.Unlock()
	if err := h.maps.SetMonitor(all); err != nil {
		h.unsubscribeLocked(s)
		return nil, err
	}
	return s, nil
}

// unsubscribe removes a client; after the last, the datapath writes no
// more events.
func (h *Hub) unsubscribe(s *sub) {
	h.life.Lock()
	defer h.life.Unlock()
	h.unsubscribeLocked(s)
}

func (h *Hub) unsubscribeLocked(s *sub) {
	h.mu.Lock()
	delete(h.subs, s)
	all, left := h.types(), len(h.subs)
	h.mu.Unlock()
	if err := h.maps.SetMonitor(all); err != nil {
		h.log.Warn("switch datapath events off", "err", err)
	}
	if left == 0 {
		h.stopReader()
	}
}

// stopReader closes the ring buffer and waits for the reader's goroutine;
// life is held.
func (h *Hub) stopReader() {
	if h.reader != nil {
		h.reader.Close()
		<-h.done
		h.reader, h.done = nil, nil
	}
}

// types are the event types some client wants; mu is held.
func (h *Hub) types() (all dpmaps.MonitorTypes) {
	for s := range h.subs {
		all |= s.types
	}
	return all
}

// read hands each event to the clients that want its type.
func (h *Hub) read(r *dpmaps.EventReader, done chan struct{}) {
	defer close(done)
	for {
		ev, err := r.Read()
		if errors.Is(err, dpmaps.ErrClosed) {
			return
		}
		if err != nil {
			h.log.Warn("read datapath events", "err", err)
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

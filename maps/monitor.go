package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// MonitorTypes are the kinds of events a monitor asks the datapath for.
type MonitorTypes uint32

const (
	MonitorDrop  = MonitorTypes(bpf.DatapathMonitorTypeMONITOR_DROP)  // packets a program dropped
	MonitorTrace = MonitorTypes(bpf.DatapathMonitorTypeMONITOR_TRACE) // every other verdict
	MonitorAll   = MonitorDrop | MonitorTrace
)

// SetMonitor tells the datapath which events to write to the ring
// buffer; 0 writes none, and then the datapath pays one array lookup per
// packet for monitoring.
func (m *Maps) SetMonitor(types MonitorTypes) error {
	if err := m.m.Monitor.Put(uint32(0), bpf.DatapathMonitorConfig{Types: uint32(types)}); err != nil {
		return fmt.Errorf("set monitor types to %#x: %w", uint32(types), err)
	}
	return nil
}

// Monitoring reads which events the datapath writes.
func (m *Maps) Monitoring() (MonitorTypes, error) {
	var c bpf.DatapathMonitorConfig
	if err := m.m.Monitor.Lookup(uint32(0), &c); err != nil {
		return 0, fmt.Errorf("read monitor types: %w", err)
	}
	return MonitorTypes(c.Types), nil
}

// Flow is a packet's flow as an event shows it. ICMP echo has its
// identifier as the port of the side that chose it: Src of a request,
// Dst of a reply; other protocols without ports have zero.
type Flow struct {
	Src, Dst netip.AddrPort
	Proto    uint8
}

// ProtoName is the flow's protocol as the metrics name it.
func (f Flow) ProtoName() string { return protoName(f.Proto) }

func flowOf(f bpf.DatapathFlow) Flow {
	return Flow{Src: netip.AddrPortFrom(Addr(f.Saddr), ntohs(f.Sport)), Dst: netip.AddrPortFrom(Addr(f.Daddr), ntohs(f.Dport)),
		Proto: f.Proto}
}

// ntohs is the inverse of be16.
func ntohs(port uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], port)
	return binary.BigEndian.Uint16(b[:])
}

// Event is what a program did to one packet (struct monitor_event).
type Event struct {
	Time    time.Duration // CLOCK_BOOTTIME (Now)
	Ifindex uint32        // where the program ran
	Len     uint32
	Program string // names as the counters have them
	Verdict string
	Drop    bool // the program dropped it (MonitorDrop), else a trace
	Before  Flow // as the packet came in
	// After is the flow the packet was translated to, when Translated.
	After      Flow
	Translated bool
}

// EventReader reads the datapath's events from its ring buffer.
type EventReader struct {
	r                  *ringbuf.Reader
	programs, verdicts []string
	rec                ringbuf.Record
}

// ErrClosed is what Read returns once the reader is closed.
var ErrClosed = os.ErrClosed

// NewEventReader opens the events ring buffer. Only one reader should
// read it at a time: each event goes to one of them.
func (m *Maps) NewEventReader() (*EventReader, error) {
	programs, verdicts, err := counterLabels()
	if err != nil {
		return nil, err
	}
	r, err := ringbuf.NewReader(m.m.Events)
	if err != nil {
		return nil, fmt.Errorf("open the events ring buffer: %w", err)
	}
	return &EventReader{r: r, programs: programs, verdicts: verdicts}, nil
}

// Read waits for the next event; once Close is called, it returns
// ErrClosed.
func (r *EventReader) Read() (Event, error) {
	if err := r.r.ReadInto(&r.rec); err != nil {
		return Event{}, fmt.Errorf("read the events ring buffer: %w", err)
	}
	return r.decode(r.rec.RawSample)
}

// Pending reads the events already in the ring buffer without waiting.
func (r *EventReader) Pending() ([]Event, error) {
	var out []Event
	r.r.SetDeadline(time.Now())
	defer r.r.SetDeadline(time.Time{})
	for {
		ev, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

// Close ends reading; a Read waiting returns ErrClosed.
func (r *EventReader) Close() error { return r.r.Close() }

func (r *EventReader) decode(raw []byte) (Event, error) {
	var e bpf.DatapathMonitorEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &e); err != nil {
		return Event{}, fmt.Errorf("decode event of %d bytes: %w", len(raw), err)
	}
	ev := Event{Time: time.Duration(e.Time), Ifindex: e.Ifindex, Len: e.Len, Program: name(r.programs, e.Program),
		Verdict: name(r.verdicts, e.Verdict), Drop: MonitorTypes(e.Type)&MonitorDrop != 0, Before: flowOf(e.Before),
		Translated: e.HasAfter != 0}
	if ev.Translated {
		ev.After = flowOf(e.After)
	}
	return ev, nil
}

// name is an enum value's name, or its number when this binary has none
// for it (a datapath newer than the daemon).
func name(names []string, v uint8) string {
	if int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprint(v)
}

package hostports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Port is a port of the host: a protocol, an address (zero: every address
// of the host) and a number.
type Port struct {
	Proto ports.Protocol
	Addr  netip.Addr
	Num   uint16
}

func (p Port) String() string {
	if p.Addr.IsValid() {
		return fmt.Sprintf("%s/%s", netip.AddrPortFrom(p.Addr, p.Num), p.Proto)
	}
	return fmt.Sprintf("%d/%s", p.Num, p.Proto)
}

// overlaps reports whether two ports claim the same socket of the host.
func (p Port) overlaps(q Port) bool {
	return p.Proto == q.Proto && p.Num == q.Num && (!p.Addr.IsValid() || !q.Addr.IsValid() || p.Addr == q.Addr)
}

// Binding is a host port held for a sandbox port.
type Binding struct {
	Host    Port
	Target  uint16 // the port in the sandbox
	Sandbox string // the holder, named when another claim collides
	// Balance lets other sandboxes' balanced bindings of the same host
	// port share it (publish --balance).
	Balance bool
}

// String names a binding as a user wrote it, the host address spelled
// 0.0.0.0 when it is every address.
func (b Binding) String() string {
	addr := netip.IPv4Unspecified()
	if b.Host.Addr.IsValid() {
		addr = b.Host.Addr
	}
	return fmt.Sprintf("%s->%d/%s", netip.AddrPortFrom(addr, b.Host.Num), b.Target, b.Host.Proto)
}

// A Probe reports whether a host socket has a port: nil when none has,
// an error wrapping unix.EADDRINUSE when one has, any other error when it
// cannot tell. It runs wherever the caller runs the Allocator's
// searches: in the host namespace.
type Probe func(Port) error

// Allocator holds the host ports published so far and chooses free ones.
// It is not safe for concurrent use; its owner serialises calls.
type Allocator struct {
	probe Probe
	held  map[key][]Binding
}

// key is what every claim that may collide shares, so a check looks at a
// handful of bindings at most.
type key struct {
	proto ports.Protocol
	num   uint16
}

// New returns an allocator that holds nothing and asks probe about host
// sockets.
func New(probe Probe) *Allocator {
	return &Allocator{probe: probe, held: map[key][]Binding{}}
}

// Hold records b as held, whatever the probe says: it is for bindings
// already published.
func (a *Allocator) Hold(b Binding) {
	k := key{b.Host.Proto, b.Host.Num}
	a.held[k] = append(a.held[k], b)
}

// Release drops a binding held before; releasing one not held does
// nothing.
func (a *Allocator) Release(b Binding) {
	k := key{b.Host.Proto, b.Host.Num}
	a.held[k] = slices.DeleteFunc(a.held[k], func(h Binding) bool { return h == b })
	if len(a.held[k]) == 0 {
		delete(a.held, k)
	}
}

// holder returns a binding that claims p, if any, but those nb may share
// p with: balanced ones of exactly that host port, of other sandboxes,
// when nb is balanced. shared says whether any of those holds p.
func (a *Allocator) holder(p Port, nb Binding) (b Binding, taken, shared bool) {
	for _, b := range a.held[key{p.Proto, p.Num}] {
		switch {
		case !p.overlaps(b.Host):
		case nb.Balance && b.Balance && b.Host == p && b.Sandbox != nb.Sandbox:
			shared = true
		default:
			return b, true, false
		}
	}
	return Binding{}, false, shared
}

// Allocate chooses free host ports for m on behalf of sandbox, balanced
// (shared with other sandboxes' balanced bindings) or not, and holds
// each as it is chosen, so later choices, of this call or the next,
// avoid it. Random host ports come from [lo, hi]. On failure the ports
// already chosen stay held: the caller drops the allocator or releases
// them with the change that failed.
func (a *Allocator) Allocate(m ports.Mapping, sandbox string, balance bool, lo, hi int) ([]Binding, error) {
	var out []Binding
	mk := func(host, target uint16) Binding {
		return Binding{Host: Port{Proto: m.Proto, Addr: m.HostIP, Num: host}, Target: target, Sandbox: sandbox, Balance: balance}
	}
	hostFirst, hostEnd := m.HostPorts()
	first, end := m.Ports()
	switch {
	case hostFirst != 0 && hostEnd-hostFirst == end-first:
		for i := 0; i <= int(end-first); i++ {
			b := mk(hostFirst+uint16(i), first+uint16(i))
			if err := a.CheckBinding(b); err != nil {
				return nil, err
			}
			a.Hold(b)
			out = append(out, b)
		}
	case hostFirst != 0: // one sandbox port, any free host port of the range
		b, err := a.First(mk(0, first), int(hostFirst), int(hostEnd))
		if err != nil {
			return nil, fmt.Errorf("no free host port in %d-%d/%s: %w", hostFirst, hostEnd, m.Proto, err)
		}
		a.Hold(b)
		out = append(out, b)
	default: // each sandbox port gets a free port of the ephemeral range
		for port := int(first); port <= int(end); port++ {
			b, err := a.First(mk(0, uint16(port)), lo, hi)
			if err != nil {
				return nil, fmt.Errorf("no free host port for %d/%s: %w", port, m.Proto, err)
			}
			a.Hold(b)
			out = append(out, b)
		}
	}
	return out, nil
}

// First returns b with the first free host port of [lo, hi], trying from
// a random start so that sandboxes do not all queue behind the same
// ports. It holds nothing.
func (a *Allocator) First(b Binding, lo, hi int) (Binding, error) {
	n := hi - lo + 1
	start := rand.IntN(n)
	for i := range n {
		b.Host.Num = uint16(lo + (start+i)%n)
		if err := a.Check(b.Host); !IsTaken(err) { // a free port: a balanced one is shared when named alone
			return b, err // free, or failing for every port alike
		}
	}
	return b, errdefs.Conflict(errors.New("every port is published or in use"))
}

// Check fails when a held binding claims p, or the probe finds a host
// socket on it. Once published, a port is held by the datapath's bind
// hook; until then the probe is the one test that sees every socket of
// the namespace. A port held or in use fails with an error for which
// IsTaken is true, so a search moves on to the next port.
func (a *Allocator) Check(p Port) error { return a.CheckBinding(Binding{Host: p}) }

// CheckBinding is Check for binding b's host port, which b may share with
// the balanced bindings of other sandboxes when it is balanced itself:
// the port is theirs already, and no probe is made.
func (a *Allocator) CheckBinding(b Binding) error {
	p := b.Host
	held, taken, shared := a.holder(p, b)
	switch {
	case taken && b.Balance && held.Balance && held.Sandbox == b.Sandbox:
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is already published by sandbox %s (%s): a sandbox is one backend of a balanced port", p, held.Sandbox, held)))
	case taken && b.Balance && held.Balance:
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is balanced on %s by sandbox %s (%s): a balanced port is shared on one host address alone", p, held.Host.Addr, held.Sandbox, held)))
	case taken && held.Balance && held.Host == p:
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is balanced by sandbox %s (%s): publish with --balance to share it", p, held.Sandbox, held)))
	case taken && b.Balance:
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is already published by sandbox %s (%s) without --balance", p, held.Sandbox, held)))
	case taken:
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is already published by sandbox %s (%s)", p, held.Sandbox, held)))
	case shared:
		return nil
	}
	err := a.probe(p)
	if isInUse(err) {
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is in use by a process on the host", p)))
	}
	if err != nil {
		return fmt.Errorf("check host port %s: %w", p, err)
	}
	return nil
}

// takenError says a host port is published or in use: a search for a free
// port moves on to the next one.
type takenError string

func (e takenError) Error() string { return string(e) }

// IsTaken reports whether err says a host port is published or in use,
// rather than that the check itself failed.
func IsTaken(err error) bool {
	var t takenError
	return errors.As(err, &t)
}

// EphemeralRange is the host's local port range, where random host ports
// come from, as with Docker. It runs in the host namespace.
func EphemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(data), &lo, &hi)
	}
	return lo, hi
}

// Default NAT port range: above the kernel's default ephemeral range.
const (
	defaultNATPortMin = 61000
	defaultNATPortMax = 65535
)

// NATRange decides the masquerade port range. Translated tuples must never
// be a host connection's, so the range stays clear of the host's ephemeral
// ports: a range asked for that overlaps them is refused, and the default
// moves below them when they cover it. lo and hi are the host's
// ephemeral range.
func NATRange(min, max uint16, lo, hi int) (uint16, uint16, error) {
	overlaps := func(a, b uint16) bool { return int(a) <= hi && int(b) >= lo }
	if min != 0 {
		if overlaps(min, max) {
			return 0, 0, fmt.Errorf("NAT port range %d-%d overlaps the host's ephemeral ports %d-%d (net.ipv4.ip_local_port_range): translated flows could collide with host connections", min, max, lo, hi)
		}
		return min, max, nil
	}
	if !overlaps(defaultNATPortMin, defaultNATPortMax) {
		return defaultNATPortMin, defaultNATPortMax, nil
	}
	n := defaultNATPortMax - defaultNATPortMin
	if lo-1-n < 1024 {
		return 0, 0, fmt.Errorf("the host's ephemeral ports %d-%d leave no room for a NAT port range: narrow net.ipv4.ip_local_port_range", lo, hi)
	}
	return uint16(lo - 1 - n), uint16(lo - 1), nil
}

package hostports

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// fakeHost is a Probe over a set of ports that host sockets have; it
// counts its calls, so a test can tell how far a search went.
type fakeHost struct {
	bound map[Port]bool
	fail  error // returned for every port when set
	calls int
}

func (h *fakeHost) probe(p Port) error {
	h.calls++
	if h.fail != nil {
		return h.fail
	}
	for b := range h.bound {
		if p.overlaps(b) {
			return fmt.Errorf("bind %s: %w", p, unix.EADDRINUSE)
		}
	}
	return nil
}

func tcp(addr string, num uint16) Port {
	p := Port{Proto: ports.TCP, Num: num}
	if addr != "" {
		p.Addr = netip.MustParseAddr(addr)
	}
	return p
}

// Two claims collide on the same protocol and port when either takes
// every address or both take the same one.
func TestCheckCollisions(t *testing.T) {
	a := New((&fakeHost{}).probe)
	a.Hold(Binding{Host: tcp("127.0.0.1", 8080), Target: 80, Sandbox: "web"})
	for _, c := range []struct {
		p    Port
		want string // "" for free
	}{
		{tcp("", 8080), "host port 8080/tcp is already published by sandbox web (127.0.0.1:8080->80/tcp)"},
		{tcp("127.0.0.1", 8080), "host port 127.0.0.1:8080/tcp is already published by sandbox web"},
		{tcp("127.0.0.2", 8080), ""},
		{Port{Proto: ports.UDP, Num: 8080}, ""},
		{tcp("", 8081), ""},
	} {
		err := a.Check(c.p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Check(%s): %v, want it free", c.p, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want) || !IsTaken(err) || !errors.Is(err, errdefs.ErrConflict)):
			t.Errorf("Check(%s): %v, want a conflict %q", c.p, err, c.want)
		}
	}
}

func TestAllocate(t *testing.T) {
	host := &fakeHost{bound: map[Port]bool{tcp("", 9001): true}}
	a := New(host.probe)

	// A host range as long as the sandbox range maps port to port.
	bs, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 8000, HostPortEnd: 8001, Port: 80, PortEnd: 81}, "a", false, 0, 0)
	if err != nil || len(bs) != 2 || bs[0].Host.Num != 8000 || bs[0].Target != 80 || bs[1].Host.Num != 8001 || bs[1].Target != 81 {
		t.Fatalf("Allocate 8000-8001:80-81: %v %v", bs, err)
	}
	// Those are now held, for this sandbox.
	if _, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 8001, Port: 90}, "b", false, 0, 0); err == nil ||
		!strings.Contains(err.Error(), "already published by sandbox a (0.0.0.0:8001->81/tcp)") {
		t.Errorf("Allocate of a held port: %v", err)
	}
	// A host range for one sandbox port takes a free port of it: 9000 is
	// held, 9001 a host socket's.
	a.Hold(Binding{Host: tcp("", 9000), Target: 1, Sandbox: "c"})
	for range 5 { // the search starts at random
		bs, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 9000, HostPortEnd: 9002, Port: 80}, "d", false, 0, 0)
		if err != nil || len(bs) != 1 || bs[0].Host.Num != 9002 {
			t.Fatalf("Allocate 9000-9002:80: %v %v, want 9002", bs, err)
		}
		a.Release(bs[0])
	}
	// No host port: each sandbox port gets one of [lo, hi].
	bs, err = a.Allocate(ports.Mapping{Proto: ports.TCP, Port: 80, PortEnd: 81}, "e", false, 9000, 9003)
	if err != nil || len(bs) != 2 || bs[0].Host.Num < 9002 || bs[1].Host.Num < 9002 || bs[0].Host.Num == bs[1].Host.Num {
		t.Fatalf("Allocate :80-81 from 9000-9003: %v %v", bs, err)
	}
	_, err = a.Allocate(ports.Mapping{Proto: ports.TCP, Port: 82}, "e", false, 9000, 9003)
	if err == nil || err.Error() != "no free host port for 82/tcp: every port is published or in use" || !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Allocate with the range full: %v", err)
	}
	// Released ports are free again.
	a.Release(bs[1])
	if err := a.Check(bs[1].Host); err != nil {
		t.Errorf("Check after Release: %v", err)
	}
}

// A probe that cannot tell ends a search at once, wrapped, rather than
// trying every port of the range.
func TestFirstStopsOnProbeFailure(t *testing.T) {
	host := &fakeHost{fail: unix.EADDRNOTAVAIL}
	_, err := New(host.probe).First(Binding{Host: tcp("192.0.2.1", 0)}, 9000, 9999)
	if !errors.Is(err, unix.EADDRNOTAVAIL) || IsTaken(err) || !strings.HasPrefix(err.Error(), "check host port 192.0.2.1:") {
		t.Errorf("First with a failing probe: %v", err)
	}
	if host.calls != 1 {
		t.Errorf("First probed %d ports, want 1", host.calls)
	}
}

func TestNATPorts(t *testing.T) {
	for _, c := range []struct {
		min, max, wantMin, wantMax uint16
		lo, hi                     int
		err                        bool
	}{
		{0, 0, 61000, 65535, 32768, 60999, false}, // Linux's default ephemeral range
		{0, 0, 27696, 32231, 32232, 65535, false}, // the default moves below the ephemeral range
		{40000, 41000, 0, 0, 32768, 60999, true},  // overlaps
		{20000, 20100, 20000, 20100, 32768, 60999, false},
		{0, 0, 0, 0, 2000, 65535, true}, // no room
	} {
		min, max, err := NATRange(c.min, c.max, c.lo, c.hi)
		if (err != nil) != c.err || min != c.wantMin || max != c.wantMax {
			t.Errorf("NATRange(%d, %d) with ephemeral %d-%d = %d-%d, %v", c.min, c.max, c.lo, c.hi, min, max, err)
		}
	}
}

// Balanced bindings of other sandboxes share exactly the same host port;
// anything else that claims it is refused in one line naming the port and
// its holder, and a port chosen for a balanced binding is a free one.
func TestBalancedBindingsShare(t *testing.T) {
	a := New(func(Port) error { return nil })
	m := ports.Mapping{Proto: ports.TCP, HostPort: 8080, Port: 80}
	for _, sb := range []string{"a", "b", "c"} {
		if _, err := a.Allocate(m, sb, true, 0, 0); err != nil {
			t.Fatalf("balanced binding of %s: %v", sb, err)
		}
	}
	lo := m
	lo.HostIP = netip.MustParseAddr("127.0.0.1")
	for _, c := range []struct {
		m       ports.Mapping
		sandbox string
		balance bool
		want    string
	}{
		{m, "d", false, "--balance"},
		{m, "a", true, "one backend"},
		{lo, "d", true, "one host address"},
	} {
		_, err := a.Allocate(c.m, c.sandbox, c.balance, 0, 0)
		if !IsTaken(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "8080") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s publishing %v (balance %v): %v, want one line naming 8080 and %q", c.sandbox, c.m, c.balance, err, c.want)
		}
	}
	if _, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 9000, Port: 80}, "e", false, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 9000, Port: 80}, "f", true, 0, 0); !IsTaken(err) || !strings.Contains(err.Error(), "without --balance") {
		t.Errorf("a balanced binding of a port published without --balance: %v, want taken", err)
	}
	bs, err := a.Allocate(ports.Mapping{Proto: ports.TCP, HostPort: 8080, HostPortEnd: 8081, Port: 80}, "g", true, 0, 0)
	if err != nil || len(bs) != 1 || bs[0].Host.Num != 8081 {
		t.Errorf("a balanced binding of a range: %v, %v; want the free 8081", bs, err)
	}
	a.Release(Binding{Host: Port{Proto: ports.TCP, Num: 8080}, Target: 80, Sandbox: "a", Balance: true})
	if _, err := a.Allocate(m, "a", true, 0, 0); err != nil {
		t.Errorf("a backend that left comes back: %v", err)
	}
}

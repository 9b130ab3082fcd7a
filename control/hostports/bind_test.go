package hostports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// newHostNS is a namespace standing in for the host, loopback up and no
// BPF program attached; it returns a function that runs code inside it.
func newHostNS(t *testing.T) func(func() error) {
	t.Helper()
	testenv.RequirePrivileges(t)
	path := fmt.Sprintf("/run/netns/ebpfnet-hostportstest-%d", rand.Uint32())
	if err := namespace.Create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { namespace.Remove(path) })
	in := func(fn func() error) {
		t.Helper()
		if err := namespace.Do(path, fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return in
}

// hostSocket binds a socket as a host process might: with SO_REUSEADDR
// (and SO_REUSEPORT when reusePort), listening when listen. It runs in the
// namespace it should live in; t's cleanup closes it.
func hostSocket(t *testing.T, typ int, addr string, port int, reusePort, listen bool) error {
	a := netip.MustParseAddr(addr)
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port}
	if a.Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: a.As16(), Port: port}
	} else {
		sa.(*unix.SockaddrInet4).Addr = a.As4()
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return err
	}
	if listen {
		return unix.Listen(fd, 1)
	}
	return nil
}

// pub is a binding of host port port to sandbox port 80.
func pub(proto, hostIP string, port uint16) Binding {
	b := Binding{Host: Port{Proto: ports.Protocol(proto), Num: port}, Target: 80}
	if hostIP != "" {
		b.Host.Addr = netip.MustParseAddr(hostIP)
	}
	return b
}

// held is an allocator that asks the host namespace (Bind) and holds bs,
// each for sandbox other.
func held(bs ...Binding) *Allocator {
	a := New(Bind)
	for _, b := range bs {
		b.Sandbox = "other"
		a.Hold(b)
	}
	return a
}

// The probe before a publish sees every socket a host process may have on
// the port, whatever options it set; it needs no BPF.
func TestCheckSeesHostSockets(t *testing.T) {
	in := newHostNS(t)
	in(func() error {
		return errors.Join(
			hostSocket(t, unix.SOCK_STREAM, "0.0.0.0", 9000, false, true),  // a listener
			hostSocket(t, unix.SOCK_STREAM, "0.0.0.0", 9001, false, false), // bound, not listening
			hostSocket(t, unix.SOCK_DGRAM, "0.0.0.0", 9002, true, false),
			hostSocket(t, unix.SOCK_DGRAM, "127.0.0.1", 9003, true, false),
			hostSocket(t, unix.SOCK_STREAM, "::1", 9006, false, true), // IPv6 alone
		)
	})
	taken := held(pub("tcp", "", 9004))
	in(func() error {
		for _, c := range []struct {
			p    Binding
			want string // "" for free
		}{
			{pub("tcp", "", 9000), "host port 9000/tcp is in use by a process on the host"},
			{pub("tcp", "127.0.0.1", 9000), "host port 127.0.0.1:9000/tcp is in use by a process on the host"},
			{pub("tcp", "", 9001), "host port 9001/tcp is in use by a process on the host"},
			{pub("udp", "", 9002), "host port 9002/udp is in use by a process on the host"},
			{pub("udp", "", 9003), "host port 9003/udp is in use by a process on the host"},
			{pub("udp", "127.0.0.1", 9003), "host port 127.0.0.1:9003/udp is in use by a process on the host"},
			{pub("tcp", "", 9004), "host port 9004/tcp is already published by sandbox other"},
			{pub("udp", "", 9000), ""}, // another protocol
			{pub("tcp", "", 9005), ""},
			{pub("tcp", "", 9005), ""}, // the probe leaves nothing behind
			// Every address is both families'.
			{pub("tcp", "", 9006), "host port 9006/tcp is in use by a process on the host"},
			{pub("tcp", "::1", 9006), "host port [::1]:9006/tcp is in use by a process on the host"},
			{pub("tcp", "127.0.0.1", 9006), ""},
		} {
			err := taken.Check(c.p.Host)
			var te takenError
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Check(%s): %v, want it free", c.p, err)
			case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.As(err, &te)):
				t.Errorf("Check(%s): %v, want a takenError %q", c.p, err, c.want)
			}
		}
		return nil
	})
}

func TestFirstSkipsPortsInUse(t *testing.T) {
	in := newHostNS(t)
	taken := held(pub("tcp", "", 9200))
	in(func() error {
		// 9201 is a host process's; 9202 is the only free port of the range.
		if err := hostSocket(t, unix.SOCK_STREAM, "0.0.0.0", 9201, false, false); err != nil {
			return err
		}
		for range 5 { // the search starts at random
			p, err := taken.First(pub("tcp", "", 0), 9200, 9202)
			if err != nil || p.Host.Num != 9202 {
				t.Fatalf("First: %d %v, want 9202", p.Host.Num, err)
			}
		}
		taken.Hold(pub("tcp", "", 9202))
		if _, err := taken.First(pub("tcp", "", 0), 9200, 9202); err == nil || err.Error() != "every port is published or in use" {
			t.Errorf("First with every port taken: %v", err)
		}
		// A failure that is not about the port ends the search at once:
		// the namespace has no 192.0.2.1.
		_, err := held().First(pub("tcp", "192.0.2.1", 0), 9300, 9400)
		if !errors.Is(err, unix.EADDRNOTAVAIL) {
			t.Errorf("First on an address the host lacks: %v, want EADDRNOTAVAIL", err)
		}
		return nil
	})
}

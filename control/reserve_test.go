package control

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
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// newHostNS is a namespace standing in for the host, loopback up; it
// returns a function that runs code inside it.
func newHostNS(t *testing.T) func(func() error) {
	t.Helper()
	testenv.RequirePrivileges(t)
	path := fmt.Sprintf("/run/netns/ebpfnet-controltest-%d", rand.Uint32())
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

// bindErr is what another process's bind of proto addr:port gets; reuse
// sets SO_REUSEADDR and SO_REUSEPORT first, as a determined thief would.
func bindErr(proto, addr string, port int, reuse bool) error {
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if reuse {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(addr).As4(), Port: port})
}

func pub(proto, hostIP string, port uint16) store.Publication {
	p := store.Publication{Proto: proto, HostPort: port, Port: 80}
	if hostIP != "" {
		p.HostIP = netip.MustParseAddr(hostIP)
	}
	return p
}

func TestReservationsHoldPorts(t *testing.T) {
	in := newHostNS(t)
	r := &reservations{held: map[reservation]int{}, limit: 100, fileLimit: 1124}
	defer r.close()
	wildTCP, wildUDP := pub("tcp", "", 8080), pub("udp", "", 8080)
	// An address the host does not have (yet): held all the same.
	absent := pub("tcp", "192.0.2.1", 8082)
	in(func() error {
		for _, p := range []store.Publication{wildTCP, wildUDP, pub("tcp", "127.0.0.1", 8081), absent} {
			if opened, err := r.hold(p); !opened || err != nil {
				return fmt.Errorf("hold %s: %v %v", describe(p), opened, err)
			}
		}
		if opened, err := r.hold(wildTCP); opened || err != nil {
			return fmt.Errorf("holding a held port again: opened %v, %v; want false, nil", opened, err)
		}
		for _, c := range []struct {
			proto, addr string
			port        int
		}{
			{"tcp", "0.0.0.0", 8080}, {"tcp", "127.0.0.1", 8080}, {"udp", "0.0.0.0", 8080}, {"udp", "127.0.0.1", 8080},
			{"tcp", "0.0.0.0", 8081}, {"tcp", "127.0.0.1", 8081}, {"tcp", "0.0.0.0", 8082},
		} {
			for _, reuse := range []bool{false, true} {
				if err := bindErr(c.proto, c.addr, c.port, reuse); !errors.Is(err, unix.EADDRINUSE) {
					t.Errorf("bind %s %s:%d (reuse %v): %v, want EADDRINUSE", c.proto, c.addr, c.port, reuse, err)
				}
			}
		}
		// Held, not served: nothing listens, and datagrams do not queue.
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 8080})
		unix.Close(fd)
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("connect to the held TCP port: %v, want ECONNREFUSED", err)
		}
		fd, _ = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		for range 3 {
			if err := unix.Sendto(fd, []byte("hello"), 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 8080}); err != nil {
				t.Errorf("send to the held UDP port: %v", err)
			}
		}
		unix.Close(fd)
		if n, err := unix.IoctlGetInt(r.held[reservationOf(wildUDP)], unix.SIOCINQ); err != nil || n != 0 {
			t.Errorf("the UDP reservation queued %d bytes (%v), want none", n, err)
		}

		// Released ports are the host's again; releasing twice is harmless.
		if err := r.release(wildTCP, absent, wildTCP); err != nil {
			return err
		}
		for _, c := range [][2]string{{"tcp", "0.0.0.0:8080"}, {"tcp", "0.0.0.0:8082"}} {
			addr := netip.MustParseAddrPort(c[1])
			if err := bindErr(c[0], addr.Addr().String(), int(addr.Port()), false); err != nil {
				t.Errorf("bind %s %s after release: %v", c[0], addr, err)
			}
		}
		if err := bindErr("udp", "0.0.0.0", 8080, false); !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("releasing tcp 8080 freed udp 8080: %v", err)
		}
		return nil
	})
	r.close()
	in(func() error {
		if err := bindErr("udp", "0.0.0.0", 8080, false); err != nil {
			t.Errorf("bind udp 8080 after close: %v", err)
		}
		return nil
	})
	if len(r.held) != 0 {
		t.Errorf("%d reservations left after close", len(r.held))
	}
}

func TestReservationsLimit(t *testing.T) {
	in := newHostNS(t)
	r := &reservations{held: map[reservation]int{}, limit: 2, fileLimit: 1026}
	defer r.close()
	if err := r.room(3); err == nil || !strings.Contains(err.Error(), "open-file limit is 1026") {
		t.Errorf("room for 3 of 2: %v, want the open-file limit named", err)
	}
	if err := r.room(2); err != nil {
		t.Errorf("room for 2 of 2: %v", err)
	}
	in(func() error {
		for port := range uint16(2) {
			if _, err := r.hold(pub("tcp", "", 9000+port)); err != nil {
				return err
			}
		}
		_, err := r.hold(pub("tcp", "", 9002))
		if err == nil || !strings.Contains(err.Error(), "hold host port 9002/tcp") || !strings.Contains(err.Error(), "LimitNOFILE") {
			t.Errorf("a hold past the limit: %v", err)
		}
		return nil
	})
}

func TestReservationsSync(t *testing.T) {
	in := newHostNS(t)
	r := &reservations{held: map[reservation]int{}, limit: 100, fileLimit: 1124}
	defer r.close()
	a, b, c, d := pub("tcp", "", 9100), pub("udp", "", 9101), pub("tcp", "127.0.0.1", 9102), pub("tcp", "", 9103)
	in(func() error {
		for _, p := range []store.Publication{a, b} {
			if _, err := r.hold(p); err != nil {
				return err
			}
		}
		// A host process took d while nobody held it.
		thief, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(thief)
		if err := unix.Bind(thief, &unix.SockaddrInet4{Port: 9103}); err != nil {
			return err
		}
		err = r.sync([]store.Publication{b, c, d})
		if err == nil || !strings.Contains(err.Error(), "1 of 3 published host ports are not held") ||
			!strings.Contains(err.Error(), "host port 9103/tcp is in use by a process on the host") || strings.Contains(err.Error(), "\n") {
			t.Errorf("sync with a port taken: %v", err)
		}
		if err := bindErr("tcp", "0.0.0.0", 9100, false); err != nil {
			t.Errorf("sync kept a port no publication has: %v", err)
		}
		for _, p := range []store.Publication{b, c} {
			if _, ok := r.held[reservationOf(p)]; !ok {
				t.Errorf("sync did not hold %s", describe(p))
			}
		}
		if len(r.held) != 2 {
			t.Errorf("%d held after sync, want 2", len(r.held))
		}
		return nil
	})
}

func TestFirstFreeClaimsAPortNobodyHas(t *testing.T) {
	in := newHostNS(t)
	r := &reservations{held: map[reservation]int{}, limit: 100, fileLimit: 1124}
	defer r.close()
	hold := func(p store.Publication) error { _, err := r.hold(p); return err }
	taken := portIndex{}
	taken.add(pub("tcp", "", 9200), "other")
	in(func() error {
		// 9201 is a host process's; 9202 is the only free port of the range.
		l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(l)
		if err := unix.Bind(l, &unix.SockaddrInet4{Port: 9201}); err != nil {
			return err
		}
		for range 5 { // the search starts at random
			p, err := firstFree(pub("tcp", "", 0), 9200, 9202, taken, hold)
			if err != nil || p.HostPort != 9202 {
				t.Fatalf("firstFree: %d %v, want 9202", p.HostPort, err)
			}
			if err := bindErr("tcp", "0.0.0.0", 9202, true); !errors.Is(err, unix.EADDRINUSE) {
				t.Fatalf("the port firstFree chose is not held: %v", err)
			}
			r.release(p)
		}
		taken.add(pub("tcp", "", 9202), "other")
		if _, err := firstFree(pub("tcp", "", 0), 9200, 9202, taken, hold); err == nil || err.Error() != "every port is published or in use" {
			t.Errorf("firstFree with every port taken: %v", err)
		}
		// A failure that is not about the port ends the search at once.
		r.limit = 0
		if _, err := firstFree(pub("tcp", "", 0), 9300, 9400, portIndex{}, hold); err == nil || !strings.Contains(err.Error(), "open-file limit") {
			t.Errorf("firstFree past the limit: %v", err)
		}
		return nil
	})
}

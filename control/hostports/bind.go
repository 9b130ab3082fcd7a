package hostports

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Bind is the Probe of the daemon: it binds a socket to p and closes it,
// in whatever network namespace the calling thread is in. Without
// SO_REUSEADDR (which Go's net.Listen sets): Linux lets two sockets that
// both set it share a port nobody listens on, so the probe would miss a
// host process's bound UDP socket or unlistening TCP socket. Every
// address is probed with one dual-stack IPv6 socket on [::], which
// collides with a socket of either family; a host without IPv6 is probed
// on 0.0.0.0.
func Bind(p Port) error {
	typ := unix.SOCK_STREAM
	if p.Proto == ports.UDP {
		typ = unix.SOCK_DGRAM
	}
	if !p.Addr.Is4() {
		fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			defer unix.Close(fd)
			var addr [16]byte
			if p.Addr.IsValid() {
				addr = p.Addr.As16()
			}
			return unix.Bind(fd, &unix.SockaddrInet6{Addr: addr, Port: int(p.Num)})
		}
		if p.Addr.IsValid() || !errors.Is(err, unix.EAFNOSUPPORT) {
			return err
		}
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var addr [4]byte
	if p.Addr.IsValid() {
		addr = p.Addr.As4()
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Addr: addr, Port: int(p.Num)})
}

// isInUse reports whether a probe found a socket on the port.
func isInUse(err error) bool { return errors.Is(err, unix.EADDRINUSE) }

package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// EchoPort is where Serve listens, TCP and UDP.
const EchoPort = 7777

// Serve runs a TCP and a UDP echo server on port EchoPort in the namespace
// at nsPath until the test ends, on both families.
func Serve(tb TB, nsPath string) {
	tb.Helper()
	ServeOn(tb, nsPath, EchoPort)
}

// ServeOn is Serve on another port.
func ServeOn(tb TB, nsPath string, port int) {
	tb.Helper()
	stop, err := ServeUntilStopped(nsPath, port)
	if err != nil {
		tb.Fatalf("echo server in %s: %v", nsPath, err)
	}
	tb.Cleanup(stop)
}

// ServeTCP listens on port of network ("tcp", "tcp4") in the namespace at
// nsPath until the test ends, and hands each connection to handle, which
// runs on a goroutine of its own and closes it.
func ServeTCP(tb TB, nsPath, network string, port int, handle func(net.Conn)) {
	tb.Helper()
	var l net.Listener
	if err := namespace.Do(nsPath, func() (err error) { l, err = net.Listen(network, fmt.Sprintf(":%d", port)); return err }); err != nil {
		tb.Fatalf("listen in %s: %v", nsPath, err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// ServeUntilStopped is ServeOn until stop is called: for a namespace that
// goes before the test ends, which an open socket would otherwise keep.
func ServeUntilStopped(nsPath string, port int) (stop func(), err error) {
	var (
		tl net.Listener
		ul net.PacketConn
	)
	err = namespace.Do(nsPath, func() error {
		var err error
		if tl, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		if ul, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port)); err != nil {
			tl.Close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 65536) // room for fragmented datagrams
				for {
					c.SetDeadline(time.Now().Add(30 * time.Second))
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(answer(buf[:n], c.RemoteAddr()))
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 65536) // room for fragmented datagrams
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(answer(buf[:n], from), from)
		}
	}()
	return func() { tl.Close(); ul.Close() }, nil
}

const probeTimeout = time.Second

// answer is the echo server's reply: the message, or the caller's address
// when asked for it.
func answer(msg []byte, from net.Addr) []byte {
	if string(msg) == peerQuery {
		return []byte(from.String())
	}
	return msg
}

// TCP connects from the namespace at nsPath to dst:EchoPort and checks the echo.
func TCP(nsPath, dst string) error { return TCPTo(nsPath, net.JoinHostPort(dst, fmt.Sprint(EchoPort))) }

// UDP sends a datagram from the namespace at nsPath to dst:EchoPort and
// waits for the echo.
func UDP(nsPath, dst string) error { return UDPTo(nsPath, net.JoinHostPort(dst, fmt.Sprint(EchoPort))) }

// TCPTo connects from the namespace at nsPath to addr (host:port) and checks the echo.
func TCPTo(nsPath, addr string) error {
	c, err := Dial(nsPath, "tcp", addr, "")
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "tcp", addr)
}

// UDPTo sends a datagram from the namespace at nsPath to addr and waits for the echo.
func UDPTo(nsPath, addr string) error {
	c, err := Dial(nsPath, "udp", addr, "")
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "udp", addr)
}

// Dial opens a connection from the namespace at nsPath, optionally from a
// given local address.
func Dial(nsPath, network, addr, local string) (net.Conn, error) {
	var c net.Conn
	err := namespace.Do(nsPath, func() error {
		d := net.Dialer{Timeout: probeTimeout}
		if local != "" {
			var err error
			if strings.HasPrefix(network, "udp") {
				d.LocalAddr, err = net.ResolveUDPAddr(network, local)
			} else {
				d.LocalAddr, err = net.ResolveTCPAddr(network, local)
			}
			if err != nil {
				return err
			}
		}
		var err error
		c, err = d.Dial(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", network, addr, err)
	}
	return c, nil
}

// Peer asks an echo server who it sees connecting: the source address of
// the connection as it arrives.
func Peer(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write([]byte(peerQuery)); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// peerQuery makes the echo server answer with the caller's address.
const peerQuery = "peer?"

func echo(c net.Conn, proto, dst string) error {
	msg := []byte("ebpfnet-probe")
	c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("%s to %s: %w", proto, dst, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("%s to %s: %w", proto, dst, err)
	}
	if !bytes.Equal(buf, msg) {
		return fmt.Errorf("%s to %s: echo %q, want %q", proto, dst, buf, msg)
	}
	return nil
}

// Reach checks TCP, UDP and ICMP from a sandbox to dst, which must serve
// with Serve. It returns one error per protocol that failed.
func (h *Host) Reach(sandbox, dst string) []error {
	var errs []error
	for _, err := range []error{TCP(h.NS(sandbox), dst), UDP(h.NS(sandbox), dst), h.Ping(sandbox, dst)} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// MustReach fails the test unless TCP, UDP and ICMP all get through.
func (h *Host) MustReach(sandbox, dst string) {
	h.tb.Helper()
	if errs := h.Reach(sandbox, dst); len(errs) > 0 {
		h.tb.Fatalf("%s cannot reach %s: %v", sandbox, dst, errors.Join(errs...))
	}
}

// MustNotReach fails the test if TCP, UDP or ICMP gets through.
func (h *Host) MustNotReach(sandbox, dst string) {
	h.tb.Helper()
	if errs := h.Reach(sandbox, dst); len(errs) != 3 {
		h.tb.Fatalf("%s reached %s over %d of 3 protocols; want none (failures: %v)", sandbox, dst, 3-len(errs), errs)
	}
}

package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// udpLoop reads the UDP sockets of every sandbox on one OS thread of its
// own, which sleeps in epoll_wait rather than in Go's netpoller. At a
// steady load below capacity a netpoller reader parks between queries, and
// every query then woke the netpoller's thread, which woke another to spin
// for work, and the scheduler searched for runnable goroutines: more CPU
// than the answer itself (issue 14). A thread blocked in a system call
// wakes itself, and leaving the call is cheap as long as no other goroutine
// wanted its P. One thread serves all sandboxes, so their number costs
// neither threads nor buffers; in exchange a handler must never block.
type udpLoop struct {
	epfd int
	wake int // an eventfd: written to end the loop
	done chan struct{}

	mu    sync.Mutex
	socks map[int32]*udpListener // by key, the epoll event's data
	next  int32
}

// udpHandler handles one datagram read from sock: it returns the answer to
// send back at once, packed into out, or nil. It is called on the loop's
// thread, with buffers the loop uses again, and must never block: an
// answer that has to wait is sent later with sock.writeTo.
type udpHandler func(sock *udpListener, b []byte, from netip.AddrPort, out []byte) []byte

// udpListener is one sandbox's socket. The socket is blocking, so nothing
// but the loop reads it (with MSG_DONTWAIT). Reads and late answers use it
// under mu, and remove closes it under mu: os.File would otherwise close
// a blocking socket only when a RawConn.Control call in flight ends, after
// remove returned, and the address would still be taken for a moment.
type udpListener struct {
	f      *os.File
	rc     syscall.RawConn
	key    int32
	handle udpHandler
	mu     sync.Mutex
	closed bool
}

// wakeKey is the eventfd's key; sockets' keys start above it.
const wakeKey = 0

func newUDPLoop() (*udpLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll instance: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeKey})
		if err != nil {
			unix.Close(wake)
		}
	}
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("create eventfd of the udp loop: %w", err)
	}
	l := &udpLoop{epfd: epfd, wake: wake, done: make(chan struct{}), socks: map[int32]*udpListener{}, next: wakeKey}
	go l.run()
	return l, nil
}

// listen opens a UDP socket on addr in the calling thread's namespace and
// reads it from the loop's thread.
func (l *udpLoop) listen(addr netip.AddrPort, handle udpHandler) (*udpListener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open udp socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind udp socket to %s: %w", addr, err)
	}
	f := os.NewFile(uintptr(fd), "udp:"+addr.String())
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("use udp socket on %s: %w", addr, err)
	}
	s := &udpListener{f: f, rc: rc, handle: handle}
	l.mu.Lock()
	l.next++
	s.key = l.next
	l.socks[s.key] = s
	l.mu.Unlock()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: s.key}); err != nil {
		l.remove(s)
		return nil, fmt.Errorf("poll udp socket on %s: %w", addr, err)
	}
	return s, nil
}

// remove stops reading s and closes it.
func (l *udpLoop) remove(s *udpListener) {
	l.mu.Lock()
	delete(l.socks, s.key)
	l.mu.Unlock()
	s.rc.Control(func(fd uintptr) { unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.f.Close()
}

// close ends the loop once its sockets are removed, and waits for it.
func (l *udpLoop) close() {
	unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-l.done
	unix.Close(l.wake)
	unix.Close(l.epfd)
}

func (l *udpLoop) run() {
	defer close(l.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var (
		events [16]unix.EpollEvent
		// A query over UDP may be as large as a datagram; answers are
		// packed here, fitted to what the asker accepts.
		buf = make([]byte, 1<<16)
		out = make([]byte, 1<<16)
	)
	for {
		n, err := unix.EpollWait(l.epfd, events[:], -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			panic(fmt.Sprintf("wait for udp queries: %v", err)) // only a bug gets here: EBADF, EFAULT, EINVAL
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == wakeKey {
				return
			}
			l.mu.Lock()
			s := l.socks[ev.Fd]
			l.mu.Unlock()
			if s != nil {
				// One datagram per socket and round, the rest in the next
				// (epoll is level-triggered): a flood from one sandbox
				// never holds up the others.
				s.readOne(buf, out)
			}
		}
	}
}

func (s *udpListener) readOne(buf, out []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.rc.Control(func(fd uintptr) {
		n, from, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		sa, ok := from.(*unix.SockaddrInet4)
		if err != nil || !ok {
			return
		}
		to := netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		if b := s.handle(s, buf[:n], to, out); b != nil {
			sendTo(int(fd), b, to)
		}
	})
}

// writeTo sends b to to, unless s is closed by now.
func (s *udpListener) writeTo(b []byte, to netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.rc.Control(func(fd uintptr) { sendTo(int(fd), b, to) })
	}
}

// sendTo never waits for room in the socket's buffer, which would stop
// the loop for every sandbox: an answer it has no room for is dropped,
// and the asker asks again, as for any datagram lost.
func sendTo(fd int, b []byte, to netip.AddrPort) {
	unix.Sendto(fd, b, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
}

package control

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// The datapath claims a published port without any socket. Were nothing
// bound to it, any local user could bind the port: a connection made from
// it would own its flow ahead of the publication, and the port would be
// theirs the moment the publication went. The daemon therefore holds each
// published host port as Docker does: a socket bound to the publication's
// host address and port with neither SO_REUSEADDR nor SO_REUSEPORT, so
// every other bind of the port fails with EADDRINUSE, whatever its
// address, options or user. A TCP reservation is bound and never listens:
// what the datapath leaves to the host's stack is refused, not half-opened
// for nobody to accept, and no socket lookup takes it for a server. The
// holds last as long as the daemon: on start the reconciler opens them
// again.

// reservations is the set of held host ports: one socket, so one open file,
// per publication. Every operation is O(1) per publication.
type reservations struct {
	mu   sync.Mutex
	held map[reservation]int // the socket holding each port
	// limit is how many the daemon may hold: its open-file limit less
	// what it keeps for its own files.
	limit, fileLimit int
}

// reservation is what one socket holds. Small and pointer-free, so 50,000
// of them cost the garbage collector nothing.
type reservation struct {
	addr  [4]byte // 0.0.0.0 for every address of the host
	port  uint16
	proto uint8
}

func reservationOf(p store.Publication) reservation {
	r := reservation{port: p.HostPort, proto: protoNumber(p.Proto)}
	if p.HostIP.IsValid() {
		r.addr = p.HostIP.As4()
	}
	return r
}

// newReservations sizes the set by the open-file limit. Go raised the soft
// limit to the hard one when the daemon started; only someone allowed to
// raise the hard limit (LimitNOFILE= in a systemd unit) can give it more.
func newReservations() (*reservations, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("read the open-file limit: %w", err)
	}
	files := int(min(rl.Cur, 1<<30))
	// The rest is the daemon's own: BPF objects, netlink sockets, API
	// connections, the store, and two DNS sockets per sandbox of a user
	// network, which grow with the files the host can afford.
	own := max(1024, files/8)
	return &reservations{held: map[reservation]int{}, fileLimit: files, limit: max(files-own, files/2)}, nil
}

// HeldPorts says how many published host ports the daemon holds, and may.
type HeldPorts struct {
	Held      int `json:"held"`
	Max       int `json:"max"`       // its open-file limit, less the files it keeps for itself
	FileLimit int `json:"fileLimit"` // its open-file limit (RLIMIT_NOFILE)
}

func (r *reservations) status() HeldPorts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return HeldPorts{Held: len(r.held), Max: r.limit, FileLimit: r.fileLimit}
}

// room fails, before anything is opened, when n more reservations would
// pass the open-file limit.
func (r *reservations) room(n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.held)+n > r.limit {
		return fmt.Errorf("publish %d host ports: the daemon holds %d and may hold %d, one open file each (its open-file limit is %d: raise it, e.g. LimitNOFILE= in its systemd unit)",
			n, len(r.held), r.limit, r.fileLimit)
	}
	return nil
}

// hold opens p's reservation and reports whether it did: false when the
// port was held already. It runs in the dataplane's namespace, where the
// socket must live.
func (r *reservations) hold(p store.Publication) (bool, error) {
	k := reservationOf(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.held[k]; ok {
		return false, nil
	}
	if len(r.held) >= r.limit {
		return false, fmt.Errorf("hold host port %s: the daemon may hold %d host ports, one open file each (its open-file limit is %d: raise it, e.g. LimitNOFILE= in its systemd unit)",
			hostPort(p), r.limit, r.fileLimit)
	}
	fd, err := reserve(k)
	if errors.Is(err, unix.EMFILE) {
		err = fmt.Errorf("%w (the daemon's open-file limit is %d: raise it, e.g. LimitNOFILE= in its systemd unit)", err, r.fileLimit)
	}
	if err != nil {
		return false, fmt.Errorf("hold host port %s: %w", hostPort(p), err)
	}
	r.held[k] = fd
	return true, nil
}

// dropAll is a classic socket filter that accepts nothing.
var dropAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// reserve opens a socket holding k.
func reserve(k reservation) (int, error) {
	typ := unix.SOCK_STREAM
	if k.proto == unix.IPPROTO_UDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if typ == unix.SOCK_DGRAM {
		// Nobody reads the socket: datagrams the datapath lets through to it
		// must not queue. Set before bind, so none arrives unfiltered.
		prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("attach a drop-all filter: %w", err)
		}
	}
	// A host address may be gone for a while (DHCP renewing at boot): the
	// port on it is held all the same.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set IP_FREEBIND: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: k.addr, Port: int(k.port)}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// release closes the reservations of pubs; a port that is not held is
// skipped.
func (r *reservations) release(pubs ...store.Publication) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, p := range pubs {
		k := reservationOf(p)
		if fd, ok := r.held[k]; ok {
			delete(r.held, k)
			if err := unix.Close(fd); err != nil {
				errs = append(errs, fmt.Errorf("release host port %s: %w", hostPort(p), err))
			}
		}
	}
	return errors.Join(errs...)
}

// sync holds the ports of pubs, and only those. A port it cannot hold is
// reported and skipped; the error names the first few in one line. It runs
// in the dataplane's namespace.
func (r *reservations) sync(pubs []store.Publication) error {
	want := make(map[reservation]bool, len(pubs))
	for _, p := range pubs {
		want[reservationOf(p)] = true
	}
	r.mu.Lock()
	for k, fd := range r.held {
		if !want[k] {
			delete(r.held, k)
			unix.Close(fd)
		}
	}
	r.mu.Unlock()
	var failed []string
	for _, p := range pubs {
		_, err := r.hold(p)
		switch {
		case errors.Is(err, unix.EADDRINUSE):
			failed = append(failed, inUse(p).Error())
		case err != nil:
			failed = append(failed, err.Error())
		}
	}
	if len(failed) == 0 {
		return nil
	}
	const shown = 5
	n, more := len(failed), ""
	if n > shown {
		more = fmt.Sprintf(" (and %d more)", n-shown)
		failed = failed[:shown]
	}
	return fmt.Errorf("%d of %d published host ports are not held, so a host process may take them: %s%s",
		n, len(want), strings.Join(failed, "; "), more)
}

// close releases every held port.
func (r *reservations) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, fd := range r.held {
		unix.Close(fd)
		delete(r.held, k)
	}
}

// inUse is the error of a host port some host process has bound.
func inUse(p store.Publication) error {
	return takenError(fmt.Sprintf("host port %s is in use by a process on the host", hostPort(p)))
}

// takenError says a host port is published or in use: a search for a free
// port moves on to the next one.
type takenError string

func (e takenError) Error() string { return string(e) }

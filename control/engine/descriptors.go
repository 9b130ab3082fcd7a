package engine

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// DescriptorsPerSandbox are the file descriptors the daemon holds per
// sandbox on a user-defined network: the UDP and TCP sockets of its
// resolver on 127.0.0.11:53, which are bound in the sandbox's own
// namespace and so cannot be shared.
// Everything else it holds (the store, BPF objects, netlink and API
// sockets, the thread in the dataplane's namespace) does not grow with the
// sandboxes: with the soft RLIMIT_NOFILE raised to the hard one at start,
// a host holds about (limit - 100) / 2 sandboxes with resolvers.
const DescriptorsPerSandbox = 2

// descriptorHeadroom are the descriptors a change needs to be sure of
// before it starts: those it keeps, and those it opens for a while (the
// namespace it enters, netlink sockets, a store transaction, an API
// request), so that it never runs out half-way and leaves half a sandbox.
const descriptorHeadroom = 64

// errTooManyFiles marks a change refused for the limit on open files.
var errTooManyFiles = errors.New("too many open files")

// checkDescriptors refuses a change when fewer than descriptorHeadroom
// descriptors are free under RLIMIT_NOFILE. It opens them and closes them
// again: the kernel hands out any free descriptor, so holding that many
// proves they are there, at a cost that does not grow with how many are
// open (counting /proc/self/fd would).
func checkDescriptors(what string) error {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range descriptorHeadroom {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			var lim unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
			return errdefs.Conflict(fmt.Errorf("%s: the daemon is at its limit of open files (RLIMIT_NOFILE %d, %d per sandbox): %w (raise the daemon's hard limit, LimitNOFILE= in its unit)",
				what, lim.Cur, DescriptorsPerSandbox, errTooManyFiles))
		}
		if err != nil {
			return fmt.Errorf("%s: check free file descriptors: %w", what, err)
		}
		fds = append(fds, fd)
	}
	return nil
}

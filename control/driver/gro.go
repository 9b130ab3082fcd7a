package driver

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TurnGROOn turns GRO on on interface ifname of the calling thread's
// namespace, with ethtool's one-feature request (ETHTOOL_SGRO), which
// the kernel applies as it does a change of the "rx-gro" feature. The
// feature-set requests read every feature's name first, and the library
// that made them allocated a MiB of buffers per call: most of what a
// sandbox create allocated, which made the collector run every few
// creates.
func TurnGROOn(ifname string) error {
	if _, err := ethtoolValue(ifname, unix.ETHTOOL_SGRO, 1); err != nil {
		return fmt.Errorf("turn GRO on on %s: %w", ifname, err)
	}
	return nil
}

// ethtoolValue makes an ethtool request that carries one value (struct
// ethtool_value) about ifname, and returns the value the kernel left.
func ethtoolValue(ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name too long")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open socket: %w", err)
	}
	defer unix.Close(fd)
	value := struct{ cmd, data uint32 }{cmd, data}
	// struct ifreq with ifr_data set: a name and a pointer, padded to the
	// union's size.
	var req struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(req.name[:], ifname)
	req.data = unsafe.Pointer(&value)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return 0, errno
	}
	return value.data, nil
}

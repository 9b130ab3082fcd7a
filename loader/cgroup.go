package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultCgroup2 is where a cgroup2 hierarchy is mounted when the machine
// has none mounted.
const DefaultCgroup2 = "/run/ebpfnet/cgroup2"

// Cgroup2Root finds a mounted cgroup2 hierarchy, mounting one at
// DefaultCgroup2 when there is none. Every mount shows the same hierarchy,
// whose root holds every process.
func Cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && fields[3] == "/" {
				return fields[4], nil
			}
		}
	}
	if err := os.MkdirAll(DefaultCgroup2, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", DefaultCgroup2, err)
	}
	if err := unix.Mount("cgroup2", DefaultCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("mount cgroup2 on %s: %w", DefaultCgroup2, err)
	}
	return DefaultCgroup2, nil
}

// AttachSockets attaches the socket hooks to a cgroup2 directory and pins
// their links. It is idempotent and points pinned links at this binary's
// programs.
func (d *Datapath) AttachSockets(cgroup string) error {
	for _, h := range []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{"connect4", ebpf.AttachCGroupInet4Connect, d.Sock.SockConnect4},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, d.Sock.SockSendmsg4},
		{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, d.Sock.SockRecvmsg4},
		{"getpeername4", ebpf.AttachCgroupInet4GetPeername, d.Sock.SockGetpeername4},
		{"connect6", ebpf.AttachCGroupInet6Connect, d.Sock.SockConnect6},
		{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, d.Sock.SockSendmsg6},
		{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, d.Sock.SockRecvmsg6},
		{"getpeername6", ebpf.AttachCgroupInet6GetPeername, d.Sock.SockGetpeername6},
		{"bind4", ebpf.AttachCGroupInet4Bind, d.Sock.SockBind4},
		{"bind6", ebpf.AttachCGroupInet6Bind, d.Sock.SockBind6},
	} {
		pin := filepath.Join(d.pinDir, "cgroup-links", h.name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			err = l.Update(h.prog)
			l.Close()
			if err == nil {
				continue
			}
			return fmt.Errorf("update %s hook: %w", h.name, err)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open pinned %s hook: %w", h.name, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: h.attach, Program: h.prog})
		if err != nil {
			return fmt.Errorf("attach %s hook to cgroup %s: %w", h.name, cgroup, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin %s hook: %w", h.name, err)
		}
	}
	return nil
}

// SocketHooks lists the socket hooks pinned as attached.
func (d *Datapath) SocketHooks() []string {
	entries, _ := os.ReadDir(filepath.Join(d.pinDir, "cgroup-links"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

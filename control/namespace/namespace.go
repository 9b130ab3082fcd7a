// Package namespace is the one place where ebpfnet enters, creates and
// removes network namespaces.
//
// Entering goes through the CNI plugins' ns package, which runs the work on
// a locked OS thread and throws that thread away afterwards, so no goroutine
// is ever left in a namespace it did not ask for. Named namespaces are bind
// mounts under a directory (/run/netns, where `ip netns` looks).
package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Do runs fn with the calling thread in the network namespace at path.
func Do(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// Create makes a new, empty network namespace and binds it to path.
func Create(path string) error {
	return bindAt(path, func(tid int) (string, error) {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return "", fmt.Errorf("unshare network namespace: %w", err)
		}
		return fmt.Sprintf("/proc/self/task/%d/ns/net", tid), nil
	})
}

// Bind makes path refer to the existing namespace at src (a sandbox sharing
// another's namespace, or the host namespace).
func Bind(src, path string) error {
	return bindAt(path, func(int) (string, error) { return src, nil })
}

// bindAt creates the file at path and bind-mounts source() onto it, on a
// thread of its own: Create leaves that thread in the new namespace, and Go
// discards a thread whose goroutine exits while locked to it.
func bindAt(path string, source func(tid int) (string, error)) error {
	dir := filepath.Dir(path)
	if err := makeSharedMountDir(dir); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace file %s: %w", path, err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		src, err := source(unix.Gettid())
		if err == nil {
			err = unix.Mount(src, path, "none", unix.MS_BIND, "")
			if err != nil {
				err = fmt.Errorf("bind %s to %s: %w", src, path, err)
			}
		}
		done <- err
	}()
	if err := <-done; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// ShareDir makes dir the shared mount point that namespaces are bound
// under, and fails when what is bound there would stay invisible to the
// processes that should use it: when this process runs in a mount
// namespace of its own (`ip netns exec`, systemd's PrivateMounts=) where
// dir is a slave of the original, whose binds never propagate back.
func ShareDir(dir string) error {
	if err := makeSharedMountDir(dir); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(dir) // the mount table has real paths
	if err != nil {
		return fmt.Errorf("resolve %s: %w", dir, err)
	}
	slave, err := isSlaveMount(real)
	if err != nil {
		return err
	}
	if slave {
		return fmt.Errorf("namespaces bound under %s would be invisible outside this process's mount namespace, "+
			"a private copy (ip netns exec, or systemd's PrivateMounts=) whose mounts do not propagate back "+
			"(start the daemon in the host's mount namespace: nsenter --net=PATH, not ip netns exec)", dir)
	}
	return nil
}

// isSlaveMount reports whether the mount at dir receives mounts from a
// master but sends none back, from the calling thread's mount namespace.
func isSlaveMount(dir string) (bool, error) {
	// thread-self: a thread that entered another mount namespace sees its
	// own mounts, where /proc/self would show the main thread's.
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mount table: %w", err)
	}
	slave := false
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root mountpoint options [optional...] - type source super
		fields := strings.Fields(line)
		if len(fields) < 7 || fields[4] != dir {
			continue
		}
		slave = false // the last mount on dir is the one that shows
		for _, f := range fields[6:] {
			if f == "-" {
				break
			}
			slave = slave || strings.HasPrefix(f, "master:")
		}
	}
	return slave, nil
}

// makeSharedMountDir makes dir a shared mount point, as `ip netns` does, so
// namespaces bound inside it show in every mount namespace that sees dir.
func makeSharedMountDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// Remove unbinds and deletes a namespace file; a missing one is fine.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unbind namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace file %s: %w", path, err)
	}
	return nil
}

// ID identifies a namespace (device and inode of its nsfs file).
type ID struct{ Dev, Ino uint64 }

// IDOf returns the namespace a file refers to.
func IDOf(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, fmt.Errorf("stat namespace %s: %w", path, err)
	}
	return ID{st.Dev, st.Ino}, nil
}

// IsNamespace reports whether path is a bound network namespace.
func IsNamespace(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// Processes lists the PIDs whose network namespace is id.
func Processes(id ID) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if got, err := IDOf(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && got == id {
			pids = append(pids, pid)
		}
	}
	return pids
}

// DisableIPv6 turns IPv6 off in the calling thread's namespace (which
// /proc/sys/net follows), as Docker does for a container on IPv4-only
// networks. Left on, every interface takes a link-local fe80:: address: a
// path to the neighbours and the bridge that the IPv4 datapath neither
// sees nor fences (icc=false, internal and isolated networks). "all" turns
// it off on the interfaces there are, "default" on those still to come.
func DisableIPv6() error { return DisableIPv6On("default", "all") }

// DisableIPv6On turns IPv6 off on the named interfaces of the calling
// thread's namespace alone: where the namespace is someone else's.
func DisableIPv6On(interfaces ...string) error { return setIPv6(false, interfaces) }

// EnableIPv6On turns IPv6 on on the named interfaces of the calling
// thread's namespace: those of dual-stack networks.
func EnableIPv6On(interfaces ...string) error { return setIPv6(true, interfaces) }

// ForwardIPv6On lets the named interfaces of the calling thread's
// namespace forward IPv6. Unlike net.ipv6.conf.all.forwarding it leaves
// the host's other interfaces as they are: a host that forwards ignores
// router advertisements, and may lose the IPv6 route it learnt from them.
func ForwardIPv6On(interfaces ...string) error {
	for _, conf := range interfaces {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/forwarding", []byte("1"), 0o644)
		if errors.Is(err, os.ErrNotExist) {
			return nil // a kernel without IPv6: nothing to forward
		}
		if err != nil {
			return fmt.Errorf("forward IPv6: %w", err) // the error names the file
		}
	}
	return nil
}

func setIPv6(on bool, interfaces []string) error {
	value, action := "1", "disable"
	if on {
		value, action = "0", "enable"
	}
	for _, conf := range interfaces {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte(value), 0o644)
		if errors.Is(err, os.ErrNotExist) && !on {
			return nil // a kernel without IPv6: nothing to turn off
		}
		if err != nil {
			return fmt.Errorf("%s IPv6: %w", action, err) // the error names the file
		}
	}
	return nil
}

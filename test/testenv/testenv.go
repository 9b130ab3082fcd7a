// Package testenv holds what every privileged ebpfnet test needs to know
// about the machine it runs on.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// RequirePrivileges skips a test that needs root, except in CI (CI set),
// where a privileged test that does not run is a failure.
func RequirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("this test needs root, and CI must run it: run the suite as root")
	}
	tb.Skip("needs root")
}

// HostNamespace makes a network namespace at /run/netns/NAME, lo up, to
// stand for a host in an in-process test; the test's cleanup removes it.
func HostNamespace(tb testing.TB, name string) string {
	tb.Helper()
	path := "/run/netns/" + name
	if err := namespace.Create(path); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { namespace.Remove(path) })
	err := namespace.Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

// Prefix is a random name prefix, kind followed by six hex digits, so
// that tests running side by side never share a name.
func Prefix(kind string) string {
	id := make([]byte, 3)
	rand.Read(id)
	return kind + hex.EncodeToString(id)
}

// ResolvConf writes a resolv.conf naming one upstream server, 10.99.0.2,
// into dir, so that no test forwards to the machine's own resolver.
func ResolvConf(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver 10.99.0.2\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// ContainerNamespace makes a bare network namespace named name, in a
// directory of the test's own, standing for a namespace a container
// runtime made; the test's cleanup removes it.
func ContainerNamespace(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := namespace.Create(p); err != nil {
		tb.Fatal(err)
	}
	// Create makes the directory a shared mount point of its own.
	tb.Cleanup(func() { namespace.Remove(p); unix.Unmount(filepath.Dir(p), unix.MNT_DETACH) })
	return p
}

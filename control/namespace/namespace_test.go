package namespace_test

import (
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// A daemon started by `ip netns exec` runs in a copy of the mount
// namespace where every mount is a slave: what it binds there nobody else
// sees, so ShareDir refuses it, and accepts the original.
func TestShareDirRefusesAPrivateMountNamespace(t *testing.T) {
	testenv.RequirePrivileges(t)
	dir := t.TempDir()
	if err := namespace.ShareDir(dir); err != nil {
		t.Fatalf("in this mount namespace: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })

	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends in a mount namespace of its own,
		// and Go discards it with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- err
			return
		}
		// As ip netns exec does: nothing mounted here propagates back.
		if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			done <- err
			return
		}
		done <- namespace.ShareDir(dir)
	}()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "would be invisible outside this process's mount namespace") {
		t.Fatalf("in a private copy of the mount namespace: %v, want a refusal", err)
	}
}

package namespace_test

import (
	"errors"
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

// A Thread runs every call in its namespace, a call made from a call too,
// leaves its callers where they are, and refuses calls once closed.
func TestThread(t *testing.T) {
	testenv.RequirePrivileges(t)
	path := testenv.HostNamespace(t, testenv.Prefix("thread"))
	want, err := namespace.IDOf(path)
	if err != nil {
		t.Fatal(err)
	}
	here, err := namespace.IDOf("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if here == want {
		t.Fatal("the new namespace is the test's own")
	}
	thread, err := namespace.NewThread(path)
	if err != nil {
		t.Fatal(err)
	}
	inside := func(got *namespace.ID) func() error {
		return func() (err error) {
			*got, err = namespace.IDOf("/proc/thread-self/ns/net")
			return err
		}
	}
	var first, nested namespace.ID
	err = thread.Do(func() error {
		if err := inside(&first)(); err != nil {
			return err
		}
		return thread.Do(inside(&nested))
	})
	if err != nil {
		t.Fatal(err)
	}
	if first != want || nested != want {
		t.Errorf("calls ran in %v and %v, want %v", first, nested, want)
	}
	if err := thread.Do(func() error { return errors.New("refused") }); err == nil || err.Error() != "refused" {
		t.Errorf("a call's error came back as %v", err)
	}
	if after, _ := namespace.IDOf("/proc/thread-self/ns/net"); after != here {
		t.Errorf("the caller moved to %v", after)
	}
	thread.Close()
	if err := thread.Do(func() error { return nil }); !errors.Is(err, namespace.ErrThreadClosed) {
		t.Errorf("a call after Close: %v, want %v", err, namespace.ErrThreadClosed)
	}
}

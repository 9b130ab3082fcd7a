package namespace

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Thread is an OS thread that stays in one network namespace and runs the
// calls handed to it, one at a time. Entering a namespace for a call (Do)
// costs a score of system calls and a fresh thread; a call handed to a
// Thread costs a goroutine switch. The engine does its work in the
// dataplane's namespace this way: publishing a port is a bind probe there.
//
// As with Do, only the calling goroutine is in the namespace: goroutines a
// call starts are not.
type Thread struct {
	calls chan threadCall
	quit  chan struct{}
	tid   int
}

type threadCall struct {
	fn   func() error
	done chan error
}

// ErrThreadClosed is returned for calls made after Close.
var ErrThreadClosed = errors.New("namespace thread closed")

// NewThread starts a thread in the network namespace at path.
func NewThread(path string) (*Thread, error) {
	t := &Thread{calls: make(chan threadCall), quit: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: Go ends a thread whose goroutine returns while
		// locked to it, so it never serves another goroutine in the wrong
		// namespace.
		runtime.LockOSThread()
		if err := enter(path); err != nil {
			started <- err
			return
		}
		t.tid = unix.Gettid()
		started <- nil
		for {
			select {
			case c := <-t.calls:
				c.done <- c.fn()
			case <-t.quit:
				return
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return t, nil
}

func enter(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter namespace %s: %w", path, err)
	}
	return nil
}

// Do runs fn on the thread and returns its error. A call made from fn
// itself runs at once: the thread is already in the namespace, and
// waiting for itself would never end.
func (t *Thread) Do(fn func() error) error {
	if unix.Gettid() == t.tid {
		return fn()
	}
	done := make(chan error, 1)
	select {
	case t.calls <- threadCall{fn, done}:
		return <-done
	case <-t.quit:
		return ErrThreadClosed
	}
}

// Close ends the thread once the call it runs returns; later calls fail
// with ErrThreadClosed.
func (t *Thread) Close() { close(t.quit) }

//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The environment's variables: the file of failpoints to fire, and the
// trace.
const (
	FileEnv  = "EBPFNET_FAILPOINTS_FILE"
	TraceEnv = "EBPFNET_FAILPOINTS_TRACE"
)

// points are the failpoints of a process.
type points struct {
	mu      sync.Mutex
	stamp   string            // the file's size and time when read
	actions map[string]string // NAME@N to its action
	hits    map[string]int
}

// state is this process's failpoints: a test binary's alone, never a
// daemon's in production.
var state points

// Hit is a step named name: it kills the process, or returns the errno
// asked for, when a failpoint names this hit of it.
func Hit(name string) error { return state.hit(name, true) }

// Fault is Hit for what runs beside the changes rather than as a step of
// one (the host's watch): it fires as Hit does, but is never traced, for
// its hits come whenever the host changes, not at a change's steps.
func Fault(name string) error { return state.hit(name, false) }

func (s *points) hit(name string, traced bool) error {
	s.mu.Lock()
	s.reload()
	s.hits[name]++
	key := name + "@" + strconv.Itoa(s.hits[name])
	action, ok := s.actions[key]
	delete(s.actions, key)
	if path := os.Getenv(TraceEnv); path != "" && traced {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintln(f, name)
			f.Close()
		}
	}
	s.mu.Unlock()
	switch {
	case !ok:
		return nil
	case action == "crash":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute) // the signal is on its way
	}
	return fmt.Errorf("failpoint %s: %w", name, errnoNamed(action))
}

// reload reads the failpoints' file again when it changed, and counts the
// hits afresh. Callers hold s.mu.
func (s *points) reload() {
	if s.hits == nil {
		s.actions, s.hits = map[string]string{}, map[string]int{}
	}
	path := os.Getenv(FileEnv)
	fi, err := os.Stat(path)
	stamp := ""
	if path != "" && err == nil {
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	if stamp == s.stamp {
		return
	}
	s.stamp, s.actions, s.hits = stamp, map[string]string{}, map[string]int{}
	data, _ := os.ReadFile(path)
	for _, f := range strings.FieldsFunc(string(data), func(r rune) bool { return r == ',' || r == '\n' }) {
		point, action, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			continue
		}
		if !strings.Contains(point, "@") {
			point += "@1"
		}
		s.actions[point] = action
	}
}

// errnoNamed is the errno whose name (ENOSPC…) is name, EIO for none.
func errnoNamed(name string) syscall.Errno {
	for e := syscall.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return syscall.EIO
}

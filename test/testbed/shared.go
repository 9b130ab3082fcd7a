package testbed

import (
	"errors"
	"os"
	"sync"
)

// machinePaths are the paths of the machine, outside any test's own
// directories, that daemons create and tests running side by side share
// (/run/docker, where every host's Docker plugin socket is): each counts
// the tests of this process using it now, and is cleaned up only when the
// last of them is done, so that no test removes what another's daemon
// still uses or is about to create.
var machinePaths = struct {
	sync.Mutex
	m map[string]*machinePath
}{m: map[string]*machinePath{}}

type machinePath struct {
	users   int
	existed bool // there before its first user came
	// removeAll: a user asked for the path removed with all in it when it
	// was not there before (a runtime's state that nothing else uses).
	removeAll bool
	// tidy are directories removed when empty, in order, otherwise.
	tidy []string
}

// sharePath counts tb as a user of path until tb's cleanup. When the last
// user is done: if path was not there before the first one came and a
// user asked for removeAll, it is removed with everything in it;
// otherwise each of tidy is removed if it is empty. sharePath is to be
// called before whatever creates path registers its own cleanup, so that
// the path is released after it.
func sharePath(tb TB, path string, removeAll bool, tidy ...string) {
	machinePaths.Lock()
	p := machinePaths.m[path]
	if p == nil {
		_, err := os.Lstat(path)
		p = &machinePath{existed: !errors.Is(err, os.ErrNotExist)}
		machinePaths.m[path] = p
	}
	p.users++
	p.removeAll = p.removeAll || removeAll
	p.tidy = append(p.tidy, tidy...)
	machinePaths.Unlock()
	tb.Cleanup(func() {
		machinePaths.Lock()
		defer machinePaths.Unlock()
		if p.users--; p.users > 0 {
			return
		}
		delete(machinePaths.m, path)
		if p.removeAll && !p.existed {
			os.RemoveAll(path)
			return
		}
		seen := map[string]bool{}
		for _, dir := range p.tidy {
			if !seen[dir] {
				seen[dir] = true
				os.Remove(dir)
			}
		}
	})
}

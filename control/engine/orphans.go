package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// A sandbox's namespace is made inside the transaction that records the
// sandbox, and removed after the one that forgets it: a daemon that dies
// between the two leaves a namespace no record names, which would refuse
// the next sandbox of that name. Before either, the engine marks the
// namespace, with a file of the state directory named after the sandbox
// (no sync: a kill -9 keeps it), and unmarks it once the change is over;
// the next start removes the namespaces still marked that no record names.

// orphansDir holds the marks.
func (e *Engine) orphansDir() string { return filepath.Join(e.cfg.StateDir, "namespaces-in-change") }

// markNamespace marks sb's namespace as one a crash could orphan; the
// returned func unmarks it.
func (e *Engine) markNamespace(sb store.Sandbox) (unmark func(), err error) {
	if err := os.MkdirAll(e.orphansDir(), 0o700); err != nil {
		return nil, fmt.Errorf("mark namespace %s: %w", sb.NetNS, err)
	}
	mark := filepath.Join(e.orphansDir(), sb.Name)
	if err := os.WriteFile(mark, []byte(sb.NetNS), 0o600); err != nil {
		return nil, fmt.Errorf("mark namespace %s: %w", sb.NetNS, err)
	}
	return func() { os.Remove(mark) }, nil
}

// removeOrphanedNamespaces removes the namespaces marked by changes a
// crash ended, but those a record names; it runs at start, before any
// change.
func (e *Engine) removeOrphanedNamespaces() error {
	marks, err := os.ReadDir(e.orphansDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range marks {
		path := filepath.Join(e.orphansDir(), m.Name())
		netns, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var named bool
		err = e.store.View(func(tx *store.Tx) (err error) {
			sb, ok, err := tx.SandboxNamed(m.Name())
			named = ok && sb.NetNS == string(netns)
			return err
		})
		if err == nil && !named {
			e.log.Info("removing the namespace of a change a crash ended", "sandbox", m.Name(), "netns", string(netns))
			err = e.cfg.Runtime.RemoveNamespace(store.Sandbox{Name: m.Name(), NetNS: string(netns)})
		}
		if err == nil {
			err = os.Remove(path)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

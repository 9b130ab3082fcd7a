package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/loader"
)

// Reset removes everything a stopped daemon owns: sandbox namespaces and
// their files, its interfaces, its pins and its state. It refuses while a
// daemon holds the state.
func Reset(cfg Config) error {
	if cfg.NetNS == "" {
		cfg.NetNS = "/proc/self/ns/net"
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	var sbs []store.Sandbox
	err = st.View(func(tx *store.Tx) error {
		sbs, err = tx.Sandboxes()
		return err
	})
	st.Close()
	if err != nil {
		return err
	}
	var errs []error
	// Sharing sandboxes first, then the namespaces they share.
	for _, mode := range []string{store.ModeContainer, store.ModeHost, store.ModeNetworks} {
		for _, sb := range sbs {
			if sb.Mode == mode && !sb.External() { // an external namespace is its runtime's
				sb.NetNS = namespaceOf(cfg.Runtime, sb)
				errs = append(errs, cfg.Runtime.RemoveNamespace(sb))
			}
		}
	}
	errs = append(errs, removeLinks(cfg.NetNS))
	errs = append(errs, loader.Reset(cfg.BPFFS), os.Remove(filepath.Join(cfg.StateDir, "state.db")))
	return errors.Join(errs...)
}

// removeLinks removes the interfaces ebpfnet made in the dataplane
// namespace at netns; a namespace gone (its host lost) took them along.
func removeLinks(netns string) error {
	if _, err := os.Stat(netns); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return namespace.Do(netns, func() error {
		links, err := driver.Dump(netlink.LinkList)
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		var errs []error
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Alias, driver.AliasPrefix) {
				errs = append(errs, driver.DeleteLink(l.Attrs().Name))
			}
		}
		return errors.Join(errs...)
	})
}

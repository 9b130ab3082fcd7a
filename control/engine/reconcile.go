package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Reconcile moves the kernel and the maps to what the store holds: it
// recreates missing bridges, namespaces and endpoints, repairs damaged
// endpoints, points attached programs at this binary's programs, rewrites
// the maps and removes interfaces and pins ebpfnet owns that the store no
// longer names. It keeps going past failures and joins them.
//
// It works a network, a sandbox at a time, each under the engine's lock
// and against its record as it is then, so that changes go on between
// them: the lock is never held for the whole host. What must see the
// whole state at once (the maps, leftovers, the uplinks, the names'
// index) is done under the lock in one step that does no work inside a
// sandbox.
func (e *Engine) Reconcile() error {
	nets, sbs, err := e.store.Snapshot()
	if err != nil {
		return err
	}
	var errs []error
	for i := range nets {
		e.locked(func() {
			errs = append(errs, e.setupNetwork(&nets[i]))
			errs = append(errs, e.inHost(func() error { _, err := e.attachTunnel(nets[i]); return err }))
		})
	}
	byID := store.ByID(nets)
	// Namespace owners first: container-mode sandboxes bind theirs.
	sort.SliceStable(sbs, func(i, j int) bool {
		return sbs[i].Mode != store.ModeContainer && sbs[j].Mode == store.ModeContainer
	})
	for _, old := range sbs {
		e.locked(func() {
			sb, ok, err := e.current(old)
			if err == nil && ok {
				err = e.reconcileSandbox(sb, sbs, byID)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("sandbox %s: %w", old.Name, err))
			}
		})
	}
	host, err := e.readHost()
	errs = append(errs, err)
	e.locked(func() { errs = append(errs, e.reconcileWhole(host)) })
	// Once the maps name every live endpoint; a walk of every flow, which
	// changes need not wait for.
	errs = append(errs, e.flushOrphanedConntrack(), e.resyncNames())
	return errors.Join(errs...)
}

// locked runs fn under the engine's lock.
func (e *Engine) locked(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn()
}

// current is sb's record as the store has it now; false when it is gone
// or another sandbox has its name. Callers hold e.mu.
func (e *Engine) current(sb store.Sandbox) (now store.Sandbox, ok bool, err error) {
	err = e.store.View(func(tx *store.Tx) error {
		now, ok, err = tx.SandboxNamed(sb.Name)
		return err
	})
	return now, ok && now.ID == sb.ID, err
}

// reconcileWhole is what Reconcile does with the whole state at once: the
// maps, the uplinks (from host, read before the lock), the leftovers and
// the names' index. Callers hold e.mu.
func (e *Engine) reconcileWhole(host hostView) error {
	nets, sbs, err := e.store.Snapshot()
	if err != nil {
		return err
	}
	var pubs map[string][]store.Publication
	if err := e.store.View(func(tx *store.Tx) (err error) { pubs, err = tx.AllPublications(); return err }); err != nil {
		return err
	}
	errs := []error{e.syncMaps(nets, sbs, pubs, host), e.indexNames(nets, sbs)}
	// Unread, the host would look empty: every uplink and interface gone.
	if host.links != nil {
		errs = append(errs, e.applyHost(host), e.removeLeftovers(nets, sbs, host))
	}
	// Devices recreated above lost their peers: write them all again.
	e.peersChecked = time.Time{}
	e.nudgeCluster()
	return errors.Join(errs...)
}

func (e *Engine) reconcileSandbox(sb store.Sandbox, sbs []store.Sandbox, nets map[string]store.Network) error {
	if sb.External() {
		return e.reconcileExternal(sb)
	}
	path := sb.NetNS
	if !namespace.IsNamespace(path) {
		e.log.Info("recreating lost sandbox namespace", "sandbox", sb.Name)
		shares, err := e.sharedNamespace(sb, sbs)
		if err != nil {
			return err
		}
		if err := e.cfg.Runtime.RemoveNamespace(sb); err != nil {
			return err
		}
		if err := e.cfg.Runtime.CreateNamespace(sb, shares); err != nil {
			return err
		}
	}
	var errs []error
	for _, ep := range sb.Endpoints {
		n := nets[ep.NetworkID]
		if e.endpointIntact(n, path, ep) {
			errs = append(errs, e.refreshEndpoint(n, path, ep, hasIPv6(sb.Endpoints)))
			continue
		}
		e.log.Info("repairing endpoint", "sandbox", sb.Name, "network", n.Name, "interface", ep.Interface)
		e.detachEndpoint(n, path, ep)
		errs = append(errs, e.attachEndpoint(n, sb, &ep))
	}
	return errors.Join(errs...)
}

// sharedNamespace is the path of the namespace a host or container-mode
// sandbox binds, "" for a sandbox with a namespace of its own.
func (e *Engine) sharedNamespace(sb store.Sandbox, sbs []store.Sandbox) (string, error) {
	switch sb.Mode {
	case store.ModeHost:
		return e.cfg.NetNS, nil
	case store.ModeContainer:
		i := slices.IndexFunc(sbs, func(o store.Sandbox) bool { return o.Name == sb.Shares })
		if i < 0 {
			return "", fmt.Errorf("the sandbox whose namespace it shares, %s, is gone", sb.Shares)
		}
		return sbs[i].NetNS, nil
	}
	return "", nil
}

// endpointIntact reports whether the endpoint's interface exists in the
// sandbox and its driver finds the rest intact.
func (e *Engine) endpointIntact(n store.Network, sandboxNS string, ep store.Endpoint) bool {
	inside := namespace.Do(sandboxNS, func() error {
		_, err := netlink.LinkByName(ep.Interface)
		return err
	}) == nil
	d, ok := e.drivers(n.Driver)
	if !ok {
		return inside
	}
	return inside && e.inHost(func() error { return d.Check(n, ep) }) == nil
}

// reconcileExternal points the host sides of an external sandbox's joined
// endpoint at this binary's programs. Its runtime moved and configured the
// sandbox side, so a lost one is the runtime's to attach again.
func (e *Engine) reconcileExternal(sb store.Sandbox) error {
	if sb.NetNS == "" {
		return nil // created, not joined yet
	}
	var errs []error
	for _, ep := range sb.Endpoints {
		if err := e.refreshPrograms(ep); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s of %s: %w (its runtime must attach it again)", ep.HostSide, sb.Frontend, err))
		}
	}
	return errors.Join(errs...)
}

// refreshEndpoint re-applies an intact endpoint's configuration: the
// programs (this binary's) on its host side, the addresses and the
// default routes; lo6 is whether its sandbox has IPv6.
func (e *Engine) refreshEndpoint(n store.Network, sandboxNS string, ep store.Endpoint, lo6 bool) error {
	if err := e.refreshPrograms(ep); err != nil {
		return err
	}
	return namespace.Do(sandboxNS, func() error { return configureInside(n, ep, true, lo6) })
}

// refreshPrograms attaches this binary's endpoint programs to an
// endpoint's host side, if it has one.
func (e *Engine) refreshPrograms(ep store.Endpoint) error {
	if ep.HostSide == "" {
		return nil
	}
	return e.inHost(func() error {
		host, err := netlink.LinkByName(ep.HostSide)
		if err != nil {
			return err
		}
		return e.attachPrograms(ep.HostSide, host.Attrs().Index)
	})
}

// syncMaps rewrites the maps from the store; interfaces are keyed by the
// ifindex they have now: as host, read before the lock, has it (one
// lookup each would hold the lock for thousands), or for one made since,
// as the kernel says. A host side keeps its name for its endpoint's life,
// and one repaired was repaired before host was read.
func (e *Engine) syncMaps(nets []store.Network, sbs []store.Sandbox, pubs map[string][]store.Publication, host hostView) error {
	ifindexes := map[string]int{}
	for _, l := range host.links {
		ifindexes[l.Attrs().Name] = l.Attrs().Index
	}
	// In the dataplane's namespace: the kernel resolves the ifindexes of
	// XDP targets in the writer's.
	return e.inHost(func() error {
		return e.maps.Sync(desiredMaps(nets, sbs, pubs, func(name string) (int, bool) {
			if i, ok := ifindexes[name]; ok {
				return i, true
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return 0, false // reported by the endpoint repair
			}
			return l.Attrs().Index, true
		}))
	})
}

// flushOrphanedConntrack removes the flows of endpoints whose conntrack
// flush never finished (the daemon stopped or crashed during one), once
// the maps name every live endpoint.
func (e *Engine) flushOrphanedConntrack() error {
	n, err := e.maps.FlushOrphanedConntrack()
	if err != nil {
		return fmt.Errorf("flush the conntrack entries of removed endpoints: %w", err)
	}
	if n > 0 {
		e.log.Info("flushed the conntrack entries of endpoints removed before a flush finished", "entries", n)
	}
	return nil
}

// removeLeftovers deletes interfaces and link pins that ebpfnet created
// for records the store no longer holds. The interfaces are those of
// host, read before the lock: one made since is a change's, stored with
// it under the lock.
func (e *Engine) removeLeftovers(nets []store.Network, sbs []store.Sandbox, host hostView) error {
	known := map[string]bool{}
	hostSides := map[string]bool{}
	for _, n := range nets {
		known[driver.AliasNetwork+n.ID] = true
		if dev, ok := tunnelDevice(n); ok {
			hostSides[dev] = true // its programs' pins
		}
	}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			known[driver.AliasEndpoint+ep.ID] = true
			hostSides[ep.HostSide] = true
		}
	}
	var errs []error
	for alias, name := range host.owned() {
		if known[alias] {
			continue
		}
		e.log.Info("removing leftover interface", "interface", name, "owner", alias)
		if strings.HasPrefix(alias, driver.AliasEndpoint) {
			// A host side ebpfnet made (its alias says so): its peer goes with it.
			errs = append(errs, e.inHost(func() error { return errors.Join(e.detachHostSide(name), driver.DeleteLink(name)) }))
		} else {
			errs = append(errs, e.inHost(func() error { return driver.DeleteLink(name) }))
		}
	}
	pinned, err := e.dp.PinnedLinkInterfaces()
	errs = append(errs, err)
	for _, name := range pinned {
		if !hostSides[name] && !e.uplinks[name] {
			errs = append(errs, e.inHost(func() error { return e.dp.Detach(name) }))
		}
	}
	return errors.Join(errs...)
}

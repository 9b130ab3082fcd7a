// Package reconcile moves the kernel and the BPF maps to what the store
// holds: after a restart, an upgrade, or damage done behind the daemon's
// back. It repairs a network, a sandbox at a time under the engine's
// lock, so that changes go on between them, and writes what must see the
// whole state at once (the maps, leftovers, the uplinks) from a plan made
// without the lock.
package reconcile

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/hostsync"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/control/wiring"
	"github.com/ebpfnet/ebpfnet/loader"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Namespaces makes and removes the namespaces of the sandboxes ebpfnet
// makes whole (the engine's Runtime).
type Namespaces interface {
	// CreateNamespace makes sb's namespace at sb.NetNS: a binding of the
	// namespace at shares when it is not "", or a new one.
	CreateNamespace(sb store.Sandbox, shares string) error
	// RemoveNamespace removes sb's namespace and files.
	RemoveNamespace(sb store.Sandbox) error
}

// Config is what a reconciler repairs with.
type Config struct {
	Store      *store.Store
	Wiring     *wiring.Wiring
	HostSync   *hostsync.Syncer
	Datapath   *loader.Datapath
	Maps       *dpmaps.Maps
	Namespaces Namespaces
	NetNS      string // the dataplane's namespace, which host-mode sandboxes bind
	// InHost runs fn in the dataplane's namespace; Locked runs fn under
	// the engine's lock.
	InHost func(fn func() error) error
	Locked func(fn func())
	// Resync brings the names and the sandboxes' files in line with the
	// store (names.Resync).
	Resync func() error
	// DefaultSources are the daemon's source lists, of the published
	// ports without lists of their own.
	DefaultSources dpmaps.Sources
	// RecheckPeers, when set, writes every overlay peer again: devices
	// recreated lost theirs.
	RecheckPeers func()
	// BeforeMapsRead runs as the plan of the whole state begins, after
	// the store was read (the tests change records there); AfterHostRead
	// sees the host as it was read (the tests make it partial).
	BeforeMapsRead func()
	AfterHostRead  func(*hostsync.View)
	Log            *slog.Logger
}

// Reconciler runs reconciles, one at a time.
type Reconciler struct {
	cfg Config
	// running makes reconciles wait for each other: one's repairs, which
	// no store change records, would be another's to undo.
	running sync.Mutex
}

// New is a reconciler with cfg.
func New(cfg Config) *Reconciler {
	if cfg.BeforeMapsRead == nil {
		cfg.BeforeMapsRead = func() {}
	}
	if cfg.AfterHostRead == nil {
		cfg.AfterHostRead = func(*hostsync.View) {}
	}
	return &Reconciler{cfg: cfg}
}

// Run moves the kernel and the maps to what the store holds: it
// recreates missing bridges, namespaces and endpoints, repairs damaged
// endpoints, points attached programs at this binary's programs, rewrites
// the maps and removes interfaces and pins ebpfnet owns that the store no
// longer names. It keeps going past failures and joins them.
//
// It works a network, a sandbox at a time, each under the engine's lock
// and against its record as it is then, so that changes go on between
// them: the lock is never held for the whole host. What must see the
// whole state at once (the maps, leftovers, the uplinks) is worked out
// without the lock and written under it (reconcileWhole); the names and
// the sandboxes' files follow a sandbox at a time (names.Resync).
func (r *Reconciler) Run() error {
	r.running.Lock()
	defer r.running.Unlock()
	nets, sbs, err := r.cfg.Store.Snapshot()
	if err != nil {
		return err
	}
	var errs []error
	for i := range nets {
		r.cfg.Locked(func() {
			errs = append(errs, r.cfg.Wiring.SetupNetwork(&nets[i]))
			errs = append(errs, r.cfg.InHost(func() error { _, err := r.cfg.Wiring.AttachTunnel(nets[i]); return err }))
		})
	}
	byID := store.ByID(nets)
	// Namespace owners first: container-mode sandboxes bind theirs.
	sort.SliceStable(sbs, func(i, j int) bool {
		return sbs[i].Mode != store.ModeContainer && sbs[j].Mode == store.ModeContainer
	})
	for _, old := range sbs {
		r.cfg.Locked(func() {
			sb, ok, err := r.current(old)
			if err == nil && ok {
				err = r.reconcileSandbox(sb, sbs, byID)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("sandbox %s: %w", old.Name, err))
			}
		})
	}
	errs = append(errs, r.reconcileWhole())
	// Once the maps name every live endpoint; a walk of every flow, which
	// changes need not wait for.
	errs = append(errs, r.cfg.Wiring.FlushOrphanedConntrack(), r.cfg.Resync())
	return errors.Join(errs...)
}

// current is sb's record as the store has it now; false when it is gone
// or another sandbox has its name. Callers hold the engine's lock.
func (r *Reconciler) current(sb store.Sandbox) (now store.Sandbox, ok bool, err error) {
	err = r.cfg.Store.View(func(tx *store.Tx) error {
		now, ok, err = tx.SandboxNamed(sb.Name)
		return err
	})
	return now, ok && now.ID == sb.ID, err
}

// reconcileWhole is what Reconcile does with the whole state at once: the
// maps, the uplinks, and the interfaces and pins ebpfnet owns that no
// record names. It reads the host, the store and the maps and works out
// what to write without the engine's lock; under the lock it writes that
// alone, and leaves what the changes committed meanwhile wrote as they
// wrote it. So it holds the lock for as long as its writes take, a few
// at most on a host in order, not for reads of the whole host.
func (r *Reconciler) reconcileWhole() error {
	// Before the host is read: a change committed after that read, whose
	// interfaces it may have missed or seen half made, is one of these.
	tracker := r.cfg.Store.Track()
	var errs []error
	host, err := r.cfg.HostSync.Read()
	if err != nil {
		// The maps still follow the store, each interface looked up on
		// its own; the uplinks and leftovers wait for a read.
		errs = append(errs, err)
		host = hostsync.View{}
	}
	r.cfg.AfterHostRead(&host)
	s, err := r.readState()
	if err != nil {
		tracker.Stop()
		return errors.Join(append(errs, err)...)
	}
	plan, err := r.planWhole(s, host)
	errs = append(errs, err)
	r.cfg.Locked(func() { errs = append(errs, r.applyWhole(plan, s, tracker.Stop(), host)) })
	return errors.Join(errs...)
}

// storeState is the whole store, read in one transaction.
type storeState struct {
	nets []store.Network
	sbs  []store.Sandbox
	pubs map[string][]store.Publication // by sandbox name
}

func (r *Reconciler) readState() (s storeState, err error) {
	err = r.cfg.Store.View(func(tx *store.Tx) error {
		if s.nets, err = tx.Networks(); err != nil {
			return err
		}
		if s.sbs, err = tx.Sandboxes(); err != nil {
			return err
		}
		s.pubs, err = tx.AllPublications()
		return err
	})
	return s, err
}

// wholePlan is what reconcileWhole works out without the lock: the maps'
// writes, and the interfaces and pins no record names.
type wholePlan struct {
	maps dpmaps.SyncPlan
	// ifindexes are the interfaces the maps' plan was made with, by name.
	ifindexes map[string]int
	leftovers map[string]string // interface name to its owner's alias
	strayPins []string          // interfaces whose programs' pins no record names
}

func (r *Reconciler) planWhole(s storeState, host hostsync.View) (wholePlan, error) {
	p := wholePlan{ifindexes: map[string]int{}, leftovers: map[string]string{}}
	r.cfg.BeforeMapsRead()
	// The few interfaces made since host was read are looked up in the
	// dataplane's namespace; the maps are read off its thread, which
	// changes need.
	var want dpmaps.Desired
	lookup := host.Ifindexes()
	err := r.cfg.InHost(func() error {
		want = desired.Maps(s.nets, s.sbs, s.pubs, func(name string) (int, bool) {
			i, ok := lookup(name)
			if ok {
				p.ifindexes[name] = i
			}
			return i, ok
		})
		want.DefaultSources = r.cfg.DefaultSources
		return nil
	})
	if err != nil {
		return wholePlan{}, err // nothing desired would be every entry deleted
	}
	var errs []error
	p.maps, err = r.cfg.Maps.PlanSync(want) // a map that cannot be read is left as it is
	errs = append(errs, err)
	known, hostSides := ownedNames(s.nets, s.sbs)
	for alias, name := range host.Owned() {
		if !known[alias] {
			p.leftovers[name] = alias
		}
	}
	pinned, err := r.cfg.Datapath.PinnedLinkInterfaces()
	errs = append(errs, err)
	for _, name := range pinned {
		if !hostSides[name] {
			p.strayPins = append(p.strayPins, name)
		}
	}
	return p, errors.Join(errs...)
}

// applyWhole writes plan, made from s and host, but what the records
// changed since it was made have: their changes wrote that. Callers hold
// the engine's lock.
func (r *Reconciler) applyWhole(plan wholePlan, s storeState, changed store.Changes, host hostsync.View) error {
	// The changed records as plan saw them, and as they are.
	then, now := s.changedRecords(changed), changedRecords{}
	if !changed.Empty() {
		var err error
		if now, err = r.readChanged(changed); err != nil {
			return err
		}
	}
	var errs []error
	errs = append(errs, r.cfg.InHost(func() error {
		// A changed record's interface may have been made again under its
		// name: its entries are left by the ifindex the plan used and by
		// the one it has now, and its addresses' whether or not it has
		// one.
		planned := func(name string) (int, bool) { i, ok := plan.ifindexes[name]; return i, ok }
		current := func(name string) (int, bool) {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return 0, true
			}
			return l.Attrs().Index, true
		}
		written, err := r.cfg.Maps.ApplySync(plan.maps, dpmaps.Changed{Then: then.desired(planned, current), Now: now.desired(planned, current)})
		if written > 0 {
			r.cfg.Log.Info("repaired map entries that differed from the store", "entries", written)
		}
		return err
	}))
	// Unread, the host would look empty: every uplink and interface gone;
	// read in part, it may lack an uplink. The host watcher applies it.
	if host.Whole() {
		errs = append(errs, r.cfg.HostSync.Apply(host))
	}
	removed, err := r.removeLeftovers(plan, then, now)
	errs = append(errs, err)
	if removed > 0 && host.Whole() {
		// The host read had their addresses, which went with them: the
		// host watcher, which may not have run yet (at start), would not
		// hear of it.
		if host, err = r.cfg.HostSync.Read(); err == nil && host.Whole() {
			err = r.cfg.HostSync.Apply(host)
		}
		errs = append(errs, err)
	}
	// Devices recreated before lost their peers: write them all again.
	if r.cfg.RecheckPeers != nil {
		r.cfg.RecheckPeers()
	}
	return errors.Join(errs...)
}

// changedRecords are the records of s that changed names: the networks
// and sandboxes in nets and sbs, with every network of s to find theirs.
type changedRecords struct {
	nets []store.Network
	sbs  []store.Sandbox
	pubs map[string][]store.Publication
	all  map[string]store.Network // by ID
}

func (s storeState) changedRecords(changed store.Changes) changedRecords {
	names := changed.SandboxNames()
	c := changedRecords{pubs: s.pubs, all: store.ByID(s.nets)}
	for _, n := range s.nets {
		if slices.Contains(changed.Networks, n.ID) {
			c.nets = append(c.nets, n)
		}
	}
	for _, sb := range s.sbs {
		if names[sb.Name] {
			c.sbs = append(c.sbs, sb)
		}
	}
	return c
}

// desired is what the maps hold for the records, their interfaces looked
// up each way given; their networks and publications, which no interface
// changes, once.
func (c changedRecords) desired(lookups ...func(string) (int, bool)) dpmaps.Desired {
	var want dpmaps.Desired
	for i, lookup := range lookups {
		d := desired.ForNetworks(c.nets, lookup)
		d.Add(desired.ForSandboxes(c.all, c.sbs, c.pubs, lookup))
		if i > 0 {
			d.Networks, d.Publications = nil, nil
		}
		want.Add(d)
	}
	return want
}

// readChanged reads the records changed names as they are now.
func (r *Reconciler) readChanged(changed store.Changes) (c changedRecords, err error) {
	err = r.cfg.Store.View(func(tx *store.Tx) error {
		nets, err := tx.Networks() // a few: a host has far fewer than sandboxes
		if err != nil {
			return err
		}
		state := storeState{nets: nets, pubs: map[string][]store.Publication{}}
		for name := range changed.SandboxNames() {
			sb, ok, err := tx.SandboxNamed(name)
			if err != nil {
				return err
			}
			if ok {
				state.sbs = append(state.sbs, sb)
				if state.pubs[name], err = tx.Publications(name); err != nil {
					return err
				}
			}
		}
		c = state.changedRecords(changed)
		return nil
	})
	return c, err
}

func (r *Reconciler) reconcileSandbox(sb store.Sandbox, sbs []store.Sandbox, nets map[string]store.Network) error {
	if sb.External() {
		return r.reconcileExternal(sb)
	}
	path := sb.NetNS
	if !namespace.IsNamespace(path) {
		r.cfg.Log.Info("recreating lost sandbox namespace", "sandbox", sb.Name)
		shares, err := r.sharedNamespace(sb, sbs)
		if err != nil {
			return err
		}
		if err := r.cfg.Namespaces.RemoveNamespace(sb); err != nil {
			return err
		}
		if err := r.cfg.Namespaces.CreateNamespace(sb, shares); err != nil {
			return err
		}
	}
	var errs []error
	for _, ep := range sb.Endpoints {
		n := nets[ep.NetworkID]
		if r.cfg.Wiring.EndpointIntact(n, path, ep) {
			errs = append(errs, r.cfg.Wiring.RefreshEndpoint(n, path, ep, wiring.HasIPv6(sb.Endpoints)))
			continue
		}
		r.cfg.Log.Info("repairing endpoint", "sandbox", sb.Name, "network", n.Name, "interface", ep.Interface)
		r.cfg.Wiring.DetachEndpoint(n, path, ep)
		errs = append(errs, r.cfg.Wiring.AttachEndpoint(n, sb, &ep))
	}
	return errors.Join(errs...)
}

// sharedNamespace is the path of the namespace a host or container-mode
// sandbox binds, "" for a sandbox with a namespace of its own.
func (r *Reconciler) sharedNamespace(sb store.Sandbox, sbs []store.Sandbox) (string, error) {
	switch sb.Mode {
	case store.ModeHost:
		return r.cfg.NetNS, nil
	case store.ModeContainer:
		i := slices.IndexFunc(sbs, func(o store.Sandbox) bool { return o.Name == sb.Shares })
		if i < 0 {
			return "", fmt.Errorf("the sandbox whose namespace it shares, %s, is gone", sb.Shares)
		}
		return sbs[i].NetNS, nil
	}
	return "", nil
}

// reconcileExternal points the host sides of an external sandbox's joined
// endpoint at this binary's programs. Its runtime moved and configured the
// sandbox side, so a lost one is the runtime's to attach again.
func (r *Reconciler) reconcileExternal(sb store.Sandbox) error {
	if sb.NetNS == "" {
		return nil // created, not joined yet
	}
	var errs []error
	for _, ep := range sb.Endpoints {
		if err := r.cfg.Wiring.RefreshPrograms(ep); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s of %s: %w (its runtime must attach it again)", ep.HostSide, sb.Frontend, err))
		}
	}
	return errors.Join(errs...)
}

// ownedNames are the aliases of the interfaces ebpfnet made for nets and
// sbs, and the interfaces whose programs they pin.
func ownedNames(nets []store.Network, sbs []store.Sandbox) (aliases, hostSides map[string]bool) {
	aliases, hostSides = map[string]bool{}, map[string]bool{}
	for _, n := range nets {
		aliases[driver.AliasNetwork+n.ID] = true
		if dev, ok := drivers.Tunnel(n); ok {
			hostSides[dev] = true // its programs' pins
		}
	}
	for _, sb := range sbs {
		if sb.NetNS == "" {
			// Docker's endpoint between CreateEndpoint and Join: its
			// interfaces come with the Join, and one a crash in the
			// middle of it left are not its.
			continue
		}
		for _, ep := range sb.Endpoints {
			aliases[driver.AliasEndpoint+ep.ID] = true
			hostSides[ep.HostSide] = true
		}
	}
	return aliases, hostSides
}

// removeLeftovers deletes the interfaces and link pins plan found no
// record for, but those of the records changed since, as they were then
// and as they are now, and says how many interfaces it deleted. An
// interface is deleted only while it still has the alias it had. Callers
// hold the engine's lock.
func (r *Reconciler) removeLeftovers(plan wholePlan, then, now changedRecords) (removed int, err error) {
	aliasesThen, sidesThen := ownedNames(then.nets, then.sbs)
	aliasesNow, sidesNow := ownedNames(now.nets, now.sbs)
	var errs []error
	for name, alias := range plan.leftovers {
		if aliasesThen[alias] || aliasesNow[alias] {
			continue
		}
		errs = append(errs, r.cfg.InHost(func() error {
			l, err := netlink.LinkByName(name)
			if err != nil || l.Attrs().Alias != alias {
				return nil // gone, or another's now
			}
			removed++
			r.cfg.Log.Info("removing leftover interface", "interface", name, "owner", alias)
			if strings.HasPrefix(alias, driver.AliasEndpoint) {
				// A host side ebpfnet made (its alias says so): its peer goes with it.
				return errors.Join(r.cfg.Wiring.DetachHostSide(name), driver.DeleteLink(name))
			}
			return driver.DeleteLink(name)
		}))
	}
	for _, name := range plan.strayPins {
		if !sidesThen[name] && !sidesNow[name] && !r.cfg.HostSync.IsUplink(name) {
			errs = append(errs, r.cfg.InHost(func() error { return r.cfg.Datapath.Detach(name) }))
		}
	}
	return removed, errors.Join(errs...)
}

// Drift is what a reconcile would repair now in the maps and among the
// interfaces: nothing, when they are as the store has them.
type Drift struct {
	MapWrites int               // map entries that differ from the store's records
	Leftovers map[string]string // interfaces no record names, to their owner's alias
	StrayPins []string          // interfaces whose programs' pins no record names
}

// Drift reads the host, the store and the maps, and says how far they
// are apart; it changes nothing.
func (r *Reconciler) Drift() (Drift, error) {
	host, err := r.cfg.HostSync.Read()
	if err != nil {
		return Drift{}, err
	}
	s, err := r.readState()
	if err != nil {
		return Drift{}, err
	}
	plan, err := r.planWhole(s, host)
	var stray []string // the uplinks' pins are the host's, not a record's
	r.cfg.Locked(func() {
		for _, name := range plan.strayPins {
			if !r.cfg.HostSync.IsUplink(name) {
				stray = append(stray, name)
			}
		}
	})
	return Drift{MapWrites: plan.maps.Writes(), Leftovers: plan.leftovers, StrayPins: stray}, err
}

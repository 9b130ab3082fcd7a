// Package names keeps what the embedded DNS answers and what each
// sandbox's hosts and resolv.conf say in step with the store: a change
// redoes the work of the sandboxes it touched and of those whose files
// name them (Follow), a reconcile that of every sandbox, one at a time
// (Resync).
package names

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Config is what Names follows and writes to.
type Config struct {
	Store *store.Store
	// ResolvConf is the host's resolv.conf, which the sandboxes' files
	// and the resolver's upstreams follow.
	ResolvConf string
	// WriteFiles writes a sandbox's hosts and resolv.conf (the runtime's).
	WriteFiles func(sb store.Sandbox, hosts, resolvConf string) error
	// Resolver answers from the view Names gives it; Servers are its
	// listeners in the sandboxes.
	Resolver *dns.Resolver
	Servers  *dns.Servers
	// Remote are the records of other hosts' endpoints on overlay network
	// n, as the cluster last had them.
	Remote func(n store.Network) []dns.Record
	// Exclusive runs fn while no change of the store's records goes on:
	// Resync's steps.
	Exclusive func(fn func())
	Log       *slog.Logger
}

// Names is the index of what the resolver, its listeners and the
// sandboxes' files were last given.
type Names struct {
	cfg Config
	mu  sync.Mutex
	ix  *nameIndex
	// filesWritten counts the sandboxes whose hosts and resolv.conf were
	// written, for tests to see what a change costs.
	filesWritten atomic.Uint64
	// resyncs are the rewrites of every sandbox's files under way
	// (Resync), which Close waits for once closing is set.
	resyncs sync.WaitGroup
	closing atomic.Bool
}

// New is Names of cfg, its index built from the store at the first
// change.
func New(cfg Config) *Names { return &Names{cfg: cfg} }

// Close stops the rewrites of every sandbox's files under way.
func (nm *Names) Close() {
	nm.closing.Store(true)
	nm.resyncs.Wait()
}

// FilesWritten counts the sandboxes whose files were written.
func (nm *Names) FilesWritten() uint64 { return nm.filesWritten.Load() }

// Load builds the index from the whole store, unless it is built.
func (nm *Names) Load() error {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.load()
}

// Sharers names the sandboxes in the namespace of sandbox name, as the
// index has them (Load).
func (nm *Names) Sharers(name string) []string {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if nm.ix == nil {
		return nil
	}
	return nm.ix.sharers(name)
}

// nameIndex is what the resolver, its listeners and the sandboxes' files
// were last given. A change redoes the work of the sandboxes it touched
// and of those whose files name them, never of every sandbox: rewriting
// every sandbox's files after each change made the 1,000th create cost
// 24 times the 100th (issue 24). Guarded by Names.mu.
type nameIndex struct {
	ready     bool       // built from the whole store (indexAll)
	host      resolvConf // the host's file the sandboxes' files follow
	view      *dns.View  // what the resolver answers from
	sandboxes map[string]indexedSandbox
	// networks are the records of this host's sandboxes on each network,
	// by network ID and sandbox name.
	networks map[string]map[string]dns.Record
	// dependents are, by sandbox name, the sandboxes whose files name it:
	// those that link to it and those in its namespace (container mode).
	dependents map[string]map[string]bool
	// remote are the records of other hosts' endpoints the view was given
	// on each overlay network, by network ID: what a change of them takes
	// back.
	remote map[string][]dns.Record
}

// indexedSandbox is what the index holds of one sandbox, by name.
type indexedSandbox struct {
	id       string
	asker    dns.Asker
	asks     bool // it has a resolver, listening in netns
	netns    string
	networks []string // IDs of the networks it has records on
	names    []string // the sandboxes its files name
	shares   string   // the owner of its namespace, in container mode
}

func newNameIndex(host resolvConf) *nameIndex {
	return &nameIndex{host: host, view: &dns.View{}, sandboxes: map[string]indexedSandbox{},
		networks: map[string]map[string]dns.Record{}, dependents: map[string]map[string]bool{}, remote: map[string][]dns.Record{}}
}

// put indexes sb, in place of what the index had under its name, and
// returns the records it had and those it has now.
func (ix *nameIndex) put(sb store.Sandbox, network func(id string) (store.Network, bool)) (was, now []dns.Record) {
	was = ix.remove(sb.Name)
	asker, asks, records := sandboxNames(sb, network, ix.host)
	in := indexedSandbox{id: sb.ID, asker: asker, asks: asks, netns: sb.NetNS, shares: sb.Shares}
	if sb.Mode == store.ModeContainer {
		in.names = append(in.names, sb.Shares)
	}
	for _, l := range sb.Links {
		in.names = append(in.names, l.Sandbox)
	}
	for _, target := range in.names {
		if ix.dependents[target] == nil {
			ix.dependents[target] = map[string]bool{}
		}
		ix.dependents[target][sb.Name] = true
	}
	for _, r := range records {
		if ix.networks[r.Network] == nil {
			ix.networks[r.Network] = map[string]dns.Record{}
		}
		ix.networks[r.Network][sb.Name] = r
		in.networks = append(in.networks, r.Network)
	}
	ix.sandboxes[sb.Name] = in
	return was, records
}

// remove forgets sandbox name and returns the records it had.
func (ix *nameIndex) remove(name string) (was []dns.Record) {
	in, ok := ix.sandboxes[name]
	if !ok {
		return nil
	}
	for _, id := range in.networks {
		was = append(was, ix.networks[id][name])
	}
	for _, target := range in.names {
		delete(ix.dependents[target], name)
		if len(ix.dependents[target]) == 0 {
			delete(ix.dependents, target)
		}
	}
	for _, id := range in.networks {
		delete(ix.networks[id], name)
		if len(ix.networks[id]) == 0 {
			delete(ix.networks, id)
		}
	}
	delete(ix.sandboxes, name)
	return was
}

// sharers names the sandboxes in the namespace of sandbox name.
func (ix *nameIndex) sharers(name string) []string {
	var out []string
	for d := range ix.dependents[name] {
		if ix.sandboxes[d].shares == name {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// load makes sure the index is built, from the whole store the first
// time. Callers hold nm.mu.
func (nm *Names) load() error {
	if nm.ix != nil && nm.ix.ready {
		return nil
	}
	nets, sbs, err := nm.cfg.Store.Snapshot()
	if err != nil {
		return err
	}
	return nm.indexAll(nets, sbs)
}

// Follow makes the resolver, its listeners and the files follow a
// committed change: the sandboxes and networks ch names and the overlay
// records of other hosts' endpoints in remote, by overlay network ID (none
// for a network that has none left). Failures are logged: the store has
// changed already, and the next change or reconcile tries again.
func (nm *Names) Follow(ch store.Changes, remote map[string][]dns.Record) {
	if len(ch.Sandboxes) == 0 && len(ch.Networks) == 0 && len(remote) == 0 {
		return // publishing, say: its cost stays that of the maps
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if err := nm.follow(ch, remote); err != nil {
		nm.cfg.Log.Warn("update names and resolvers", "err", err)
	}
}

// follow is Follow's work. A change to the host's resolv.conf,
// which every sandbox's files follow, is the one change that rewrites
// them all.
func (nm *Names) follow(ch store.Changes, remote map[string][]dns.Record) error {
	host, err := readResolvConf(nm.cfg.ResolvConf)
	if err != nil {
		return err
	}
	if nm.ix != nil && nm.ix.ready && !reflect.DeepEqual(host, nm.ix.host) {
		// Every sandbox's files follow the host's: they are rewritten a
		// sandbox at a time, off this change's path.
		nm.ix.ready = false
		nm.resyncs.Add(1)
		go func() {
			defer nm.resyncs.Done()
			if err := nm.Resync(); err != nil {
				nm.cfg.Log.Warn("rewrite the sandboxes' files after the host's resolv.conf changed", "err", err)
			}
		}()
	}
	if err := nm.load(); err != nil {
		return err
	}
	ix := nm.ix
	touched := map[string]bool{}
	for _, name := range ch.Sandboxes {
		touched[name] = true
	}
	for _, id := range ch.Networks { // their settings (DNS servers, internal) are their sandboxes'
		for name := range ix.networks[id] {
			touched[name] = true
		}
	}
	var (
		change    = dns.Change{Askers: map[string]dns.Asker{}}
		listeners = map[string]string{} // sandbox ID to where its resolver listens, "" for nowhere
		files     []store.Sandbox
		byName    = map[string]store.Sandbox{}
	)
	err = nm.cfg.Store.View(func(tx *store.Tx) error {
		nets := map[string]*store.Network{} // a network read once, with its pool
		network := func(id string) (store.Network, bool) {
			if n, ok := nets[id]; ok {
				return *n, true
			}
			n, err := tx.Network(id)
			if err != nil {
				return n, false
			}
			nets[id] = &n
			return n, true
		}
		sandbox := func(name string) (store.Sandbox, bool, error) {
			if sb, ok := byName[name]; ok {
				return sb, true, nil
			}
			sb, ok, err := tx.SandboxNamed(name)
			if ok {
				byName[name] = sb
			}
			return sb, ok, err
		}
		for name := range touched {
			old := ix.sandboxes[name]
			sb, ok, err := sandbox(name)
			if err != nil {
				return err
			}
			if old.asks && (!ok || old.id != sb.ID) {
				change.Gone = append(change.Gone, old.id)
				listeners[old.id] = ""
			}
			var was, now []dns.Record
			if ok {
				was, now = ix.put(sb, network)
				if in := ix.sandboxes[name]; in.asks {
					change.Askers[sb.ID] = in.asker
					listeners[sb.ID] = in.netns
				} else if old.asks && old.id == sb.ID {
					change.Gone = append(change.Gone, sb.ID)
					listeners[sb.ID] = ""
				}
			} else {
				was = ix.remove(name)
			}
			change.Drop, change.Put = append(change.Drop, was...), append(change.Put, now...)
		}
		// The files of the touched sandboxes and of those that name them.
		write := map[string]bool{}
		for name := range touched {
			write[name] = true
			for d := range ix.dependents[name] {
				write[d] = true
			}
		}
		for name := range write {
			sb, ok, err := sandbox(name)
			if err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			for _, other := range ix.sandboxes[name].names {
				if _, _, err := sandbox(other); err != nil {
					return err
				}
			}
			files = append(files, sb)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, records := range remote {
		drop, put := recordsChanged(ix.remote[id], records)
		change.Drop, change.Put = append(change.Drop, drop...), append(change.Put, put...)
		ix.remote[id] = records
		if len(records) == 0 {
			delete(ix.remote, id)
		}
	}
	ix.view = ix.view.Apply(change)
	nm.cfg.Resolver.SetView(ix.view)
	var errs []error
	for id, netns := range listeners {
		errs = append(errs, nm.cfg.Servers.Set(id, netns))
	}
	for _, sb := range files {
		errs = append(errs, nm.writeFiles(sb, byName))
	}
	return errors.Join(errs...)
}

// recordsChanged is what turns records was into now, both of one
// network: those of was that now lacks or has otherwise, to drop, and
// those of now that are new or changed, to put. A cluster event names
// every remote record of a network; the view must take in only the
// changed ones, or each event would cost the whole network.
func recordsChanged(was, now []dns.Record) (drop, put []dns.Record) {
	key := func(r dns.Record) string { return r.Owner + "\x00" + strings.Join(r.Names, "\x00") }
	same := func(a, b dns.Record) bool { // of one key: the same names
		return a.NetworkName == b.NetworkName && a.Addr == b.Addr && a.Addr6 == b.Addr6
	}
	old := make(map[string]dns.Record, len(was))
	for _, r := range was {
		old[key(r)] = r
	}
	kept := make(map[string]bool, len(now))
	for _, r := range now {
		k := key(r)
		if o, ok := old[k]; ok && same(o, r) {
			kept[k] = true
			continue
		}
		put = append(put, r)
	}
	for _, r := range was {
		if !kept[key(r)] {
			drop = append(drop, r)
		}
	}
	return drop, put
}

// indexAll builds the index and the resolver's view from the whole
// store, and stops the resolvers of sandboxes that no longer ask; it
// writes no file and enters no namespace (Resync does, a sandbox at
// a time). Callers hold nm.mu.
func (nm *Names) indexAll(nets []store.Network, sbs []store.Sandbox) error {
	host, err := readResolvConf(nm.cfg.ResolvConf)
	if err != nil {
		return err
	}
	ix := buildNameIndex(nets, sbs, host)
	all := ix.allRecords()
	for _, n := range nets {
		if records := nm.cfg.Remote(n); len(records) > 0 {
			ix.remote[n.ID] = records
			all = append(all, records...)
		}
	}
	ix.view = dns.NewView(ix.askers(), all)
	ix.ready = true
	nm.ix = ix
	nm.cfg.Resolver.SetView(ix.view)
	return nm.stopStrayResolvers()
}

// stopStrayResolvers stops the resolvers of sandboxes that no longer ask
// the embedded DNS. Callers hold nm.mu.
func (nm *Names) stopStrayResolvers() error {
	asks := nm.ix.listeners()
	var errs []error
	for _, id := range nm.cfg.Servers.Running() {
		if _, ok := asks[id]; !ok {
			errs = append(errs, nm.cfg.Servers.Set(id, ""))
		}
	}
	return errors.Join(errs...)
}

// Resync rewrites every sandbox's files and starts every missing
// resolver, a sandbox at a time under Config.Exclusive, so that changes
// go on between them, then stops the resolvers no sandbox asks: on
// reconcile and after the host's resolv.conf changed.
func (nm *Names) Resync() error {
	_, sbs, err := nm.cfg.Store.Snapshot()
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range sbs {
		if nm.closing.Load() {
			break
		}
		nm.cfg.Exclusive(func() {
			nm.mu.Lock()
			defer nm.mu.Unlock()
			if err := nm.follow(store.Changes{Sandboxes: []string{sb.Name}}, nil); err != nil {
				errs = append(errs, fmt.Errorf("sandbox %s: %w", sb.Name, err))
			}
		})
	}
	nm.cfg.Exclusive(func() {
		nm.mu.Lock()
		defer nm.mu.Unlock()
		err := nm.load()
		if err == nil {
			err = nm.stopStrayResolvers()
		}
		errs = append(errs, err)
	})
	return errors.Join(errs...)
}

// buildNameIndex indexes a snapshot of the store.
func buildNameIndex(nets []store.Network, sbs []store.Sandbox, host resolvConf) *nameIndex {
	byID := store.ByID(nets)
	network := func(id string) (store.Network, bool) { n, ok := byID[id]; return n, ok }
	ix := newNameIndex(host)
	for _, sb := range sbs {
		ix.put(sb, network)
	}
	return ix
}

// askers are the sandboxes that ask the resolver, by ID.
func (ix *nameIndex) askers() map[string]dns.Asker {
	out := map[string]dns.Asker{}
	for _, in := range ix.sandboxes {
		if in.asks {
			out[in.id] = in.asker
		}
	}
	return out
}

// listeners are where resolvers listen: sandbox ID to namespace path.
func (ix *nameIndex) listeners() map[string]string {
	out := map[string]string{}
	for _, in := range ix.sandboxes {
		if in.asks {
			out[in.id] = in.netns
		}
	}
	return out
}

// allRecords are the records of every network.
func (ix *nameIndex) allRecords() []dns.Record {
	var out []dns.Record
	for _, records := range ix.networks {
		for _, r := range records {
			out = append(out, r)
		}
	}
	return out
}

// sandboxNames is what the resolver knows of one sandbox: whether it asks
// and how, and its records on user-defined networks.
func sandboxNames(sb store.Sandbox, network func(id string) (store.Network, bool), host resolvConf) (asker dns.Asker, asks bool, records []dns.Record) {
	if sb.External() {
		return asker, false, nil // its runtime names it and resolves for it
	}
	for _, ep := range sb.Endpoints {
		n, _ := network(ep.NetworkID)
		if l := sb.EgressOn(n); len(l) > 0 {
			asker.Egress = append(asker.Egress, dns.EgressList{Sources: ep.Addrs(), List: l})
		} else {
			asker.Unlisted = true
		}
		if n.Predefined { // the default network has no DNS, as with Docker
			continue
		}
		asker.Networks = append(asker.Networks, n.ID)
		asker.Forward = asker.Forward || !n.Internal
		if len(asker.Upstreams) == 0 {
			asker.Upstreams = upstreams(n.DNS)
		}
		names := append([]string{sb.Name, sb.ID[:12]}, ep.Aliases...)
		records = append(records, dns.Record{Network: n.ID, NetworkName: n.Name, Owner: sb.Name, Names: names, Addr: ep.Addr, Addr6: ep.Addr6})
	}
	if len(asker.Networks) == 0 {
		return asker, false, records
	}
	if len(sb.DNS) > 0 {
		asker.Upstreams = upstreams(sb.DNS)
	} else if len(asker.Upstreams) == 0 {
		asker.Upstreams = upstreams(host.nameservers)
	}
	return asker, true, records
}

// upstreams are servers on port 53, of either family; a zone (fe80::1%eth0)
// stays, naming an interface of the dataplane's namespace, where queries
// are forwarded from.
func upstreams(addrs []netip.Addr) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out
}

package publications

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/hostports"
	"github.com/ebpfnet/ebpfnet/control/hostsync"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config is what publications work with.
type Config struct {
	Maps *maps.Maps
	// InHost runs fn in the dataplane's namespace, where host ports are
	// probed and host addresses read.
	InHost func(fn func() error) error
}

// Publications publishes ports. Its methods are called under the
// engine's lock.
type Publications struct {
	cfg Config
	// ports holds the host port of every publication, so a publish need
	// not read every sandbox; nil until needed and after a failed change
	// (Reset), when it is built again from the store.
	ports *hostports.Allocator
}

// New makes the publications of cfg.
func New(cfg Config) *Publications { return &Publications{cfg: cfg} }

// Reset drops the host ports held: a failed change may have left some it
// allocated. The next publish reads them from the store again.
func (ps *Publications) Reset() { ps.ports = nil }

// describe names p in messages as the allocator names the publications
// it holds.
func Describe(p store.Publication) string { return binding(p, "").String() }

// publishTarget is the endpoint a sandbox's published ports lead to, and
// its network: its first on a bridge network that is not internal.
func target(tx *store.Tx, sb store.Sandbox) (store.Endpoint, store.Network, error) {
	for _, ep := range sb.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return ep, n, err
		}
		if drivers.TraitsOf(n).Datapath && !n.Internal {
			return ep, n, nil
		}
	}
	return store.Endpoint{}, store.Network{}, errdefs.Conflictf("sandbox %s has no endpoint on a bridge network that is not internal: nothing to publish to", sb.Name)
}

// Add publishes specs on sb, open to sources (checked
// already; none: its network's lists), balanced or not, in the store and
// the maps, and registers how to undo the map entries. The specs sb
// publishes already get sources instead, when they are given.
func (ps *Publications) Add(tx *store.Tx, undo *store.Undo, sb store.Sandbox, specs []ports.Mapping, sources ports.Sources,
	balance bool) ([]store.Publication, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	ep, n, err := target(tx, sb)
	if err != nil {
		return nil, err
	}
	if err := checkSourcesReach(n, sources); err != nil {
		return nil, err
	}
	balance = balance || n.PublishBalance
	var relisted []store.Publication
	if sources.Empty() {
		sources = n.PublishSources
	} else if specs, relisted, err = ps.relist(tx, undo, sb, ep, specs, sources); err != nil || len(specs) == 0 {
		return relisted, err
	}
	alloc, err := ps.hostPorts(tx)
	if err != nil {
		return nil, err
	}
	var added []store.Publication
	// One visit to the host namespace for everything the request asks of it.
	err = ps.cfg.InHost(func() error {
		var hostAddrs []netip.Addr // listed once a spec names one
		var lo, hi int             // read once a spec leaves the host port to us
		if slices.ContainsFunc(specs, func(m ports.Mapping) bool { return m.HostPort == 0 }) {
			lo, hi = hostports.EphemeralRange()
		}
		for _, spec := range specs {
			if spec.HostIP.IsValid() && !spec.HostIP.IsLoopback() {
				if hostAddrs == nil {
					var err error
					if hostAddrs, err = hostsync.Addresses(); err != nil {
						return err
					}
				}
				if !slices.Contains(hostAddrs, spec.HostIP) {
					return errdefs.Invalidf("host address %s is not an address of this host", spec.HostIP)
				}
			}
			bs, err := alloc.Allocate(spec, sb.Name, balance, lo, hi)
			if err != nil {
				return err
			}
			for _, b := range bs {
				added = append(added, store.Publication{HostIP: b.Host.Addr, HostPort: b.Host.Num,
					Proto: b.Host.Proto, Port: b.Target, EndpointID: ep.ID, Sources: sources, Balance: balance})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var put []maps.Publication
	undo.Add(func() error { return ps.cfg.Maps.DeletePublications(put...) }) // sees all put below
	if balance {
		return append(relisted, added...), ps.addBalanced(tx, undo, sb, ep, added)
	}
	for _, p := range added {
		for _, m := range desired.Publication(p, ep) {
			if err := failpoint.Hit("publications.entry"); err != nil {
				return nil, err
			}
			if err := ps.cfg.Maps.PutPublication(m); err != nil {
				return nil, err
			}
			put = append(put, m)
		}
	}
	return append(relisted, added...), tx.PutPublications(sb.Name, added...)
}

// addBalanced adds balanced publications of sb, leading to ep, to the
// store and the maps: each host port's entry is written again with every
// backend its records have, and undo puts back the entries as they were.
// The sandboxes that share a port share its source lists.
func (ps *Publications) addBalanced(tx *store.Tx, undo *store.Undo, sb store.Sandbox, ep store.Endpoint, added []store.Publication) error {
	entries := make([][]maps.Publication, len(added)) // added's, in order
	var keys []maps.Publication
	for i, p := range added {
		entries[i] = desired.Publication(p, ep)
		keys = append(keys, entries[i]...)
	}
	was, err := desired.Balanced(tx, keys)
	if err != nil {
		return err
	}
	for i, p := range added {
		for _, k := range entries[i] {
			for _, w := range was {
				if w.HostAddr == k.HostAddr && w.HostPort == k.HostPort && w.Proto == k.Proto && !ports.Sources(w.Sources).Equal(p.Sources) {
					return errdefs.Conflictf("host port %s is balanced with other source lists: the sandboxes that share a port share its lists", Describe(p))
				}
			}
		}
	}
	if err := tx.PutPublications(sb.Name, added...); err != nil {
		return err
	}
	now, err := desired.Balanced(tx, keys)
	if err != nil {
		return err
	}
	undo.Add(func() error { return ps.cfg.Maps.ReplaceBalanced(now, was) })
	if err := failpoint.Hit("publications.entry"); err != nil {
		return err
	}
	return ps.cfg.Maps.ReplaceBalanced(was, now)
}

// relist gives the publications of sb that specs name exactly, and that
// lead to ep, the lists sources, in the store and the maps: new flows are
// checked against them at once, established ones go on. It returns the
// specs left to publish.
func (ps *Publications) relist(tx *store.Tx, undo *store.Undo, sb store.Sandbox, ep store.Endpoint, specs []ports.Mapping,
	sources ports.Sources) (rest []ports.Mapping, relisted []store.Publication, err error) {
	have, err := tx.Publications(sb.Name)
	if err != nil {
		return nil, nil, err
	}
	for _, spec := range specs {
		pubs := publishedAs(spec, ep, have)
		if pubs == nil {
			rest = append(rest, spec)
			continue
		}
		for _, p := range pubs {
			if err := relistAlone(tx, p, ep); err != nil {
				return nil, nil, err
			}
			old := p.Sources
			p.Sources = sources
			for _, m := range desired.Publication(p, ep) {
				if err := ps.cfg.Maps.ReplaceSources(m, maps.Sources(old)); err != nil {
					return nil, nil, err
				}
				back := m
				back.Sources = maps.Sources(old)
				undo.Add(func() error { return ps.cfg.Maps.ReplaceSources(back, m.Sources) })
			}
			relisted = append(relisted, p)
		}
	}
	return rest, relisted, tx.PutPublications(sb.Name, relisted...)
}

// relistAlone refuses new lists for p, leading to ep, when p is a
// balanced publication that other sandboxes share: the sandboxes that
// share a port share its lists.
func relistAlone(tx *store.Tx, p store.Publication, ep store.Endpoint) error {
	if !p.Balance {
		return nil
	}
	entries, err := desired.Balanced(tx, desired.Publication(p, ep))
	if err != nil {
		return err
	}
	for _, m := range entries {
		if len(m.Backends) > 1 {
			return errdefs.Conflictf("host port %s is balanced by %d sandboxes, which share its lists: unpublish it from all of them to change them", Describe(p), len(m.Backends))
		}
	}
	return nil
}

// publishedAs is the publications among have that spec names, each of its
// host ports to its sandbox port on ep; nil unless have holds them all.
func publishedAs(spec ports.Mapping, ep store.Endpoint, have []store.Publication) []store.Publication {
	hostFirst, hostEnd := spec.HostPorts()
	first, end := spec.Ports()
	if hostFirst == 0 || hostEnd-hostFirst != end-first {
		return nil // its host ports are chosen when it is published
	}
	var out []store.Publication
	for i := 0; i <= int(end-first); i++ {
		j := slices.IndexFunc(have, func(p store.Publication) bool {
			return p.HostIP == spec.HostIP && p.HostPort == hostFirst+uint16(i) && p.Proto == spec.Proto &&
				p.Port == first+uint16(i) && p.EndpointID == ep.ID
		})
		if j < 0 {
			return nil
		}
		out = append(out, have[j])
	}
	return out
}

// binding is p as the host-port allocator holds it for sandbox.
func binding(p store.Publication, sandbox string) hostports.Binding {
	return hostports.Binding{
		Host:    hostports.Port{Proto: p.Proto, Addr: p.HostIP, Num: p.HostPort},
		Target:  p.Port,
		Sandbox: sandbox,
		Balance: p.Balance,
	}
}

// hostPorts returns the allocator holding every publication, building it
// from the store when there is none.
func (ps *Publications) hostPorts(tx *store.Tx) (*hostports.Allocator, error) {
	if ps.ports != nil {
		return ps.ports, nil
	}
	all, err := tx.AllPublications()
	if err != nil {
		return nil, err
	}
	a := hostports.New(hostports.Bind)
	for sandbox, pubs := range all {
		for _, p := range pubs {
			a.Hold(binding(p, sandbox))
		}
	}
	ps.ports = a
	return a, nil
}

// Forget releases a removed sandbox's publications.
func (ps *Publications) Forget(sandbox string, pubs []store.Publication) {
	if ps.ports == nil {
		return
	}
	for _, p := range pubs {
		ps.ports.Release(binding(p, sandbox))
	}
}

// matches reports whether a filter (ports.Mapping) matches p.
func matches(f ports.Mapping, p store.Publication) bool {
	if f.Proto != "" && f.Proto != p.Proto || f.HostIP.IsValid() && f.HostIP != p.HostIP {
		return false
	}
	if hostFirst, hostEnd := f.HostPorts(); f.HostPort != 0 && (p.HostPort < hostFirst || p.HostPort > hostEnd) {
		return false
	}
	first, end := f.Ports()
	return f.Port == 0 || p.Port >= first && p.Port <= end
}

// checkSourcesReach refuses source lists for the ports of a network in
// gateway mode routed, whose published sandbox ports the outside also
// reaches at the sandboxes' own addresses, a door the lists do not guard.
func checkSourcesReach(n store.Network, sources ports.Sources) error {
	if sources.Empty() || n.IPv4GatewayMode() != store.GatewayRouted && n.IPv6GatewayMode() != store.GatewayRouted {
		return nil
	}
	return errdefs.Invalidf("source lists on network %s: in gateway mode %s its published ports are also reached at the sandboxes' own addresses, which the lists do not guard", n.Name, store.GatewayRouted)
}

// CheckFilters refuses a filter of Remove's that names no port.
func CheckFilters(filters []ports.Mapping) error {
	for _, f := range filters {
		if err := f.CheckFilter(); err != nil {
			return errdefs.Invalidf("invalid port filter %q: %w", f, err)
		}
	}
	return nil
}

// Removal is what Remove took out of the store, for Apply once the
// change is committed.
type Removal struct {
	sandbox string
	Removed []store.Publication
	// unmap are the removed publications' entries; was and now the
	// balanced ports' entries before and after.
	unmap, was, now []maps.Publication
}

// Remove deletes from the store sb's publications that match any of
// filters (checked already: CheckFilters); each must match at least one.
func (ps *Publications) Remove(tx *store.Tx, sb store.Sandbox, filters []ports.Mapping) (Removal, error) {
	r := Removal{sandbox: sb.Name}
	pubs, err := tx.Publications(sb.Name)
	if err != nil {
		return r, err
	}
	for _, f := range filters {
		before := len(pubs)
		pubs = slices.DeleteFunc(pubs, func(p store.Publication) bool {
			if matches(f, p) {
				r.Removed = append(r.Removed, p)
				return true
			}
			return false
		})
		if len(pubs) == before {
			return r, errdefs.NotFoundf("sandbox %s publishes nothing that matches %q", sb.Name, f)
		}
	}
	r.unmap = desired.Publications(sb, r.Removed)
	if r.was, err = desired.Balanced(tx, r.unmap); err != nil {
		return r, err
	}
	if err := tx.DeletePublications(sb.Name, r.Removed...); err != nil {
		return r, err
	}
	r.now, err = desired.Balanced(tx, r.unmap)
	return r, err
}

// Apply gives back the host ports of a committed Removal and removes its
// map entries: a balanced port keeps its other backends.
func (ps *Publications) Apply(r Removal) error {
	ps.Forget(r.sandbox, r.Removed)
	return errors.Join(ps.cfg.Maps.DeletePublications(maps.Unbalanced(r.unmap)...), ps.cfg.Maps.ReplaceBalanced(r.was, r.now))
}

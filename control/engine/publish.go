package engine

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/hostports"
	"github.com/ebpfnet/ebpfnet/control/hostsync"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// describe names p in messages as the allocator names the publications
// it holds.
func describe(p store.Publication) string { return binding(p, "").String() }

// publishTarget is the endpoint a sandbox's published ports lead to, and
// its network: its first on a bridge network that is not internal.
func publishTarget(tx *store.Tx, sb store.Sandbox) (store.Endpoint, store.Network, error) {
	for _, ep := range sb.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return ep, n, err
		}
		if servedByDatapath(n) && !n.Internal {
			return ep, n, nil
		}
	}
	return store.Endpoint{}, store.Network{}, errdefs.Conflictf("sandbox %s has no endpoint on a bridge network that is not internal: nothing to publish to", sb.Name)
}

func endpointOn(sb store.Sandbox, networkID string) (store.Endpoint, bool) {
	i := slices.IndexFunc(sb.Endpoints, func(ep store.Endpoint) bool { return ep.NetworkID == networkID })
	if i < 0 {
		return store.Endpoint{}, false
	}
	return sb.Endpoints[i], true
}

// Publish publishes ports of a sandbox, open to the sources lists allow
// (none: those its network's lists allow, or everyone). Either all of
// specs are published or none. A port the sandbox publishes already,
// exactly as a spec says, gets the lists given instead. An external
// endpoint's ports are its runtime's to publish (PublishEndpoint).
// With balance, a host port other sandboxes publish with balance too is
// shared: one publication, each of them a backend its new flows are
// spread over.
func (e *Engine) Publish(sandboxRef string, specs []ports.Mapping, sources ports.Sources, balance bool) ([]store.Publication, error) {
	return e.publish(sandboxRef, "", specs, sources, balance)
}

// PublishEndpoint publishes ports of an external endpoint of frontend's.
func (e *Engine) PublishEndpoint(frontend, id string, specs []ports.Mapping, sources ports.Sources) ([]store.Publication, error) {
	return e.publish(id, frontend, specs, sources, false)
}

// sandboxOf finds the sandbox ref names, which frontend must own ("" for
// ebpfnet's own).
func sandboxOf(tx *store.Tx, ref, frontend string) (store.Sandbox, error) {
	sb, err := tx.Sandbox(ref)
	switch {
	case err != nil || sb.Frontend == frontend:
		return sb, err
	case frontend == "":
		return sb, ownSandbox(sb) // a runtime's, refused to the CLI
	default:
		return sb, errdefs.NotFoundf("endpoint %s: no such %s endpoint", ref, frontend)
	}
}

func (e *Engine) publish(ref, frontend string, specs []ports.Mapping, sources ports.Sources, balance bool) ([]store.Publication, error) {
	if err := ports.CheckPublications(specs); err != nil {
		return nil, err
	}
	if err := sources.Check(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var added []store.Publication
	err := e.update(func(tx *store.Tx, undo *store.Undo) error {
		sb, err := sandboxOf(tx, ref, frontend)
		if err != nil {
			return err
		}
		added, err = e.addPublications(tx, undo, sb, specs, sources, balance)
		return err
	})
	return added, err
}

// addPublications publishes specs on sb, open to sources (checked
// already; none: its network's lists), balanced or not, in the store and
// the maps, and registers how to undo the map entries. The specs sb
// publishes already get sources instead, when they are given.
func (e *Engine) addPublications(tx *store.Tx, undo *store.Undo, sb store.Sandbox, specs []ports.Mapping, sources ports.Sources,
	balance bool) ([]store.Publication, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	ep, n, err := publishTarget(tx, sb)
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
	} else if specs, relisted, err = e.relist(tx, undo, sb, ep, specs, sources); err != nil || len(specs) == 0 {
		return relisted, err
	}
	alloc, err := e.hostPorts(tx)
	if err != nil {
		return nil, err
	}
	var added []store.Publication
	// One visit to the host namespace for everything the request asks of it.
	err = e.inHost(func() error {
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
	undo.Add(func() error { return e.maps.DeletePublications(put...) }) // sees all put below
	if balance {
		return append(relisted, added...), e.addBalanced(tx, undo, sb, ep, added)
	}
	for _, p := range added {
		for _, m := range desired.Publication(p, ep) {
			if err := failpoint.Hit("engine.publication"); err != nil {
				return nil, err
			}
			if err := e.maps.PutPublication(m); err != nil {
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
func (e *Engine) addBalanced(tx *store.Tx, undo *store.Undo, sb store.Sandbox, ep store.Endpoint, added []store.Publication) error {
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
					return errdefs.Conflictf("host port %s is balanced with other source lists: the sandboxes that share a port share its lists", describe(p))
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
	undo.Add(func() error { return e.maps.ReplaceBalanced(now, was) })
	if err := failpoint.Hit("engine.publication"); err != nil {
		return err
	}
	return e.maps.ReplaceBalanced(was, now)
}

// relist gives the publications of sb that specs name exactly, and that
// lead to ep, the lists sources, in the store and the maps: new flows are
// checked against them at once, established ones go on. It returns the
// specs left to publish.
func (e *Engine) relist(tx *store.Tx, undo *store.Undo, sb store.Sandbox, ep store.Endpoint, specs []ports.Mapping,
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
				if err := e.maps.ReplaceSources(m, maps.Sources(old)); err != nil {
					return nil, nil, err
				}
				back := m
				back.Sources = maps.Sources(old)
				undo.Add(func() error { return e.maps.ReplaceSources(back, m.Sources) })
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
			return errdefs.Conflictf("host port %s is balanced by %d sandboxes, which share its lists: unpublish it from all of them to change them", describe(p), len(m.Backends))
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
// from the store when there is none. Callers hold e.mu.
func (e *Engine) hostPorts(tx *store.Tx) (*hostports.Allocator, error) {
	if e.ports != nil {
		return e.ports, nil
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
	e.ports = a
	return a, nil
}

// forgetPorts releases a removed sandbox's publications.
func (e *Engine) forgetPorts(sandbox string, pubs []store.Publication) {
	if e.ports == nil {
		return
	}
	for _, p := range pubs {
		e.ports.Release(binding(p, sandbox))
	}
}

// Unpublish removes a sandbox's publications that match any of filters;
// each must match at least one. An external endpoint's ports are its
// runtime's to unpublish (UnpublishEndpoint).
func (e *Engine) Unpublish(sandboxRef string, filters []ports.Mapping) ([]store.Publication, error) {
	return e.unpublish(sandboxRef, "", filters)
}

// UnpublishEndpoint removes every publication of an external endpoint of
// frontend's; none is fine.
func (e *Engine) UnpublishEndpoint(frontend, id string) ([]store.Publication, error) {
	removed, err := e.unpublish(id, frontend, []ports.Mapping{{HostPort: 1, HostPortEnd: 65535}})
	if errors.Is(err, errdefs.ErrNotFound) && len(removed) == 0 {
		return nil, nil
	}
	return removed, err
}

func (e *Engine) unpublish(sandboxRef, frontend string, filters []ports.Mapping) ([]store.Publication, error) {
	for _, f := range filters {
		if err := f.CheckFilter(); err != nil {
			return nil, errdefs.Invalidf("invalid port filter %q: %w", f, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		removed  []store.Publication
		unmap    []maps.Publication
		was, now []maps.Publication // the balanced ports' entries
		name     string
	)
	err := e.store.Update(func(tx *store.Tx) error { // names do not change
		sb, err := sandboxOf(tx, sandboxRef, frontend)
		name = sb.Name
		if err != nil {
			return err
		}
		pubs, err := tx.Publications(sb.Name)
		if err != nil {
			return err
		}
		for _, f := range filters {
			before := len(pubs)
			pubs = slices.DeleteFunc(pubs, func(p store.Publication) bool {
				if matches(f, p) {
					removed = append(removed, p)
					return true
				}
				return false
			})
			if len(pubs) == before {
				return errdefs.NotFoundf("sandbox %s publishes nothing that matches %q", sb.Name, f)
			}
		}
		unmap = desired.Publications(sb, removed)
		if was, err = desired.Balanced(tx, unmap); err != nil {
			return err
		}
		if err := tx.DeletePublications(sb.Name, removed...); err != nil {
			return err
		}
		now, err = desired.Balanced(tx, unmap)
		return err
	})
	if err != nil {
		return nil, err
	}
	e.forgetPorts(name, removed)
	return removed, errors.Join(e.maps.DeletePublications(maps.Unbalanced(unmap)...), e.maps.ReplaceBalanced(was, now))
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

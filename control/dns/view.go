package dns

import (
	"github.com/ebpfnet/ebpfnet/control/egress"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// View is everything the resolver knows at one moment.
type View struct {
	// sandboxes that have a resolver, by sandbox ID, spread over shards so
	// that a change copies the shard it touches, not every asker (Asker).
	sandboxes [askerShards]map[string]Asker
	// networks are the names on each network, by network ID.
	networks map[string]*networkNames
	// upstreams counts the askers of each upstream server, so that the
	// resolver learns which servers are still used without going through
	// every asker.
	upstreams map[netip.AddrPort]int
}

// networkNames are the names on one network: a lower-case, fully
// qualified name to its addresses of both families, in no particular
// order, and an address to its PTR target. A name is present even with
// no address, so that it is known (NODATA) rather than sent upstream.
// Both are spread over shards, by name and by address, so that a change
// copies the shards its records touch, not the network's every name: a
// network of thousands of sandboxes costs a change what one does.
type networkNames struct {
	names   [nameShards]map[string]nameEntry
	reverse [nameShards]map[netip.Addr]reverseEntry
	records int // how many records hold names here
}

// nameShards is how many maps a network's names and reverse names are
// each spread over.
const nameShards = 64

// nameEntry is a name's addresses, and who gave which: a record that goes
// takes its own away and leaves the others'.
type nameEntry struct {
	addrs  []netip.Addr
	owners []nameOwner
}

type nameOwner struct {
	owner string
	addrs []netip.Addr
}

// reverseEntry is an address's PTR target, and the record that gave it.
type reverseEntry struct{ target, owner string }

// askerShards is how many maps the askers are spread over: with 64, a
// change at 5,000 sandboxes copies about 80 askers.
const askerShards = 64

// shardOf is the shard of sandbox id, or of a name (FNV-1a).
func shardOf(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % askerShards)
}

// addrShard is the shard of an address's reverse name.
func addrShard(a netip.Addr) int {
	b := a.As16()
	return int(b[15]^b[14]^b[11]) % nameShards
}

// Asker is the asker of sandbox id, if it has a resolver.
func (v *View) Asker(id string) (Asker, bool) {
	a, ok := v.sandboxes[shardOf(id)][id]
	return a, ok
}

// Asker is what the resolver needs to know about a sandbox that asks.
type Asker struct {
	Networks  []string         // IDs of its networks, in endpoint order
	Forward   bool             // whether names it does not know go upstream
	Upstreams []netip.AddrPort // where they go
	// Egress are the egress lists of its endpoints that have one: what
	// the resolver answers for a name a list allows, the list's sources
	// may reach (Resolver.LearnWith). Unlisted says an endpoint has no
	// list; without one, a name no list allows is refused, not asked
	// upstream, where its labels could carry what the lists keep in.
	Egress   []EgressList
	Unlisted bool

	// upstreamKey names the set of Upstreams in cache keys: an answer
	// serves only askers that would have asked the same servers.
	upstreamKey string
}

// EgressList is the egress list of the addresses of one of an asker's
// endpoints.
type EgressList struct {
	Sources []netip.Addr
	List    egress.List
}

// egressSources are the addresses whose lists allow name; listed says
// whether the asker may only ask for such names.
func (a Asker) egressSources(name string) (sources []netip.Addr, listed bool) {
	for _, l := range a.Egress {
		if l.List.Allows(name) {
			sources = append(sources, l.Sources...)
		}
	}
	return sources, len(a.Egress) > 0 && !a.Unlisted
}

// Record is one sandbox's presence on one network.
type Record struct {
	Network     string // network ID
	NetworkName string
	// Owner is whose record it is, unique on its network: a sandbox of
	// this host by name, another host's endpoint by ID. Empty, the first
	// of Names is.
	Owner string
	Names []string   // the sandbox's name, its short ID, its aliases
	Addr  netip.Addr // IPv4; the zero Addr when it has none
	Addr6 netip.Addr // IPv6, on a network with IPv6; else the zero Addr
}

// owner is whose r is (Record.Owner).
func (r Record) owner() string {
	if r.Owner != "" || len(r.Names) == 0 {
		return r.Owner
	}
	return r.Names[0]
}

// NewView indexes records and askers into a View.
func NewView(askers map[string]Asker, records []Record) *View {
	return (&View{}).Apply(Change{Askers: askers, Put: records})
}

// Change is what one change of the names does to a View.
type Change struct {
	Askers map[string]Asker // askers added or changed, by sandbox ID
	Gone   []string         // sandbox IDs that no longer ask
	// Drop are records the view holds that go: each as it was put.
	// Put are records that come, after Drop is done.
	Drop, Put []Record
}

// Apply returns v with c applied; v itself is left as it is, for the
// queries being answered with it, which so need no lock. Only the
// networks c names are indexed again, and only the shards of askers it
// touches copied, so a change costs what it touches, not what the view
// holds.
func (v *View) Apply(c Change) *View {
	out := *v // the shards' maps are shared until changed
	out.networks, out.upstreams = maps.Clone(v.networks), maps.Clone(v.upstreams)
	if out.networks == nil {
		out.networks = map[string]*networkNames{}
	}
	if out.upstreams == nil {
		out.upstreams = map[netip.AddrPort]int{}
	}
	var copied [askerShards]bool
	shard := func(id string) map[string]Asker {
		i := shardOf(id)
		if !copied[i] {
			out.sandboxes[i], copied[i] = maps.Clone(v.sandboxes[i]), true
			if out.sandboxes[i] == nil {
				out.sandboxes[i] = map[string]Asker{}
			}
		}
		return out.sandboxes[i]
	}
	drop := func(id string) {
		m := shard(id)
		for _, s := range m[id].Upstreams {
			if out.upstreams[s]--; out.upstreams[s] <= 0 {
				delete(out.upstreams, s)
			}
		}
		delete(m, id)
	}
	for _, id := range c.Gone {
		drop(id)
	}
	for id, a := range c.Askers {
		drop(id)
		var key strings.Builder
		for _, s := range a.Upstreams {
			key.WriteString(s.String() + " ")
			out.upstreams[s]++
		}
		a.upstreamKey = key.String()
		shard(id)[id] = a
	}
	edits := map[string]*namesEdit{}
	network := func(id string) *namesEdit {
		if ed, ok := edits[id]; ok {
			return ed
		}
		ed := &namesEdit{networkNames: &networkNames{}}
		if was := v.networks[id]; was != nil {
			*ed.networkNames = *was // the shards' maps are shared until changed
		}
		out.networks[id], edits[id] = ed.networkNames, ed
		return ed
	}
	for _, r := range c.Drop {
		network(r.Network).drop(r)
	}
	for _, r := range c.Put {
		network(r.Network).put(r)
	}
	for id, ed := range edits {
		if ed.records <= 0 {
			delete(out.networks, id)
		}
	}
	return &out
}

// entries are the names a record gives (lower-case, fully qualified),
// the first its PTR target, and its addresses.
func (r Record) entries() (names []string, addrs []netip.Addr) {
	for _, a := range []netip.Addr{r.Addr, r.Addr6} {
		if a.IsValid() {
			addrs = append(addrs, a.WithZone(""))
		}
	}
	for _, n := range r.Names {
		for _, fq := range []string{n + "." + r.NetworkName, n} {
			names = append(names, dns.Fqdn(strings.ToLower(fq)))
		}
	}
	return names, addrs
}

// namesEdit is a network's names as one Apply changes them: each shard
// is copied the first time the change writes it (the view before keeps
// the original), and written in place after.
type namesEdit struct {
	*networkNames
	ownNames, ownReverse [nameShards]bool
}

// nameShard is the shard of name key, the change's own.
func (ed *namesEdit) nameShard(key string) map[string]nameEntry {
	i := shardOf(key) % nameShards
	if !ed.ownNames[i] {
		ed.names[i], ed.ownNames[i] = maps.Clone(ed.names[i]), true
		if ed.names[i] == nil {
			ed.names[i] = map[string]nameEntry{}
		}
	}
	return ed.names[i]
}

// reverseShard is nameShard for an address's reverse name.
func (ed *namesEdit) reverseShard(a netip.Addr) map[netip.Addr]reverseEntry {
	i := addrShard(a)
	if !ed.ownReverse[i] {
		ed.reverse[i], ed.ownReverse[i] = maps.Clone(ed.reverse[i]), true
		if ed.reverse[i] == nil {
			ed.reverse[i] = map[netip.Addr]reverseEntry{}
		}
	}
	return ed.reverse[i]
}

// put adds r's names, its addresses under each, and its own name as the
// PTR target of each address.
func (ed *namesEdit) put(r Record) {
	owner := r.owner()
	names, addrs := r.entries()
	for _, key := range names {
		shard := ed.nameShard(key)
		e := shard[key]
		e.owners = append(slices.Clip(e.owners), nameOwner{owner, addrs})
		e.addrs = append(slices.Clip(e.addrs), addrs...)
		shard[key] = e
	}
	if len(names) > 0 {
		for _, a := range addrs {
			ed.reverseShard(a)[a] = reverseEntry{target: names[0], owner: owner}
		}
	}
	ed.records++
}

// drop takes away what put(r) added; another record's stays.
func (ed *namesEdit) drop(r Record) {
	owner := r.owner()
	names, addrs := r.entries()
	for _, key := range names {
		shard := ed.nameShard(key)
		e, ok := shard[key]
		i := slices.IndexFunc(e.owners, func(o nameOwner) bool { return o.owner == owner })
		if !ok || i < 0 {
			continue
		}
		e.owners = slices.Delete(slices.Clone(e.owners), i, i+1)
		if len(e.owners) == 0 {
			delete(shard, key)
			continue
		}
		e.addrs = nil
		for _, o := range e.owners {
			e.addrs = append(e.addrs, o.addrs...)
		}
		shard[key] = e
	}
	for _, a := range addrs {
		if shard := ed.reverseShard(a); shard[a].owner == owner {
			delete(shard, a)
		}
	}
	ed.records--
}

// lookup finds a name for an asker: on the first of its networks that has it.
func (v *View) lookup(a Asker, name string) ([]netip.Addr, bool) {
	for _, n := range a.Networks {
		if names := v.networks[n]; names != nil {
			if e, ok := names.names[shardOf(name)%nameShards][name]; ok {
				return e.addrs, true
			}
		}
	}
	return nil, false
}

// reverse finds the PTR target of an address on one of the asker's networks.
func (v *View) reverse(a Asker, addr netip.Addr) (string, bool) {
	for _, n := range a.Networks {
		if names := v.networks[n]; names != nil {
			if e, ok := names.reverse[addrShard(addr)][addr]; ok {
				return e.target, true
			}
		}
	}
	return "", false
}

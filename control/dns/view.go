package dns

import (
	"maps"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// View is everything the resolver knows at one moment.
type View struct {
	// sandboxes that have a resolver, by sandbox ID, spread over shards so
	// that a change copies the shard it touches, not every asker (Asker).
	sandboxes [askerShards]map[string]Asker
	// Names on each network (by network ID): a lower-case, fully qualified
	// name to its addresses of both families, in no particular order. A
	// name is present even with no address, so that it is known (NODATA)
	// rather than sent upstream.
	Names map[string]map[string][]netip.Addr
	// Reverse names on each network: an address to its PTR target.
	Reverse map[string]map[netip.Addr]string
	// upstreams counts the askers of each upstream server, so that the
	// resolver learns which servers are still used without going through
	// every asker.
	upstreams map[netip.AddrPort]int
}

// askerShards is how many maps the askers are spread over: with 64, a
// change at 5,000 sandboxes copies about 80 askers.
const askerShards = 64

// shardOf is the shard of sandbox id (FNV-1a).
func shardOf(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % askerShards)
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

	// upstreamKey names the set of Upstreams in cache keys: an answer
	// serves only askers that would have asked the same servers.
	upstreamKey string
}

// Record is one sandbox's presence on one network.
type Record struct {
	Network     string // network ID
	NetworkName string
	Names       []string   // the sandbox's name, its short ID, its aliases
	Addr        netip.Addr // IPv4; the zero Addr when it has none
	Addr6       netip.Addr // IPv6, on a network with IPv6; else the zero Addr
}

// NewView indexes records and askers into a View.
func NewView(askers map[string]Asker, records []Record) *View {
	byNetwork := map[string][]Record{}
	for _, r := range records {
		byNetwork[r.Network] = append(byNetwork[r.Network], r)
	}
	return (&View{}).Apply(Change{Askers: askers, Networks: byNetwork})
}

// Change is what one change of the names does to a View.
type Change struct {
	Askers map[string]Asker // askers added or changed, by sandbox ID
	Gone   []string         // sandbox IDs that no longer ask
	// Networks holds every record of each network the change touched;
	// a network named with none has no names left.
	Networks map[string][]Record
}

// Apply returns v with c applied; v itself is left as it is, for the
// queries being answered with it, which so need no lock. Only the
// networks c names are indexed again, and only the shards of askers it
// touches copied, so a change costs what it touches, not what the view
// holds.
func (v *View) Apply(c Change) *View {
	out := *v // the shards' maps are shared until changed
	out.Names, out.Reverse, out.upstreams = maps.Clone(v.Names), maps.Clone(v.Reverse), maps.Clone(v.upstreams)
	if out.Names == nil {
		out.Names, out.Reverse = map[string]map[string][]netip.Addr{}, map[string]map[netip.Addr]string{}
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
	for network, records := range c.Networks {
		if len(records) == 0 {
			delete(out.Names, network)
			delete(out.Reverse, network)
			continue
		}
		out.Names[network], out.Reverse[network] = indexNetwork(records)
	}
	return &out
}

// indexNetwork indexes the records of one network: its names and its
// reverse names.
func indexNetwork(records []Record) (map[string][]netip.Addr, map[netip.Addr]string) {
	names, reverse := map[string][]netip.Addr{}, map[netip.Addr]string{}
	for _, r := range records {
		var addrs []netip.Addr
		for _, a := range []netip.Addr{r.Addr, r.Addr6} {
			if a.IsValid() {
				addrs = append(addrs, a.WithZone(""))
			}
		}
		for i, n := range r.Names {
			for _, fq := range []string{n, n + "." + r.NetworkName} {
				key := dns.Fqdn(strings.ToLower(fq))
				names[key] = append(names[key], addrs...)
			}
			if i == 0 { // the sandbox's own name is its PTR target, for both families
				for _, a := range addrs {
					reverse[a] = dns.Fqdn(strings.ToLower(n + "." + r.NetworkName))
				}
			}
		}
	}
	return names, reverse
}

// lookup finds a name for an asker: on the first of its networks that has it.
func (v *View) lookup(a Asker, name string) ([]netip.Addr, bool) {
	for _, n := range a.Networks {
		if addrs, ok := v.Names[n][name]; ok {
			return addrs, true
		}
	}
	return nil, false
}

// reverse finds the PTR target of an address on one of the asker's networks.
func (v *View) reverse(a Asker, addr netip.Addr) (string, bool) {
	for _, n := range a.Networks {
		if name, ok := v.Reverse[n][addr]; ok {
			return name, true
		}
	}
	return "", false
}

package dns

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// View is everything the resolver knows at one moment.
type View struct {
	// Sandboxes that have a resolver, by sandbox ID.
	Sandboxes map[string]Asker
	// Names on each network (by network ID): a lower-case, fully qualified
	// name to its addresses of both families, in no particular order. A
	// name is present even with no address, so that it is known (NODATA)
	// rather than sent upstream.
	Names map[string]map[string][]netip.Addr
	// Reverse names on each network: an address to its PTR target.
	Reverse map[string]map[netip.Addr]string
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
	v := &View{Sandboxes: map[string]Asker{}, Names: map[string]map[string][]netip.Addr{}, Reverse: map[string]map[netip.Addr]string{}}
	for id, a := range askers {
		var key strings.Builder
		for _, s := range a.Upstreams {
			key.WriteString(s.String() + " ")
		}
		a.upstreamKey = key.String()
		v.Sandboxes[id] = a
	}
	for _, r := range records {
		names := v.Names[r.Network]
		if names == nil {
			names = map[string][]netip.Addr{}
			v.Names[r.Network] = names
			v.Reverse[r.Network] = map[netip.Addr]string{}
		}
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
					v.Reverse[r.Network][a] = dns.Fqdn(strings.ToLower(n + "." + r.NetworkName))
				}
			}
		}
	}
	return v
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

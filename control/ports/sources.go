package ports

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Sources are who may open flows to published ports: the most specific
// prefix among Allow and Deny decides; an address no prefix holds is let
// in when Allow is empty and refused otherwise, in both families. No
// prefix at all lets everyone in. They apply to the first packet of a
// flow from outside or from a sandbox; host processes, which the socket
// hooks connect, are the host's own and are not checked.
type Sources struct {
	Allow []netip.Prefix `json:"Allow,omitempty"`
	Deny  []netip.Prefix `json:"Deny,omitempty"`
}

// Empty reports whether s is no list: everyone.
func (s Sources) Empty() bool { return len(s.Allow) == 0 && len(s.Deny) == 0 }

// Equal reports whether s and o hold the same prefixes in the same order.
func (s Sources) Equal(o Sources) bool {
	return slices.Equal(s.Allow, o.Allow) && slices.Equal(s.Deny, o.Deny)
}

// Check refuses what no datapath entry can say: a prefix with host bits
// set, a v4-mapped one (give it as IPv4), one with a zone, and one both
// allowed and denied.
func (s Sources) Check() error {
	allowed := map[netip.Prefix]bool{}
	for _, list := range []struct {
		name  string
		items []netip.Prefix
	}{{"allow", s.Allow}, {"deny", s.Deny}} {
		for _, p := range list.items {
			switch {
			case !p.IsValid():
				return errdefs.Invalidf("invalid %s prefix %q", list.name, p)
			case p.Addr().Is4In6():
				return errdefs.Invalidf("%s prefix %s is v4-mapped: give it as IPv4", list.name, p)
			case p.Addr().Zone() != "":
				return errdefs.Invalidf("%s prefix %s has a zone", list.name, p)
			case p != p.Masked():
				return errdefs.Invalidf("%s prefix %s has host bits set (did you mean %s?)", list.name, p, p.Masked())
			case list.name == "allow":
				allowed[p] = true
			case allowed[p]:
				return errdefs.Invalidf("prefix %s is both allowed and denied", p)
			}
		}
	}
	return nil
}

// ParsePrefixes reads a comma-separated list of prefixes, as network
// options and configuration keys give them; a bare address is its own
// /32 or /128.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("invalid prefix %q: want an address or CIDR such as 192.0.2.0/24", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

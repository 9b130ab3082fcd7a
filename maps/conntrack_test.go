package maps

import (
	"net/netip"
	"testing"
)

// A source's flows count under its address, or for an IPv6 address beyond
// the host's networks its /64, as the datapath's ct_source_of has it.
func TestSourceOf(t *testing.T) {
	local := map[netip.Prefix]bool{netip.MustParsePrefix("fd00:17::/64"): false, netip.MustParsePrefix("fd00:99::/64"): true}
	for _, c := range []struct{ addr, want string }{
		{"10.99.0.2", "10.99.0.2"},
		{"2001:db8:99::102", "2001:db8:99::"},
		{"fd00:17::9", "fd00:17::9"},
		{"fd00:99::5", "fd00:99::5"},
	} {
		if got := Addr(sourceOf(addr16(netip.MustParseAddr(c.addr)), local)); got != netip.MustParseAddr(c.want) {
			t.Errorf("sourceOf(%s) = %s, want %s", c.addr, got, c.want)
		}
	}
}

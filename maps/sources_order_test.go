package maps

import (
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// putSources writes the rest of a list (its prefix of length zero) before
// its prefixes, "so that a list that begins to refuse refuses from its
// first write on", telling the rest by its length: the publication's key
// alone. An IPv4 rest also counts the 96 bits that map IPv4 into IPv6, so
// for IPv4 publications (and the daemon's IPv4 default) the rest is
// written among the prefixes in map order, and a write that fails
// half-way may leave allows without the rest that refuses the others.
func TestRestOfEachFamilyIsWrittenFirst(t *testing.T) {
	s := Sources{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}
	for _, host := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		pub := publicationKey(Publication{HostAddr: host, HostPort: 8080, Proto: 6})
		var first []bpf.DatapathSourceKey
		for k := range sourceEntries(pub, s) {
			if k.Prefixlen == uint32(8*publicationKeySize) { // putSources' test of a rest
				first = append(first, k)
			}
		}
		if len(first) != 1 {
			t.Errorf("publication on %s: putSources writes %d entries first, want its rest alone", host, len(first))
		}
	}
}

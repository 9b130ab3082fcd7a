package maps

import (
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// putSources writes the entries that refuse before those that let in, in
// both families and whatever the lists (the rest of a list with allowed
// prefixes is one that refuses), so that a write that fails half-way, or
// a moment between two writes, never lets in a source that neither the
// old lists nor the new let in.
func TestSourceEntriesThatRefuseAreWrittenFirst(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, s := range []Sources{
		{Allow: []netip.Prefix{pfx("10.0.0.0/8"), pfx("2001:db8::/32")}},
		{Allow: []netip.Prefix{pfx("10.0.0.0/8")}, Deny: []netip.Prefix{pfx("10.1.0.0/16"), pfx("2001:db8::1/128")}},
		{Deny: []netip.Prefix{pfx("10.1.0.0/16")}},
	} {
		for _, host := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			entries := sourceEntries(publicationKey(Publication{HostAddr: host, HostPort: 8080, Proto: 6}), s)
			order := sourceWriteOrder(entries)
			if len(order) != len(entries) {
				t.Fatalf("%+v on %s: %d entries in the order, want %d", s, host, len(order), len(entries))
			}
			allowed, rests := false, 0
			for _, k := range order {
				if sourcePrefix(k).Bits() == 0 {
					rests++
				}
				switch entries[k] {
				case bpf.DatapathSourceActionSOURCE_ALLOW:
					allowed = true
				case bpf.DatapathSourceActionSOURCE_DENY:
					if allowed {
						t.Errorf("%+v on %s: %s refused after an entry that lets in", s, host, sourcePrefix(k))
					}
				}
			}
			if rests != 1 {
				t.Errorf("%+v on %s: %d rests, want one", s, host, rests)
			}
		}
	}
}

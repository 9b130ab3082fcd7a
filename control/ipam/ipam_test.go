package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func mustPool(t *testing.T, subnet, ipRange, gateway string) Pool {
	t.Helper()
	var r netip.Prefix
	if ipRange != "" {
		r = pfx(ipRange)
	}
	var g netip.Addr
	if gateway != "" {
		g = addr(gateway)
	}
	p, err := NewPool(pfx(subnet), r, g)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewPoolErrors(t *testing.T) {
	tests := []struct {
		subnet, ipRange, gateway string
		want                     string
	}{
		{"172.19.0.0/16", "", "10.0.0.1", "gateway 10.0.0.1 is outside subnet 172.19.0.0/16"},
		{"172.19.0.0/16", "", "172.19.0.0", "gateway 172.19.0.0 is the network or broadcast address"},
		{"172.19.0.0/16", "", "172.19.255.255", "gateway 172.19.255.255 is the network or broadcast address"},
		{"172.19.0.5/16", "", "", "subnet 172.19.0.5/16 has host bits set (did you mean 172.19.0.0/16?)"},
		{"172.19.0.0/31", "", "", "subnet 172.19.0.0/31 is too small"},
		{"fd00::/127", "", "", "subnet fd00::/127 is too small: it needs room for a gateway and an endpoint (at most /126)"},
		{"fd00::5/64", "", "", "subnet fd00::5/64 has host bits set (did you mean fd00::/64?)"},
		{"fd00::/64", "", "fd01::1", "gateway fd01::1 is outside subnet fd00::/64"},
		{"fd00::/64", "", "fd00::", "gateway fd00:: is the network"},
		{"fd00::/64", "10.0.0.0/24", "", "ip-range 10.0.0.0/24 is outside subnet fd00::/64"},
		{"172.19.0.0/16", "fd00::/120", "", "ip-range fd00::/120 is outside subnet 172.19.0.0/16"},
		{"::ffff:172.19.0.0/112", "", "", "subnet ::ffff:172.19.0.0/112 is IPv4-mapped"},
		{"172.19.0.0/16", "10.0.0.0/24", "", "ip-range 10.0.0.0/24 is outside subnet 172.19.0.0/16"},
		{"172.19.0.0/16", "172.0.0.0/8", "", "ip-range 172.0.0.0/8 is outside subnet 172.19.0.0/16"},
		{"172.19.0.0/16", "172.19.5.1/24", "", "ip-range 172.19.5.1/24 has host bits set"},
	}
	for _, tt := range tests {
		var r netip.Prefix
		if tt.ipRange != "" {
			r = pfx(tt.ipRange)
		}
		var g netip.Addr
		if tt.gateway != "" {
			g = addr(tt.gateway)
		}
		_, err := NewPool(pfx(tt.subnet), r, g)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewPool(%s, %s, %s) = %v, want error containing %q", tt.subnet, tt.ipRange, tt.gateway, err, tt.want)
		}
	}
}

func TestDefaultGatewayIsFirstAddress(t *testing.T) {
	p := mustPool(t, "172.19.0.0/16", "", "")
	if p.Gateway != addr("172.19.0.1") {
		t.Fatalf("gateway = %s", p.Gateway)
	}
}

func TestAllocateSkipsReservedAndIsSequential(t *testing.T) {
	p := mustPool(t, "10.1.0.0/29", "", "10.1.0.1") // .0 network, .1 gateway, .7 broadcast
	var got []string
	for {
		a, err := p.Allocate()
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if strings.Join(got, " ") != "10.1.0.2 10.1.0.3 10.1.0.4 10.1.0.5 10.1.0.6" {
		t.Fatalf("allocated %v", got)
	}
}

func TestGatewayInsideRangeIsSkipped(t *testing.T) {
	p := mustPool(t, "10.1.0.0/24", "10.1.0.0/30", "10.1.0.2")
	a, _ := p.Allocate()
	b, _ := p.Allocate()
	if a != addr("10.1.0.1") || b != addr("10.1.0.3") {
		t.Fatalf("allocated %s, %s", a, b)
	}
}

func TestReleasedAddressReusedOnlyAfterWrap(t *testing.T) {
	p := mustPool(t, "10.1.0.0/29", "", "")
	a, _ := p.Allocate() // .2
	b, _ := p.Allocate() // .3
	p.Release(a)
	c, _ := p.Allocate()
	if c != addr("10.1.0.4") {
		t.Fatalf("after releasing %s got %s, want 10.1.0.4 (no reuse before wrap)", a, c)
	}
	p.Release(b)
	for _, want := range []string{"10.1.0.5", "10.1.0.6", "10.1.0.2", "10.1.0.3"} {
		got, err := p.Allocate()
		if err != nil || got != addr(want) {
			t.Fatalf("got %s, %v; want %s", got, err, want)
		}
	}
	if _, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full pool: err = %v, want ErrExhausted", err)
	}
}

func TestAllocateWithinRange(t *testing.T) {
	p := mustPool(t, "172.19.0.0/16", "172.19.5.0/24", "172.19.0.1")
	// As with Docker, only the subnet's network, broadcast and gateway
	// addresses are reserved, not the edges of a range inside it.
	a, _ := p.Allocate()
	if a != addr("172.19.5.0") {
		t.Fatalf("first address %s, want 172.19.5.0", a)
	}
	for range 255 {
		if _, err := p.Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	// .0 and .255 of a range that is not the subnet's edge are ordinary addresses.
	if !p.InUse(addr("172.19.5.0")) || !p.InUse(addr("172.19.5.255")) {
		t.Fatal("range edges should be allocatable")
	}
	if _, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted after 256 addresses", err)
	}
}

func TestAllocateStatic(t *testing.T) {
	p := mustPool(t, "172.19.0.0/16", "172.19.5.0/24", "")
	if err := p.AllocateStatic(addr("172.19.9.9")); err != nil {
		t.Fatalf("outside the range but inside the subnet must work: %v", err)
	}
	for a, want := range map[string]string{
		"172.19.9.9":     "address 172.19.9.9 is already in use",
		"172.19.0.1":     "address 172.19.0.1 is the gateway",
		"172.19.0.0":     "address 172.19.0.0 is the network or broadcast address",
		"172.19.255.255": "is the network or broadcast address",
		"10.0.0.1":       "address 10.0.0.1 is outside subnet 172.19.0.0/16",
	} {
		if err := p.AllocateStatic(addr(a)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("AllocateStatic(%s) = %v, want %q", a, err, want)
		}
	}
	// A static address inside the range is skipped by dynamic allocation.
	if err := p.AllocateStatic(addr("172.19.5.0")); err != nil {
		t.Fatal(err)
	}
	if a, _ := p.Allocate(); a != addr("172.19.5.1") {
		t.Fatalf("got %s, want 172.19.5.1", a)
	}
}

func TestFreeSubnet(t *testing.T) {
	got, err := FreeSubnet(DefaultPools(), []netip.Prefix{pfx("172.17.0.0/16"), pfx("172.18.5.0/24"), pfx("10.0.0.0/8")})
	if err != nil || got != pfx("172.19.0.0/16") {
		t.Fatalf("got %s, %v", got, err)
	}
	// A route covering all of 172.16.0.0/12 moves us to 192.168.0.0/20.
	got, _ = FreeSubnet(DefaultPools(), []netip.Prefix{pfx("172.16.0.0/12")})
	if got != pfx("192.168.0.0/20") {
		t.Fatalf("got %s, want 192.168.0.0/20", got)
	}
	if _, err := FreeSubnet(DefaultPools(), []netip.Prefix{pfx("0.0.0.0/1"), pfx("128.0.0.0/1")}); err == nil {
		t.Fatal("want an error when every pool overlaps")
	}
	pools := slices.Collect(DefaultPools())
	if len(pools) != 15+16 || pools[len(pools)-1] != pfx("192.168.240.0/20") {
		t.Fatalf("default pools: %v", pools)
	}
}

// pools is a Pools in memory.
type pools map[string]Pool

func (ps pools) Pool(id string) (Pool, error) {
	p, ok := ps[id]
	if !ok {
		return p, errors.New("no pool " + id)
	}
	return p, nil
}

func (ps pools) PutPool(p Pool) error { ps[p.ID] = p; return nil }

// Addresses are allocated and released by pool ID, with no network or
// endpoint involved, as Docker's IPAM protocol asks.
func TestAllocateByPoolID(t *testing.T) {
	p := mustPool(t, "10.9.0.0/29", "", "")
	p.ID = "p1"
	ps := pools{"p1": p}
	a, err := Allocate(ps, "p1", netip.Addr{})
	if q := ps["p1"]; err != nil || a != addr("10.9.0.2") || !q.InUse(a) {
		t.Fatalf("Allocate: %s %v", a, err)
	}
	static := addr("10.9.0.5")
	if got, err := Allocate(ps, "p1", static); err != nil || got != static {
		t.Fatalf("Allocate static: %s %v", got, err)
	}
	if _, err := Allocate(ps, "p1", static); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Allocate of an address in use: %v", err)
	}
	if err := Release(ps, "p1", static); err != nil {
		t.Fatal(err)
	}
	if q := ps["p1"]; q.InUse(static) || !q.InUse(a) {
		t.Errorf("after Release: %v", q.Allocated)
	}
	if _, err := Allocate(ps, "p2", netip.Addr{}); err == nil {
		t.Error("Allocate from a pool that does not exist succeeded")
	}
}

func TestIPv6Pool(t *testing.T) {
	p := mustPool(t, "fd12:3456:789a::/64", "", "")
	if p.Gateway != addr("fd12:3456:789a::1") {
		t.Fatalf("gateway = %s, want ::1", p.Gateway)
	}
	a, err := p.Allocate()
	if err != nil || a != addr("fd12:3456:789a::2") {
		t.Fatalf("first address %s, %v", a, err)
	}
	// No broadcast: the last address of an IPv6 subnet is an ordinary one,
	// the network address is still reserved.
	if err := p.AllocateStatic(addr("fd12:3456:789a:0:ffff:ffff:ffff:ffff")); err != nil {
		t.Errorf("last address of the subnet: %v", err)
	}
	if err := p.AllocateStatic(addr("fd12:3456:789a::")); err == nil || !strings.Contains(err.Error(), "network or broadcast") {
		t.Errorf("network address: %v", err)
	}
	// The smallest IPv6 subnet: ::0 reserved, ::1 the gateway, ::2 and ::3 free.
	small := mustPool(t, "fd00::/126", "", "")
	var got []string
	for {
		a, err := small.Allocate()
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if strings.Join(got, " ") != "fd00::2 fd00::3" {
		t.Fatalf("a /126 gave %v", got)
	}
}

// A /64 is never enumerated: allocating after a run of taken addresses, and
// wrapping to the start of a range, cost what is allocated.
func TestIPv6AllocateInLargeRange(t *testing.T) {
	p := mustPool(t, "fd00:1::/64", "fd00:1::/80", "")
	for range 1000 {
		if _, err := p.Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	if p.Last != addr("fd00:1::3e9") {
		t.Fatalf("after 1000 allocations Last = %s", p.Last)
	}
	// Released addresses are reused only after the wrap; the wrap from the
	// range's last address goes back to its first free one.
	p.Release(addr("fd00:1::5"))
	if err := p.AllocateStatic(addr("fd00:1::ffff:ffff:ffff")); err != nil {
		t.Fatal(err)
	}
	p.Last = addr("fd00:1::ffff:ffff:fffe")
	a, err := p.Allocate()
	if err != nil || a != addr("fd00:1::5") {
		t.Fatalf("after the wrap got %s, %v; want fd00:1::5", a, err)
	}
}

func TestDefaultPools6(t *testing.T) {
	base := ULABase("0123456789abcdef")
	if base.Bits() != 48 || base.Addr().As16()[0] != 0xfd || base != ULABase("0123456789abcdef") {
		t.Fatalf("ULA base %s: want a stable fdXX:XXXX:XXXX::/48", base)
	}
	if ULABase("another host") == base {
		t.Fatal("two host IDs share a ULA prefix")
	}
	first := netip.PrefixFrom(base.Addr(), 64)
	second, _ := netip.ParsePrefix(strings.TrimSuffix(base.Addr().String(), "::") + ":1::/64")
	got, err := FreeSubnet(DefaultPools6(base), []netip.Prefix{first, pfx("172.17.0.0/16")})
	if err != nil || got != second {
		t.Fatalf("first free /64 = %s, %v; want %s", got, err, second)
	}
	if _, err := FreeSubnet(DefaultPools6(base), []netip.Prefix{pfx("fd00::/8")}); err == nil {
		t.Fatal("want an error when a route covers the whole ULA /48")
	}
}

// Split yields every subnet of the length asked, in order, across byte
// boundaries and up to the family's last address, and nothing for a
// length it cannot cut.
func TestSplit(t *testing.T) {
	collect := func(p string, bits int) []string {
		var out []string
		for s := range Split(netip.MustParsePrefix(p), bits) {
			out = append(out, s.String())
		}
		return out
	}
	for _, c := range []struct {
		p    string
		bits int
		want []string
	}{
		{"10.0.254.0/23", 24, []string{"10.0.254.0/24", "10.0.255.0/24"}},
		{"10.0.0.0/22", 23, []string{"10.0.0.0/23", "10.0.2.0/23"}},
		{"255.255.255.252/30", 31, []string{"255.255.255.252/31", "255.255.255.254/31"}},
		{"fd00:0:0:fffe::/63", 64, []string{"fd00:0:0:fffe::/64", "fd00:0:0:ffff::/64"}},
		{"10.0.0.0/24", 16, nil},
		{"10.0.0.0/24", 33, nil},
	} {
		if got := collect(c.p, c.bits); !slices.Equal(got, c.want) {
			t.Errorf("Split(%s, %d) = %v, want %v", c.p, c.bits, got, c.want)
		}
	}
	n := 0
	for range Split(netip.MustParsePrefix("10.0.0.0/8"), 24) {
		n++
	}
	if n != 1<<16 {
		t.Errorf("10.0.0.0/8 in /24s: %d, want 65536", n)
	}
}

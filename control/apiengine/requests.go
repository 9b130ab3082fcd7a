package apiengine

import (
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The requests' strings, decoded once here into the engine's types, with
// errors naming the bad value.

// networkSpec checks a create request's strings, and gives each family its
// subnet, and each ip range and gateway the subnet of its family.
func networkSpec(req api.NetworkCreate) (engine.NetworkSpec, error) {
	spec := engine.NetworkSpec{Name: req.Name, Driver: req.Driver, EnableIPv6: req.EnableIPv6, Internal: req.Internal, Attachable: req.Attachable, Options: req.Options,
		Labels: req.Labels, ID: req.ID, Frontend: req.Frontend}
	spec.IPv4.ID, spec.IPv6.ID = req.PoolID, req.PoolID6
	familyOf := func(a netip.Addr) *engine.PoolSpec {
		if a.Is6() {
			return &spec.IPv6
		}
		return &spec.IPv4
	}
	for _, s := range req.Subnets {
		p, err := parsePrefix("subnet", s)
		if err != nil {
			return spec, err
		}
		f := familyOf(p.Addr())
		if f.Subnet.IsValid() {
			return spec, errdefs.Invalidf("subnet %s: the network has subnet %s already (one subnet per family)", p, f.Subnet)
		}
		f.Subnet = p
	}
	for _, s := range req.IPRanges {
		p, err := parsePrefix("ip-range", s)
		if err != nil {
			return spec, err
		}
		f := familyOf(p.Addr())
		if f.IPRange.IsValid() {
			return spec, errdefs.Invalidf("ip-range %s: the subnet has ip-range %s already", p, f.IPRange)
		}
		f.IPRange = p
	}
	for _, s := range req.Gateways {
		a, err := parseAddr("gateway", s)
		if err != nil {
			return spec, err
		}
		f := familyOf(a)
		if f.Gateway.IsValid() {
			return spec, errdefs.Invalidf("gateway %s: the subnet has gateway %s already", a, f.Gateway)
		}
		f.Gateway = a
	}
	var err error
	spec.DNS, err = dnsServers(req.DNS)
	return spec, err
}

func dnsServers(list []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, errdefs.Invalidf("invalid DNS server %q: want an IPv4 address", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// links parses legacy links, NAME[:ALIAS].
func links(list []string) []store.Link {
	var out []store.Link
	for _, s := range list {
		name, alias, _ := strings.Cut(s, ":")
		out = append(out, store.Link{Sandbox: name, Alias: alias})
	}
	return out
}

// parseIP reads an IPv4 address; "" is none.
func parseIP(s string) (netip.Addr, error) {
	a, err := parseAddr("IP address", s)
	if a.IsValid() && !a.Is4() {
		return netip.Addr{}, errdefs.Invalidf("invalid IP address %q: want an IPv4 address", s)
	}
	return a, err
}

// parseIP6 reads an IPv6 address; "" is none.
func parseIP6(s string) (netip.Addr, error) {
	a, err := parseAddr("IPv6 address", s)
	if a.IsValid() && (!a.Is6() || a.Is4In6()) {
		return netip.Addr{}, errdefs.Invalidf("invalid IPv6 address %q: want an IPv6 address such as fd12:3456:789a::10", s)
	}
	return a, err
}

// parseAddr reads an address of either family; "" is none.
func parseAddr(what, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errdefs.Invalidf("invalid %s %q: want an IPv4 or IPv6 address", what, s)
	}
	return a, nil
}

// parseAddress reads an address of either family, bare or with a prefix
// length as runtimes hand them over; "" is none.
func parseAddress(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, errdefs.Invalidf("invalid address %q: want an IPv4 or IPv6 address", s)
		}
		s = p.Addr().String()
	}
	return parseAddr("address", s)
}

// parseFamilyAddress is parseAddress for one family (v6 or not).
func parseFamilyAddress(s string, v6 bool) (netip.Addr, error) {
	a, err := parseAddress(s)
	if err == nil && a.IsValid() && (a.Is6() != v6 || a.Is4In6()) {
		err = errdefs.Invalidf("invalid address %q: want an %s address", s, familyName(v6))
	}
	return a, err
}

// parsePrefix reads a CIDR of either family; "" is none.
func parsePrefix(what, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errdefs.Invalidf("invalid %s %q: want a CIDR such as 172.19.0.0/16 or fd12:3456:789a::/64", what, s)
	}
	return p, nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

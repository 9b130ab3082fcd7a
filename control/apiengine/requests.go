package apiengine

import (
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The requests' addresses arrive decoded (api.ParseAddr and the JSON
// decoder); what is checked here is what their types do not say: the
// family each field wants, and no zones.

// networkSpec gives each family its subnet, and each ip range and gateway
// the subnet of its family.
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
	for _, p := range req.Subnets {
		f := familyOf(p.Addr())
		if f.Subnet.IsValid() {
			return spec, errdefs.Invalidf("subnet %s: the network has subnet %s already (one subnet per family)", p, f.Subnet)
		}
		f.Subnet = p
	}
	for _, p := range req.IPRanges {
		f := familyOf(p.Addr())
		if f.IPRange.IsValid() {
			return spec, errdefs.Invalidf("ip-range %s: the subnet has ip-range %s already", p, f.IPRange)
		}
		f.IPRange = p
	}
	for _, a := range req.Gateways {
		if a.Zone() != "" {
			return spec, errdefs.Invalidf("invalid gateway %q: want an IPv4 or IPv6 address", a)
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

func dnsServers(list []netip.Addr) ([]netip.Addr, error) {
	for _, a := range list {
		if !a.Is4() {
			return nil, errdefs.Invalidf("invalid DNS server %q: want an IPv4 address", a)
		}
	}
	return list, nil
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

// checkIP refuses an --ip that is not IPv4; none is fine.
func checkIP(a netip.Addr) error {
	if a.IsValid() && !a.Is4() {
		return errdefs.Invalidf("invalid IP address %q: want an IPv4 address", a)
	}
	return nil
}

// checkIP6 refuses an --ip6 that is not IPv6; none is fine.
func checkIP6(a netip.Addr) error {
	if a.IsValid() && (!a.Is6() || a.Is4In6() || a.Zone() != "") {
		return errdefs.Invalidf("invalid IPv6 address %q: want an IPv6 address such as fd12:3456:789a::10", a)
	}
	return nil
}

// checkFamily refuses a runtime's address of the other family (v6 or
// not) than its field's; none is fine.
func checkFamily(a netip.Addr, v6 bool) error {
	if a.IsValid() && (a.Is6() != v6 || a.Is4In6() || a.Zone() != "") {
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		return errdefs.Invalidf("invalid address %q: want an %s address", a, family)
	}
	return nil
}

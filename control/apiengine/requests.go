package apiengine

import (
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The requests' addresses arrive decoded (api.ParseAddr and the JSON
// decoder); what is checked here is what their types do not say: the
// family each field wants (api.CheckFamily), and no zones.

// networkSpec gives each family its subnet, and each ip range and gateway
// the subnet of its family.
func networkSpec(req api.NetworkCreate) (engine.NetworkSpec, error) {
	spec := engine.NetworkSpec{Name: req.Name, Driver: req.Driver, EnableIPv6: req.EnableIPv6, Internal: req.Internal, Attachable: req.Attachable, Options: req.Options,
		Labels: req.Labels, ID: req.ID, Frontend: req.Frontend}
	spec.IPv4.ID, spec.IPv6.ID = req.PoolID, req.PoolID6
	familyOf := func(a netip.Addr) *pools.Spec {
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
		if err := api.CheckFamily("DNS server", a, false); err != nil {
			return nil, err
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

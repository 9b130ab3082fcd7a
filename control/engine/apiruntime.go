package engine

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The runtime frontends' side of the API (api.RuntimeEngine): their
// requests in the API's wire types, turned into the IPAM's and the
// external endpoints' calls.

func (a apiEngine) RequestPool(subnet, ipRange string, v6 bool) (api.Pool, error) {
	s, err := parsePrefix("subnet", subnet)
	if err != nil {
		return api.Pool{}, err
	}
	r, err := parsePrefix("ip-range", ipRange)
	if err != nil {
		return api.Pool{}, err
	}
	p, err := a.Engine.RequestPool(s, r, v6)
	if err != nil {
		return api.Pool{}, err
	}
	return api.Pool{ID: p.ID, Subnet: p.Subnet.String()}, nil
}

func (a apiEngine) PublishEndpoint(frontend, id string, mappings []ports.Mapping) (map[string][]api.PortBinding, error) {
	added, err := a.Engine.PublishEndpoint(frontend, id, mappings)
	return portBindings(added), err
}

func (a apiEngine) UnpublishEndpoint(frontend, id string) error {
	_, err := a.Engine.UnpublishEndpoint(frontend, id)
	return err
}

func (a apiEngine) RequestedPool(subnet string) (api.Pool, error) {
	s, err := parsePrefix("subnet", subnet)
	if err != nil {
		return api.Pool{}, err
	}
	p, err := a.Engine.RequestedPool(s)
	if err != nil {
		return api.Pool{}, err
	}
	return api.Pool{ID: p.ID, Subnet: p.Subnet.String()}, nil
}

func (a apiEngine) RequestAddress(poolID, addr string, gateway bool) (string, error) {
	ip, err := parseAddress(addr)
	if err != nil {
		return "", err
	}
	got, err := a.Engine.RequestAddress(poolID, ip, gateway)
	if err != nil {
		return "", err
	}
	return got.String(), nil
}

func (a apiEngine) ReleaseAddress(poolID, addr string) error {
	ip, err := parseAddress(addr)
	if err != nil {
		return err
	}
	return a.Engine.ReleaseAddress(poolID, ip)
}

func (a apiEngine) CreateEndpoint(req api.EndpointCreate) (api.Endpoint, error) {
	ip, err := parseFamilyAddress(req.Address, false)
	if err != nil {
		return api.Endpoint{}, err
	}
	ip6, err := parseFamilyAddress(req.AddressIPv6, true)
	if err != nil {
		return api.Endpoint{}, err
	}
	// An endpoint made step by step is joined by a runtime that moves and
	// configures its interface itself.
	ep, err := a.Engine.CreateEndpoint(ExternalEndpoint{Frontend: req.Frontend, ID: req.ID, Network: req.Network, Addr: ip, Addr6: ip6,
		MAC: req.MAC, HandOver: true})
	if err != nil {
		return api.Endpoint{}, err
	}
	return a.endpointView(ep, nil)
}

func (a apiEngine) JoinEndpoint(id, netns string) (api.Endpoint, error) {
	j, err := a.Engine.JoinEndpoint(id, netns)
	if err != nil {
		return api.Endpoint{}, err
	}
	return a.endpointView(j.Endpoint, &j)
}

// endpointView is an external endpoint as its runtime sees it, the
// addresses with their network's prefix lengths; once joined, with the
// interface to move in and the gateways.
func (a apiEngine) endpointView(ep store.Endpoint, joined *Joined) (api.Endpoint, error) {
	var n store.Network
	err := a.store.View(func(tx *store.Tx) (err error) { n, err = networkByID(tx, ep.NetworkID); return err })
	if err != nil {
		return api.Endpoint{}, err
	}
	v := api.Endpoint{ID: ep.ID, Address: netip.PrefixFrom(ep.Addr, n.Pool.Subnet.Bits()).String(), MacAddress: ep.MAC}
	if ep.Addr6.IsValid() {
		v.AddressIPv6 = netip.PrefixFrom(ep.Addr6, n.Pool6.Subnet.Bits()).String()
	}
	if joined == nil {
		return v, nil
	}
	v.Interface = ep.Interface
	if joined.Gateway.IsValid() {
		v.Gateway = joined.Gateway.String()
	}
	if joined.Gateway6.IsValid() {
		v.GatewayIPv6 = joined.Gateway6.String()
	}
	return v, nil
}

// defaultRouteVia reports whether the namespace at netns routes gw's
// family by default through gw.
func defaultRouteVia(netns string, gw netip.Addr) (found bool, err error) {
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	err = namespace.Do(netns, func() error {
		routes, err := netlink.RouteList(nil, family)
		found = slices.ContainsFunc(routes, func(r netlink.Route) bool { return isDefault(r) && r.Gw.Equal(gw.AsSlice()) })
		return err
	})
	return found, err
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

func (a apiEngine) Attach(req api.AttachmentCreate) (api.Attachment, error) {
	if req.Frontend == "" {
		return api.Attachment{}, errdefs.Invalidf("an attachment needs the name of its frontend")
	}
	if req.ContainerID == "" || req.NetNS == "" {
		return api.Attachment{}, errdefs.Invalidf("an attachment needs a container ID and a namespace path (got %q and %q)", req.ContainerID, req.NetNS)
	}
	spec := ExternalEndpoint{Frontend: req.Frontend, ID: AttachmentID(req.ContainerID, req.IfName),
		Name: req.ContainerID + ":" + req.IfName, Network: req.Network, MAC: req.MAC, Aliases: req.Aliases, Group: req.Group, Interface: req.IfName}
	var err error
	if spec.Addr, err = parseFamilyAddress(req.IP, false); err != nil {
		return api.Attachment{}, err
	}
	if spec.Addr6, err = parseFamilyAddress(req.IP6, true); err != nil {
		return api.Attachment{}, err
	}
	if c := req.Chained; c != nil {
		p, err := parsePrefix("address", c.Address)
		if err != nil {
			return api.Attachment{}, err
		}
		gw, err := parseIP(c.Gateway)
		if err != nil {
			return api.Attachment{}, err
		}
		// The plugin before ebpfnet made and configured the interface.
		spec.Chained = &ChainedNetwork{Bridge: c.Bridge, Subnet: p.Masked(), Gateway: gw}
		spec.Addr, spec.MAC, spec.HostSide, spec.HandOver = p.Addr(), c.MacAddress, c.HostInterface, true
	}
	sb, n, pubs, err := a.Engine.Attach(spec, req.NetNS, req.Publish)
	if err != nil {
		return api.Attachment{}, err
	}
	ep := sb.Endpoints[0]
	v := api.Attachment{Sandbox: sb.Name, Interface: ep.Interface, HostInterface: ep.HostSide, MacAddress: ep.MAC, Mtu: n.MTU,
		Address: netip.PrefixFrom(ep.Addr, n.Pool.Subnet.Bits()).String(), Ports: portBindings(pubs)}
	if gw := n.DefaultGateway(false); gw.IsValid() {
		v.Gateway = gw.String()
		// A second network of a namespace finds the first one's route.
		v.DefaultRoute, err = defaultRouteVia(req.NetNS, gw)
	}
	if ep.Addr6.IsValid() {
		v.AddressIPv6 = netip.PrefixFrom(ep.Addr6, n.Pool6.Subnet.Bits()).String()
	}
	if gw := n.DefaultGateway(true); gw.IsValid() && ep.Addr6.IsValid() && err == nil {
		v.GatewayIPv6 = gw.String()
		v.DefaultRoute6, err = defaultRouteVia(req.NetNS, gw)
	}
	return v, err
}

func (a apiEngine) CheckAttachment(ref api.AttachmentRef, netns string) error {
	return a.Engine.CheckAttachment(AttachmentID(ref.ContainerID, ref.IfName), netns)
}

func (a apiEngine) Detach(ref api.AttachmentRef) error {
	return a.Engine.DeleteEndpoint(AttachmentID(ref.ContainerID, ref.IfName))
}

func (a apiEngine) CollectAttachments(req api.AttachmentsCollect) ([]string, error) {
	keep := map[string]bool{}
	for _, ref := range req.Keep {
		keep[AttachmentID(ref.ContainerID, ref.IfName)] = true
	}
	return a.Engine.CollectEndpoints(req.Frontend, req.Network, req.Group, keep)
}

package apiengine

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/external"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The runtime frontends' side of the API (api.RuntimeEngine): their
// requests turned into the IPAM's and the external endpoints' calls.

func (a adapter) RequestPool(_ context.Context, subnet, ipRange netip.Prefix, v6 bool) (api.Pool, error) {
	p, err := a.e.Pools().Request(subnet, ipRange, v6)
	if err != nil {
		return api.Pool{}, err
	}
	return api.Pool{ID: p.ID, Subnet: p.Subnet.String()}, nil
}

func (a adapter) RequestedPool(_ context.Context, subnet netip.Prefix) (api.Pool, error) {
	p, err := a.e.Pools().Requested(subnet)
	if err != nil {
		return api.Pool{}, err
	}
	return api.Pool{ID: p.ID, Subnet: p.Subnet.String()}, nil
}

func (a adapter) ReleasePool(_ context.Context, id string) error { return a.e.Pools().Release(id) }

func (a adapter) RequestAddress(_ context.Context, poolID string, addr netip.Addr, gateway bool) (netip.Prefix, error) {
	return a.e.Pools().RequestAddress(poolID, addr, gateway)
}

func (a adapter) ReleaseAddress(_ context.Context, poolID string, addr netip.Addr) error {
	return a.e.Pools().ReleaseAddress(poolID, addr)
}

func (a adapter) PublishEndpoint(_ context.Context, frontend, id string, mappings []ports.Mapping) (map[string][]api.PortBinding, error) {
	added, err := a.e.PublishEndpoint(frontend, id, mappings, ports.Sources{}) // its network's lists
	return portBindings(added), err
}

func (a adapter) UnpublishEndpoint(_ context.Context, frontend, id string) error {
	_, err := a.e.UnpublishEndpoint(frontend, id)
	return err
}

func (a adapter) CreateEndpoint(_ context.Context, req api.EndpointCreate) (api.Endpoint, error) {
	if err := cmp.Or(api.CheckFamily("address", req.Address, false), api.CheckFamily("address", req.AddressIPv6, true)); err != nil {
		return api.Endpoint{}, err
	}
	// An endpoint made step by step is joined by a runtime that moves and
	// configures its interface itself.
	ep, err := a.e.External().CreateEndpoint(external.Request{Frontend: req.Frontend, ID: req.ID, Network: req.Network, Addr: req.Address, Addr6: req.AddressIPv6,
		MAC: req.MAC, HandOver: true})
	if err != nil {
		return api.Endpoint{}, err
	}
	return a.endpointView(ep, nil)
}

func (a adapter) JoinEndpoint(_ context.Context, id, netns string) (api.Endpoint, error) {
	j, err := a.e.External().JoinEndpoint(id, netns)
	if err != nil {
		return api.Endpoint{}, err
	}
	return a.endpointView(j.Endpoint, &j)
}

func (a adapter) LeaveEndpoint(_ context.Context, id string) error {
	return a.e.External().LeaveEndpoint(id)
}

func (a adapter) DeleteEndpoint(_ context.Context, id string) error {
	return a.e.External().DeleteEndpoint(id)
}

// endpointView is an external endpoint as its runtime sees it, the
// addresses with their network's prefix lengths; once joined, with the
// interface to move in and the gateways.
func (a adapter) endpointView(ep store.Endpoint, joined *external.Joined) (api.Endpoint, error) {
	var n store.Network
	err := a.e.View(func(tx *store.Tx) (err error) { n, err = tx.NetworkOf(ep); return err })
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

// attachmentID is the endpoint ID of a runtime's attachment, which the
// runtime knows by its container ID and interface name (CNI's key).
func attachmentID(ref api.AttachmentRef) string {
	sum := sha256.Sum256([]byte(ref.ContainerID + "/" + ref.IfName))
	return hex.EncodeToString(sum[:])
}

func (a adapter) Attach(_ context.Context, req api.AttachmentCreate) (api.Attachment, error) {
	if req.Frontend == "" {
		return api.Attachment{}, errdefs.Invalidf("an attachment needs the name of its frontend")
	}
	if req.ContainerID == "" || req.NetNS == "" {
		return api.Attachment{}, errdefs.Invalidf("an attachment needs a container ID and a namespace path (got %q and %q)", req.ContainerID, req.NetNS)
	}
	if err := cmp.Or(api.CheckFamily("address", req.IP, false), api.CheckFamily("address", req.IP6, true)); err != nil {
		return api.Attachment{}, err
	}
	spec := external.Request{Frontend: req.Frontend, ID: attachmentID(api.AttachmentRef{ContainerID: req.ContainerID, IfName: req.IfName}),
		Name: req.ContainerID + ":" + req.IfName, Network: req.Network, Addr: req.IP, Addr6: req.IP6, MAC: req.MAC, Aliases: req.Aliases,
		Group: req.Group, Interface: req.IfName, Bandwidth: req.Bandwidth}
	var err error
	if spec.EgressAllow, err = egress.Parse(req.EgressAllow...); err != nil {
		return api.Attachment{}, err
	}
	if c := req.Chained; c != nil {
		if err := api.CheckFamily("IP address", c.Gateway, false); err != nil {
			return api.Attachment{}, err
		}
		// The plugin before ebpfnet made and configured the interface.
		spec.Chained = &external.ChainedNetwork{Bridge: c.Bridge, Subnet: c.Address.Masked(), Gateway: c.Gateway}
		spec.Addr, spec.MAC, spec.HostSide, spec.HandOver = c.Address.Addr(), c.MacAddress, c.HostInterface, true
	}
	sb, n, pubs, err := a.e.External().Attach(spec, req.NetNS, req.Publish, req.PublishSources, req.PublishBalance)
	if err != nil {
		return api.Attachment{}, err
	}
	ep := sb.Endpoints[0]
	v := api.Attachment{Sandbox: sb.Name, Interface: ep.Interface, HostInterface: ep.HostSide, MacAddress: ep.MAC, Mtu: n.MTU,
		Address: netip.PrefixFrom(ep.Addr, n.Pool.Subnet.Bits()).String(), Ports: portBindings(pubs)}
	if gw := n.DefaultGateway(false); gw.IsValid() {
		v.Gateway = gw.String()
	}
	if ep.Addr6.IsValid() {
		v.AddressIPv6 = netip.PrefixFrom(ep.Addr6, n.Pool6.Subnet.Bits()).String()
	}
	if gw := n.DefaultGateway(true); gw.IsValid() && ep.Addr6.IsValid() {
		v.GatewayIPv6 = gw.String()
	}
	return v, nil
}

func (a adapter) CheckAttachment(_ context.Context, ref api.AttachmentRef, netns string) error {
	return a.e.External().CheckAttachment(attachmentID(ref), netns)
}

func (a adapter) Detach(_ context.Context, ref api.AttachmentRef) error {
	return a.e.External().DeleteEndpoint(attachmentID(ref))
}

func (a adapter) CollectAttachments(_ context.Context, req api.AttachmentsCollect) ([]string, error) {
	keep := map[string]bool{}
	for _, ref := range req.Keep {
		keep[attachmentID(ref)] = true
	}
	return a.e.External().CollectEndpoints(req.Frontend, req.Network, req.Group, keep)
}

package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Frontend is the name the engine keeps Docker's networks and endpoints under.
const Frontend = "docker"

// DefaultSocket is where Docker looks for a plugin named ebpfnet.
const DefaultSocket = "/run/docker/plugins/ebpfnet.sock"

// AddressSpace is the one address space the IPAM driver offers.
const AddressSpace = "ebpfnet"

// Options and labels Docker hands a network or an endpoint.
const (
	optGeneric    = "com.docker.network.generic"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optInternal   = "com.docker.network.internal"
	optPortMap    = "com.docker.network.portmap"
	optAddrType   = "RequestAddressType"
	addrGateway   = "com.docker.network.gateway"
)

// Serve answers Docker's plugin calls on the unix socket at path until ctx
// ends. Docker names a plugin after its socket: ebpfnet.sock is driver and
// IPAM driver "ebpfnet".
func Serve(ctx context.Context, path string, engine api.RuntimeEngine, log *slog.Logger) error {
	l, err := api.ListenUnix(path, 0o600, -1)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); l.Close() }()
	err = Handler(engine, log).Serve(l)
	os.Remove(path)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Handler routes Docker's NetworkDriver and IpamDriver calls to engine.
// go-plugins-helpers' network and ipam handlers each announce only their
// own protocol at Plugin.Activate, and Docker finds both drivers of one
// name on one socket; so their request and response types are used on one
// sdk handler that announces both.
func Handler(engine api.RuntimeEngine, log *slog.Logger) sdk.Handler {
	h := sdk.NewHandler(`{"Implements": ["NetworkDriver", "IpamDriver"]}`)
	p := &plugin{engine: engine, log: log}
	answer(h, log, "/NetworkDriver.GetCapabilities", func(context.Context, *struct{}) (*network.CapabilitiesResponse, error) {
		return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.LocalScope}, nil
	})
	answer(h, log, "/NetworkDriver.CreateNetwork", done(p.createNetwork))
	answer(h, log, "/NetworkDriver.DeleteNetwork", done(p.deleteNetwork))
	answer(h, log, "/NetworkDriver.CreateEndpoint", p.createEndpoint)
	answer(h, log, "/NetworkDriver.EndpointOperInfo", func(context.Context, *network.InfoRequest) (*network.InfoResponse, error) {
		return &network.InfoResponse{Value: map[string]string{}}, nil
	})
	answer(h, log, "/NetworkDriver.DeleteEndpoint", done(func(ctx context.Context, r *network.DeleteEndpointRequest) error {
		return engine.DeleteEndpoint(ctx, r.EndpointID)
	}))
	answer(h, log, "/NetworkDriver.Join", p.join)
	answer(h, log, "/NetworkDriver.Leave", done(func(ctx context.Context, r *network.LeaveRequest) error {
		return engine.LeaveEndpoint(ctx, r.EndpointID)
	}))
	answer(h, log, "/NetworkDriver.ProgramExternalConnectivity", done(p.programExternalConnectivity))
	answer(h, log, "/NetworkDriver.RevokeExternalConnectivity", done(func(ctx context.Context, r *network.RevokeExternalConnectivityRequest) error {
		return p.revoke(ctx, r.EndpointID)
	}))
	for _, path := range []string{"/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete"} {
		answer(h, log, path, done(func(context.Context, *network.DiscoveryNotification) error { return nil }))
	}

	answer(h, log, "/IpamDriver.GetCapabilities", func(context.Context, *struct{}) (*ipam.CapabilitiesResponse, error) {
		return &ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
	})
	answer(h, log, "/IpamDriver.GetDefaultAddressSpaces", func(context.Context, *struct{}) (*ipam.AddressSpacesResponse, error) {
		return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: AddressSpace, GlobalDefaultAddressSpace: AddressSpace}, nil
	})
	answer(h, log, "/IpamDriver.RequestPool", p.requestPool)
	answer(h, log, "/IpamDriver.ReleasePool", done(func(ctx context.Context, r *ipam.ReleasePoolRequest) error {
		return ignoreNotFound(engine.ReleasePool(ctx, r.PoolID))
	}))
	answer(h, log, "/IpamDriver.RequestAddress", func(ctx context.Context, r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
		want, err := api.ParseAddress("address", r.Address)
		if err != nil {
			return nil, err
		}
		addr, err := engine.RequestAddress(ctx, r.PoolID, want, r.Options[optAddrType] == addrGateway)
		if err != nil {
			return nil, err
		}
		return &ipam.RequestAddressResponse{Address: addr.String(), Data: map[string]string{}}, nil
	})
	answer(h, log, "/IpamDriver.ReleaseAddress", done(func(ctx context.Context, r *ipam.ReleaseAddressRequest) error {
		addr, err := api.ParseAddress("address", r.Address)
		if err != nil {
			return err
		}
		return ignoreNotFound(engine.ReleaseAddress(ctx, r.PoolID, addr))
	}))
	return h
}

// answer routes one call: its request decoded into Req, fn's response or
// its error as Docker reads errors, {"Err": "…"}.
func answer[Req, Resp any](h sdk.Handler, log *slog.Logger, path string, fn func(context.Context, *Req) (*Resp, error)) {
	h.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		var req Req
		// Calls without arguments may come with no body at all.
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			sdk.EncodeResponse(w, network.NewErrorResponse(fmt.Sprintf("decode %s: %v", path, err)), true)
			return
		}
		res, err := fn(r.Context(), &req)
		if err != nil {
			log.Info("docker plugin call refused", "call", path, "err", err)
			sdk.EncodeResponse(w, network.NewErrorResponse(err.Error()), true)
			return
		}
		sdk.EncodeResponse(w, res, false)
	})
}

// done adapts a call that answers nothing but success: {}.
func done[Req any](fn func(context.Context, *Req) error) func(context.Context, *Req) (*struct{}, error) {
	return func(ctx context.Context, r *Req) (*struct{}, error) { return &struct{}{}, fn(ctx, r) }
}

func ignoreNotFound(err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

type plugin struct {
	engine api.RuntimeEngine
	log    *slog.Logger
}

// createNetwork keeps a network Docker created: its ID, its pool (the one
// the IPAM driver gave it, or Docker's own IPAM's subnet) and its options,
// which mean what they mean for Docker's bridge.
func (p *plugin) createNetwork(ctx context.Context, r *network.CreateNetworkRequest) error {
	if _, err := p.engine.Network(ctx, r.NetworkID); err == nil {
		return nil // asked again
	}
	if len(r.IPv4Data) != 1 || len(r.IPv6Data) > 1 {
		return errdefs.Invalidf("an ebpfnet network has exactly one IPv4 subnet and at most one IPv6 subnet, not %d and %d", len(r.IPv4Data), len(r.IPv6Data))
	}
	ipv6 := len(r.IPv6Data) == 1
	if truthy(r.Options[optEnableIPv6]) && !ipv6 {
		return errdefs.Invalidf("network %s has IPv6 enabled but no IPv6 subnet from its IPAM", r.NetworkID)
	}
	req := api.NetworkCreate{ID: r.NetworkID, Name: Frontend + "-" + r.NetworkID[:min(12, len(r.NetworkID))], Frontend: Frontend,
		EnableIPv6: &ipv6, Internal: truthy(r.Options[optInternal]), Options: map[string]string{}}
	if generic, ok := r.Options[optGeneric].(map[string]any); ok {
		for k, v := range generic {
			req.Options[k] = fmt.Sprint(v)
		}
	}
	// A pool of ebpfnet's IPAM only when Docker took it from there: with
	// Docker's own IPAM the network gets a pool of its own, refused if it
	// overlaps one ebpfnet handed out.
	for i, data := range slices.Concat(r.IPv4Data, r.IPv6Data) {
		poolID := &req.PoolID
		if i == 1 {
			poolID = &req.PoolID6
		}
		subnet, err := api.ParsePrefix("subnet", data.Pool)
		if err != nil {
			return err
		}
		if pool, err := p.engine.RequestedPool(ctx, subnet); err == nil && data.AddressSpace == AddressSpace {
			*poolID = pool.ID
			continue
		}
		req.Subnets = append(req.Subnets, subnet)
		if data.Gateway != "" {
			gw, err := api.ParseAddress("gateway", data.Gateway)
			if err != nil {
				return err
			}
			req.Gateways = append(req.Gateways, gw)
		}
	}
	_, err := p.engine.CreateFrontendNetwork(ctx, req)
	return err
}

func (p *plugin) deleteNetwork(ctx context.Context, r *network.DeleteNetworkRequest) error {
	return ignoreNotFound(p.engine.RemoveFrontendNetwork(ctx, Frontend, r.NetworkID))
}

// createEndpoint keeps an endpoint with the address Docker's IPAM gave it,
// and answers the MAC the datapath expects when Docker chose none.
func (p *plugin) createEndpoint(ctx context.Context, r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	req := api.EndpointCreate{Frontend: Frontend, ID: r.EndpointID, Network: r.NetworkID}
	if r.Interface != nil {
		var err error
		if req.Address, err = api.ParseAddress("address", r.Interface.Address); err != nil {
			return nil, err
		}
		if req.AddressIPv6, err = api.ParseAddress("address", r.Interface.AddressIPv6); err != nil {
			return nil, err
		}
		req.MAC = r.Interface.MacAddress
	}
	ep, err := p.engine.CreateEndpoint(ctx, req)
	if err != nil {
		return nil, err
	}
	// Docker refuses an answer that changes what it gave.
	res := &network.CreateEndpointResponse{Interface: &network.EndpointInterface{}}
	if r.Interface == nil || r.Interface.Address == "" {
		res.Interface.Address = ep.Address
	}
	if r.Interface == nil || r.Interface.AddressIPv6 == "" {
		res.Interface.AddressIPv6 = ep.AddressIPv6
	}
	if r.Interface == nil || r.Interface.MacAddress == "" {
		res.Interface.MacAddress = ep.MacAddress
	}
	return res, nil
}

// join hands Docker the sandbox end of the endpoint's veth, which Docker
// moves into the container and names eth0, eth1…, and the gateway: without
// one Docker would attach the container to docker_gwbridge too, and publish
// its ports there with iptables and docker-proxy.
func (p *plugin) join(ctx context.Context, r *network.JoinRequest) (*network.JoinResponse, error) {
	ep, err := p.engine.JoinEndpoint(ctx, r.EndpointID, r.SandboxKey)
	if err != nil {
		return nil, err
	}
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: ep.Interface, DstPrefix: "eth"},
		Gateway: ep.Gateway, GatewayIPv6: ep.GatewayIPv6}, nil
}

// programExternalConnectivity publishes the container's ports (docker run
// -p) on the endpoint Docker chose as its gateway. Asked again, it
// publishes them anew.
func (p *plugin) programExternalConnectivity(ctx context.Context, r *network.ProgramExternalConnectivityRequest) error {
	mappings, err := portMappings(r.Options[optPortMap])
	if err != nil || len(mappings) == 0 {
		return err
	}
	if err := p.revoke(ctx, r.EndpointID); err != nil {
		return err
	}
	_, err = p.engine.PublishEndpoint(ctx, Frontend, r.EndpointID, mappings)
	return err
}

// revoke unpublishes every port of an endpoint; none is fine.
func (p *plugin) revoke(ctx context.Context, endpointID string) error {
	return p.engine.UnpublishEndpoint(ctx, Frontend, endpointID)
}

// portBinding is one entry of Docker's com.docker.network.portmap.
type portBinding struct {
	Proto       int    // IPPROTO number: 6 tcp, 17 udp, 132 sctp
	IP          string // the container's address
	Port        uint16 // in the container
	HostIP      string
	HostPort    uint16 // 0: the driver picks
	HostPortEnd uint16
}

// portMappings reads Docker's port map into structured mappings.
func portMappings(raw any) ([]ports.Mapping, error) {
	if raw == nil {
		return nil, nil
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var bindings []portBinding
	if err := json.Unmarshal(data, &bindings); err != nil {
		return nil, errdefs.Invalidf("invalid %s %s: %v", optPortMap, data, err)
	}
	var out []ports.Mapping
	for _, b := range bindings {
		proto, err := ports.ProtocolNumbered(b.Proto)
		if err != nil {
			return nil, fmt.Errorf("port %d: %w (ebpfnet publishes tcp and udp)", b.Port, err)
		}
		m := ports.Mapping{Proto: proto, Port: b.Port, HostPort: b.HostPort, HostPortEnd: b.HostPortEnd}
		if m.HostPort == 0 {
			m.HostPortEnd = 0 // ebpfnet picks
		}
		if out, err = ports.Add(out, m, b.HostIP); err != nil {
			return nil, fmt.Errorf("port %d: %w", b.Port, err)
		}
	}
	return out, nil
}

func (p *plugin) requestPool(ctx context.Context, r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	subnet, err := api.ParsePrefix("subnet", r.Pool)
	if err != nil {
		return nil, err
	}
	ipRange, err := api.ParsePrefix("ip-range", r.SubPool)
	if err != nil {
		return nil, err
	}
	pool, err := p.engine.RequestPool(ctx, subnet, ipRange, r.V6)
	if err != nil {
		return nil, err
	}
	return &ipam.RequestPoolResponse{PoolID: pool.ID, Pool: pool.Subnet, Data: map[string]string{}}, nil
}

// truthy reads a boolean option as Docker sends it: a bool, or a string.
func truthy(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

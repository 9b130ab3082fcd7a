package api

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// networkSpec checks a create request's strings.
func networkSpec(req NetworkCreate) (control.NetworkSpec, error) {
	spec := control.NetworkSpec{Name: req.Name, Driver: req.Driver, Internal: req.Internal, Options: req.Options, Labels: req.Labels}
	var err error
	if req.Subnet != "" {
		if spec.Subnet, err = netip.ParsePrefix(req.Subnet); err != nil {
			return spec, errdefs.Invalidf("invalid subnet %q: want an IPv4 CIDR such as 172.19.0.0/16", req.Subnet)
		}
	}
	if req.IPRange != "" {
		if spec.IPRange, err = netip.ParsePrefix(req.IPRange); err != nil {
			return spec, errdefs.Invalidf("invalid ip-range %q: want an IPv4 CIDR such as 172.19.5.0/24", req.IPRange)
		}
	}
	if req.Gateway != "" {
		if spec.Gateway, err = netip.ParseAddr(req.Gateway); err != nil {
			return spec, errdefs.Invalidf("invalid gateway %q: want an IPv4 address", req.Gateway)
		}
	}
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

func parseIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errdefs.Invalidf("invalid IP address %q: want an IPv4 address", s)
	}
	return a, nil
}

func networkView(n store.Network, sbs []store.Sandbox) Network {
	v := Network{Name: n.Name, ID: n.ID, Created: n.Created, Scope: "local", Driver: n.Driver, Internal: n.Internal,
		IPAM: IPAM{Driver: "default", Config: []IPAMConfig{}}, Containers: map[string]NetworkContainer{},
		Options: maps.Clone(n.Options), Labels: maps.Clone(n.Labels)}
	if v.Options == nil {
		v.Options = map[string]string{}
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if n.HasAddresses() {
		c := IPAMConfig{Subnet: n.Pool.Subnet.String(), Gateway: gateway(n)}
		if n.Pool.Range.IsValid() {
			c.IPRange = n.Pool.Range.String()
		}
		v.IPAM.Config = append(v.IPAM.Config, c)
	}
	if n.Driver == store.DriverBridge {
		v.Options[control.OptBridgeName] = n.Bridge
		v.Options[control.OptEnableICC] = fmt.Sprint(n.ICC)
		// Docker lists the mode only when it was chosen, nat included.
		if n.GatewayMode != "" {
			v.Options[control.OptGatewayMode] = n.GatewayMode
		}
	}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			if ep.NetworkID == n.ID {
				v.Containers[sb.ID] = NetworkContainer{Name: sb.Name, EndpointID: ep.ID, MacAddress: ep.MAC,
					IPv4Address: netip.PrefixFrom(ep.Addr, n.Pool.Subnet.Bits()).String()}
			}
		}
		if len(sb.Endpoints) == 0 && sb.Mode == store.ModeNetworks && n.Name == control.NetworkNone ||
			sb.Mode == store.ModeHost && n.Name == control.NetworkHost {
			v.Containers[sb.ID] = NetworkContainer{Name: sb.Name}
		}
	}
	return v
}

// gateway is the network's gateway as Docker shows it: none in gateway
// mode isolated, where the host holds no address on the network.
func gateway(n store.Network) string {
	if !n.HostOnNetwork() {
		return ""
	}
	return n.Pool.Gateway.String()
}

// portBindings shows publications the way docker inspect does.
func portBindings(pubs []store.Publication) map[string][]PortBinding {
	out := map[string][]PortBinding{}
	for _, p := range pubs {
		key := fmt.Sprintf("%d/%s", p.Port, p.Proto)
		out[key] = append(out[key], PortBinding{HostIP: p.HostAddress(), HostPort: fmt.Sprint(p.HostPort)})
	}
	return out
}

func sandboxView(sb store.Sandbox, pubs []store.Publication, nets map[string]store.Network, netnsPath, etcDir string) Sandbox {
	v := Sandbox{ID: sb.ID, Name: sb.Name, Created: sb.Created,
		NetworkSettings: NetworkSettings{SandboxKey: netnsPath, EtcDir: etcDir, Networks: map[string]EndpointSettings{},
			Ports: portBindings(pubs)}}
	v.HostConfig.NetworkMode = store.NetworkMode(sb, func(id string) string { return nets[id].Name })
	for _, ep := range sb.Endpoints {
		n := nets[ep.NetworkID]
		aliases := ep.Aliases
		if aliases == nil {
			aliases = []string{}
		}
		v.NetworkSettings.Networks[n.Name] = EndpointSettings{NetworkID: n.ID, EndpointID: ep.ID, Gateway: gateway(n),
			IPAddress: ep.Addr.String(), IPPrefixLen: n.Pool.Subnet.Bits(), MacAddress: ep.MAC, Aliases: aliases,
			Interface: ep.Interface, HostInterface: ep.HostSide}
	}
	return v
}

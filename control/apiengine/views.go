package apiengine

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/control/wiring"
)

// The API's read models of store records, shaped as Docker's inspect
// shows them.

// scope is Docker's: global for a network every host of the cluster has.
func scope(n store.Network) string {
	if drivers.TraitsOf(n).Global {
		return "global"
	}
	return "local"
}

func networkView(n store.Network, sbs []store.Sandbox) api.Network {
	v := api.Network{Name: n.Name, ID: n.ID, Created: n.Created, Scope: scope(n), Driver: n.Driver, EnableIPv6: n.EnableIPv6, Internal: n.Internal, Attachable: n.Attachable,
		IPAM: api.IPAM{Driver: "default", Config: []api.IPAMConfig{}}, Containers: map[string]api.NetworkContainer{},
		Options: maps.Clone(n.Options), Labels: maps.Clone(n.Labels)}
	if v.Options == nil {
		v.Options = map[string]string{}
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if drivers.TraitsOf(n).OwnAddresses {
		v.IPAM.Config = append(v.IPAM.Config, ipamConfig(n.Pool, gateway(n, false)))
		if n.EnableIPv6 {
			v.IPAM.Config = append(v.IPAM.Config, ipamConfig(n.Pool6, gateway(n, true)))
		}
	}
	if d, ok := drivers.For(n.Driver); ok {
		d.Inspect(n, v.Options)
	}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			if ep.NetworkID == n.ID {
				c := api.NetworkContainer{Name: sb.Name, EndpointID: ep.ID, MacAddress: ep.MAC,
					IPv4Address: netip.PrefixFrom(ep.Addr, n.Pool.Subnet.Bits()).String()}
				if ep.Addr6.IsValid() {
					c.IPv6Address = netip.PrefixFrom(ep.Addr6, n.Pool6.Subnet.Bits()).String()
				}
				v.Containers[sb.ID] = c
			}
		}
		if len(sb.Endpoints) == 0 && sb.Mode == store.ModeNetworks && n.Name == api.NetworkNone ||
			sb.Mode == store.ModeHost && n.Name == api.NetworkHost {
			v.Containers[sb.ID] = api.NetworkContainer{Name: sb.Name}
		}
	}
	return v
}

// ipamConfig is one family's pool as Docker shows it.
func ipamConfig(p ipam.Pool, gateway string) api.IPAMConfig {
	c := api.IPAMConfig{Subnet: p.Subnet.String(), Gateway: gateway}
	if p.Range.IsValid() {
		c.IPRange = p.Range.String()
	}
	return c
}

// gateway is the network's gateway in one family as inspect shows it,
// "" for none (store.Network.Gateway).
func gateway(n store.Network, ipv6 bool) string {
	if gw := n.Gateway(ipv6); gw.IsValid() {
		return gw.String()
	}
	return ""
}

// portBindings shows publications the way docker inspect does.
func portBindings(pubs []store.Publication) map[string][]api.PortBinding {
	out := map[string][]api.PortBinding{}
	for _, p := range pubs {
		key := fmt.Sprintf("%d/%s", p.Port, p.Proto)
		out[key] = append(out[key], api.PortBinding{HostIP: p.HostAddress(), HostPort: fmt.Sprint(p.HostPort),
			Allow: p.Sources.Allow, Deny: p.Sources.Deny, Balanced: p.Balance})
	}
	return out
}

// sandboxView is a sandbox's read model, with where its namespace and its
// files (etcDir, "" for none) are.
func sandboxView(sb store.Sandbox, pubs []store.Publication, nets map[string]store.Network, etcDir string) api.Sandbox {
	v := api.Sandbox{ID: sb.ID, Name: sb.Name, Created: sb.Created,
		NetworkSettings: api.NetworkSettings{SandboxKey: sb.NetNS, EtcDir: etcDir, Networks: map[string]api.EndpointSettings{},
			Ports: portBindings(pubs)}}
	v.HostConfig.NetworkMode = store.NetworkMode(sb, func(id string) string { return nets[id].Name })
	v.HostConfig.Bandwidth = sb.Bandwidth
	for _, ep := range sb.Endpoints {
		n := nets[ep.NetworkID]
		aliases := ep.Aliases
		if aliases == nil {
			aliases = []string{}
		}
		s := api.EndpointSettings{NetworkID: n.ID, EndpointID: ep.ID, Gateway: gateway(n, false),
			IPAddress: ep.Addr.String(), IPPrefixLen: n.Pool.Subnet.Bits(), MacAddress: ep.MAC, Aliases: aliases,
			Interface: ep.Interface, HostInterface: ep.HostSide}
		if ep.Addr6.IsValid() {
			s.GlobalIPv6Address, s.GlobalIPv6PrefixLen, s.IPv6Gateway = ep.Addr6.String(), n.Pool6.Subnet.Bits(), gateway(n, true)
		}
		v.NetworkSettings.Networks[n.Name] = s
	}
	v.Egress = egressView(sb, nets)
	return v
}

// egressView is the egress lists of sb's endpoints, nil when none has one.
func egressView(sb store.Sandbox, nets map[string]store.Network) *api.Egress {
	var (
		all  egress.List
		from []string
	)
	for _, ep := range sb.Endpoints {
		n := nets[ep.NetworkID]
		l := sb.EgressOn(n)
		if len(l) == 0 {
			continue
		}
		all = all.Union(l)
		whose := "sandbox"
		if len(sb.EgressAllow) == 0 {
			whose = "network " + n.Name
		}
		if !slices.Contains(from, whose) {
			from = append(from, whose)
		}
	}
	if len(all) == 0 {
		return nil
	}
	return &api.Egress{Allow: all, From: from}
}

// egressAnswers is how inspect shows what a sandbox may reach by name,
// by name and address.
func egressAnswers(answers []wiring.EgressAnswer) []api.EgressAnswer {
	out := make([]api.EgressAnswer, 0, len(answers))
	for _, a := range answers {
		out = append(out, api.EgressAnswer{Name: a.Name, Address: a.Addr.String(), Source: a.Source.String(),
			TTL: int((a.Left + time.Second - 1) / time.Second)})
	}
	slices.SortFunc(out, func(a, b api.EgressAnswer) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Source, b.Source))
	})
	return out
}

// showBackends names, in each balanced binding of ports, the sandboxes
// all (every sandbox's publications, by name) has sharing its host port,
// as SANDBOX:PORT, in name order.
func showBackends(ports map[string][]api.PortBinding, all map[string][]store.Publication) {
	for key, bindings := range ports {
		for i, b := range bindings {
			if !b.Balanced {
				continue
			}
			var names []string
			for name, pubs := range all {
				for _, p := range pubs {
					if p.Balance && p.HostAddress() == b.HostIP && fmt.Sprint(p.HostPort) == b.HostPort &&
						strings.HasSuffix(key, "/"+string(p.Proto)) {
						names = append(names, fmt.Sprintf("%s:%d", name, p.Port))
					}
				}
			}
			slices.Sort(names)
			ports[key][i].Backends = names
		}
	}
}

package engine

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// networkSpec checks a create request's strings, and gives each family its
// subnet, and each ip range and gateway the subnet of its family.
func networkSpec(req api.NetworkCreate) (NetworkSpec, error) {
	spec := NetworkSpec{Name: req.Name, Driver: req.Driver, EnableIPv6: req.EnableIPv6, Internal: req.Internal, Attachable: req.Attachable, Options: req.Options,
		Labels: req.Labels, ID: req.ID, Frontend: req.Frontend}
	spec.IPv4.ID, spec.IPv6.ID = req.PoolID, req.PoolID6
	family := func(a netip.Addr) *PoolSpec {
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
		f := family(p.Addr())
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
		f := family(p.Addr())
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
		f := family(a)
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

// scope is Docker's: global for a network every host of the cluster has.
func scope(n store.Network) string {
	if traitsOf(n).Global {
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
	if n.HasAddresses() {
		v.IPAM.Config = append(v.IPAM.Config, ipamConfig(n.Pool, gateway(n, false)))
	}
	if n.HasAddresses() && n.EnableIPv6 {
		v.IPAM.Config = append(v.IPAM.Config, ipamConfig(n.Pool6, gateway(n, true)))
	}
	if d, ok := driverFor(n.Driver); ok {
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
		if len(sb.Endpoints) == 0 && sb.Mode == store.ModeNetworks && n.Name == NetworkNone ||
			sb.Mode == store.ModeHost && n.Name == NetworkHost {
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
		out[key] = append(out[key], api.PortBinding{HostIP: p.HostAddress(), HostPort: fmt.Sprint(p.HostPort)})
	}
	return out
}

func sandboxView(sb store.Sandbox, pubs []store.Publication, nets map[string]store.Network, netnsPath, etcDir string) api.Sandbox {
	v := api.Sandbox{ID: sb.ID, Name: sb.Name, Created: sb.Created,
		NetworkSettings: api.NetworkSettings{SandboxKey: netnsPath, EtcDir: etcDir, Networks: map[string]api.EndpointSettings{},
			Ports: portBindings(pubs)}}
	v.HostConfig.NetworkMode = store.NetworkMode(sb, func(id string) string { return nets[id].Name })
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
	return v
}

// API is the engine as the API server asks for it: requests in the API's
// wire types, answers in its read models, so that the server needs
// neither the store nor the maps.
func (e *Engine) API() api.RuntimeEngine { return apiEngine{e} }

// apiEngine turns API requests into the engine's specs and store records
// into the API's read models; what it does not define, Engine answers.
type apiEngine struct{ *Engine }

func (a apiEngine) Networks() ([]api.Network, error) {
	nets, sbs, err := a.store.Snapshot()
	out := []api.Network{}
	for _, n := range nets {
		out = append(out, networkView(n, sbs))
	}
	return out, err
}

func (a apiEngine) Network(ref string) (api.Network, error) {
	var v api.Network
	err := a.store.View(func(tx *store.Tx) error {
		n, err := tx.Network(ref)
		if err != nil {
			return err
		}
		sbs, err := tx.Sandboxes()
		v = networkView(n, sbs)
		return err
	})
	return v, err
}

func (a apiEngine) CreateNetwork(req api.NetworkCreate) (api.Network, error) {
	if req.ID != "" || req.PoolID != "" || req.Frontend != "" {
		return api.Network{}, errdefs.Invalidf("a network's ID, pool ID and frontend are set by runtimes' frontends only (got %q, %q, %q)", req.ID, req.PoolID, req.Frontend)
	}
	return a.CreateFrontendNetwork(req)
}

func (a apiEngine) CreateFrontendNetwork(req api.NetworkCreate) (api.Network, error) {
	spec, err := networkSpec(req)
	if err != nil {
		return api.Network{}, err
	}
	n, err := a.Engine.CreateNetwork(spec)
	return networkView(n, nil), err
}

func (a apiEngine) Connect(network string, req api.Connect) error {
	ip, err := parseIP(req.IP)
	if err != nil {
		return err
	}
	ip6, err := parseIP6(req.IP6)
	if err != nil {
		return err
	}
	return a.Engine.Connect(network, req.Sandbox, EndpointSpec{IP: ip, IP6: ip6, Aliases: req.Aliases})
}

func (a apiEngine) Disconnect(network string, req api.Disconnect) error {
	return a.Engine.Disconnect(network, req.Sandbox)
}

func (a apiEngine) Sandboxes() ([]api.Sandbox, error) {
	out := []api.Sandbox{}
	err := a.store.View(func(tx *store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		sbs, err := tx.Sandboxes()
		if err != nil {
			return err
		}
		pubs, err := tx.AllPublications()
		if err != nil {
			return err
		}
		byID := store.ByID(nets)
		for _, sb := range sbs {
			out = append(out, a.sandboxView(sb, pubs[sb.Name], byID))
		}
		return nil
	})
	return out, err
}

func (a apiEngine) Sandbox(ref string) (api.Sandbox, error) {
	var v api.Sandbox
	err := a.store.View(func(tx *store.Tx) error {
		sb, err := tx.Sandbox(ref)
		if err != nil {
			return err
		}
		v, err = a.viewIn(tx, sb)
		return err
	})
	return v, err
}

func (a apiEngine) CreateSandbox(req api.SandboxCreate) (api.Sandbox, error) {
	ip, err := parseIP(req.IP)
	if err != nil {
		return api.Sandbox{}, err
	}
	ip6, err := parseIP6(req.IP6)
	if err != nil {
		return api.Sandbox{}, err
	}
	servers, err := dnsServers(req.DNS)
	if err != nil {
		return api.Sandbox{}, err
	}
	sb, err := a.Engine.CreateSandbox(SandboxSpec{Name: req.Name, Networks: req.Networks, IP: ip, IP6: ip6, Aliases: req.Aliases,
		Publish: req.Publish, DNS: servers, Links: links(req.Links)})
	if err != nil {
		return api.Sandbox{}, err
	}
	var v api.Sandbox
	err = a.store.View(func(tx *store.Tx) (err error) { v, err = a.viewIn(tx, sb); return err })
	return v, err
}

func (a apiEngine) Publish(sandbox string, mappings []ports.Mapping) (map[string][]api.PortBinding, error) {
	added, err := a.Engine.Publish(sandbox, mappings)
	return portBindings(added), err
}

func (a apiEngine) Unpublish(sandbox string, filters []ports.Mapping) (map[string][]api.PortBinding, error) {
	removed, err := a.Engine.Unpublish(sandbox, filters)
	return portBindings(removed), err
}

// sandboxView is a sandbox's read model, with where its namespace and files are.
func (a apiEngine) sandboxView(sb store.Sandbox, pubs []store.Publication, nets map[string]store.Network) api.Sandbox {
	etc := ""
	if !sb.External() {
		etc = a.cfg.Runtime.FilesDir(sb)
	}
	return sandboxView(sb, pubs, nets, sb.NetNS, etc)
}

// viewIn is a sandbox's view, reading in tx what it shows besides the
// record: its publications and the networks.
func (a apiEngine) viewIn(tx *store.Tx, sb store.Sandbox) (api.Sandbox, error) {
	// Its own networks only: every network with its pool costs what the
	// host holds.
	nets := map[string]store.Network{}
	for _, ep := range sb.Endpoints {
		n, err := networkByID(tx, ep.NetworkID)
		if err != nil {
			return api.Sandbox{}, err
		}
		nets[n.ID] = n
	}
	pubs, err := tx.Publications(sb.Name)
	if err != nil {
		return api.Sandbox{}, err
	}
	return a.sandboxView(sb, pubs, nets), nil
}

// Command ebpfnet-cni is ebpfnet's CNI plugin (installed as
// /opt/cni/bin/ebpfnet): a thin client of the running daemon, which does
// the work. With "network" set it attaches the container to that ebpfnet
// network and publishes its runtimeConfig.portMappings; without it,
// chained after another plugin (the reference bridge), it publishes the
// ports of the container that plugin attached, in place of portmap. In
// both modes it holds the container to runtimeConfig.bandwidth's limits,
// in place of the bandwidth plugin.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// frontend is the name the daemon keeps CNI attachments under.
const frontend = "cni"

// netConf is the plugin's configuration.
type netConf struct {
	types.PluginConf
	Network string `json:"network,omitempty"` // "": chained mode
	Socket  string `json:"socket,omitempty"`
	// PublishAllow and PublishDeny are who may open flows to the ports
	// published (prefixes or addresses); none: the network's lists, or
	// the daemon's.
	PublishAllow []string `json:"publishAllow,omitempty"`
	PublishDeny  []string `json:"publishDeny,omitempty"`
	// PublishBalance shares the host ports published with the other
	// containers that publish them with it (ebpfnet publish --balance).
	PublishBalance bool `json:"publishBalance,omitempty"`
	// EgressAllow is where the container may send (prefixes or
	// addresses); none: anywhere, or as the network's list says.
	EgressAllow []string `json:"egressAllow,omitempty"`
	// sources are the lists read from them.
	sources api.Sources
	// The bandwidth plugin's keys, which a configuration may give the
	// plugin itself, for every container, in place of the capability.
	bandwidthEntry
	// bandwidth is the limits read from them, or from the capability.
	bandwidth     api.Bandwidth
	RuntimeConfig struct {
		Bandwidth    *bandwidthEntry `json:"bandwidth,omitempty"`
		PortMappings []portMapping   `json:"portMappings,omitempty"`
		IPs          []string        `json:"ips,omitempty"`
		MAC          string          `json:"mac,omitempty"`
		// Aliases are the container's names by network, as the aliases
		// capability gives them: recorded, for the runtime resolves names.
		Aliases map[string][]string `json:"aliases,omitempty"`
	} `json:"runtimeConfig"`
}

// portMapping is one entry of the portMappings capability, as the portmap
// plugin takes it.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: adder(routedVia), Del: del, Check: check, GC: gc, Status: status},
		supported(), "ebpfnet: container networking with eBPF instead of iptables")
}

// supported are the spec versions the plugin speaks: from 0.3.0, which
// older configuration lists (and chains after ptp or bridge) still name;
// CHECK from 0.4.0, GC and STATUS from 1.1.0, as the runtime's library
// enforces.
func supported() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

func parse(stdin []byte) (*netConf, *api.Client, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, nil, fmt.Errorf("parse network configuration: %w", err)
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, nil, fmt.Errorf("parse prevResult: %w", err)
		}
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	for _, list := range []struct {
		key   string
		items []string
		to    *[]netip.Prefix
	}{{"publishAllow", conf.PublishAllow, &conf.sources.Allow}, {"publishDeny", conf.PublishDeny, &conf.sources.Deny}} {
		for _, item := range list.items {
			ps, err := ports.ParsePrefixes(item)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", list.key, err)
			}
			*list.to = append(*list.to, ps...)
		}
	}
	allow, err := egress.Parse(conf.EgressAllow...)
	if err == nil {
		err = allow.CheckPrefixesOnly("CNI containers")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("egressAllow: %w", err)
	}
	conf.EgressAllow = allow
	bw, err := bandwidthOf(conf)
	if err != nil {
		return nil, nil, err
	}
	conf.bandwidth = bw
	return conf, api.NewClient(conf.Socket), nil
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// mappings turns portMappings into the daemon's structured mappings. A
// missing host port is an error, as with portmap.
func mappings(pms []portMapping) ([]ports.Mapping, error) {
	var out []ports.Mapping
	for _, pm := range pms {
		proto, err := ports.ParseProtocol(pm.Protocol)
		if pm.Protocol == "" {
			proto, err = ports.TCP, nil
		}
		if err != nil {
			return nil, fmt.Errorf("port mapping %d: %w", pm.ContainerPort, err)
		}
		if pm.HostPort <= 0 || pm.HostPort > 65535 || pm.ContainerPort <= 0 || pm.ContainerPort > 65535 {
			return nil, fmt.Errorf("invalid port mapping %d:%d/%s: host and container ports must be 1-65535", pm.HostPort, pm.ContainerPort, proto)
		}
		m := ports.Mapping{Proto: proto, HostPort: uint16(pm.HostPort), Port: uint16(pm.ContainerPort)}
		if out, err = ports.Add(out, m, pm.HostIP); err != nil {
			return nil, fmt.Errorf("port mapping %d: %w", pm.HostPort, err)
		}
	}
	return out, nil
}

// adder is ADD, reading the namespace's default routes with routedVia.
func adder(routedVia func(netns string, gw net.IP) (bool, error)) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error { return add(args, routedVia) }
}

func add(args *skel.CmdArgs, routedVia func(netns string, gw net.IP) (bool, error)) error {
	conf, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	defer client.Close()
	publish, err := mappings(conf.RuntimeConfig.PortMappings)
	if err != nil {
		return err
	}
	if conf.Network == "" {
		return addChained(args, conf, client, publish)
	}
	req := api.AttachmentCreate{Frontend: frontend, ContainerID: args.ContainerID, IfName: args.IfName, NetNS: args.Netns,
		Network: conf.Network, Publish: publish, PublishSources: conf.sources, PublishBalance: conf.PublishBalance, EgressAllow: conf.EgressAllow, MAC: conf.RuntimeConfig.MAC, Aliases: conf.RuntimeConfig.Aliases[conf.Name], Group: conf.Name,
		Bandwidth: conf.bandwidth}
	for _, s := range conf.RuntimeConfig.IPs {
		ip, err := api.ParseAddress("address", s)
		if err != nil {
			return err
		}
		field := &req.IP
		if ip.Is6() {
			field = &req.IP6
		}
		if field.IsValid() {
			return fmt.Errorf("ebpfnet gives one address per family per attachment, not %v", conf.RuntimeConfig.IPs)
		}
		*field = ip
	}
	ctx, cancel := timeout()
	defer cancel()
	a, err := client.Attach(ctx, req)
	if err != nil {
		return err
	}
	result, err := resultOf(a, args.Netns, routedVia)
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// resultOf is an attachment as CNI reports it: the host side and the
// container's interface, its addresses and gateways, and a default route
// per family where the namespace's default route goes via the gateway
// (routedVia tells; a second network's interface has none).
func resultOf(a api.Attachment, netns string, routedVia func(netns string, gw net.IP) (bool, error)) (*current.Result, error) {
	inside := 1
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.HostInterface},
			{Name: a.Interface, Mac: a.MacAddress, Mtu: a.Mtu, Sandbox: netns},
		},
	}
	for _, f := range []struct{ address, gateway string }{{a.Address, a.Gateway}, {a.AddressIPv6, a.GatewayIPv6}} {
		if f.address == "" {
			continue // an IPv4-only network
		}
		prefix, err := netip.ParsePrefix(f.address)
		if err != nil {
			return nil, fmt.Errorf("the daemon answered an invalid address %q", f.address)
		}
		bits := prefix.Addr().BitLen()
		ip := &current.IPConfig{Interface: &inside, Address: net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), bits)}}
		if f.gateway != "" {
			ip.Gateway = net.ParseIP(f.gateway)
			routed, err := routedVia(netns, ip.Gateway)
			if err != nil {
				return nil, fmt.Errorf("read the routes of %s: %w", netns, err)
			}
			if routed {
				dst := net.IPNet{IP: net.IP(make([]byte, bits/8)), Mask: net.CIDRMask(0, bits)}
				r.Routes = append(r.Routes, &types.Route{Dst: dst, GW: ip.Gateway})
			}
		}
		r.IPs = append(r.IPs, ip)
	}
	return r, nil
}

// routedVia reports whether the namespace at netns routes gw's family by
// default through gw.
func routedVia(netns string, gw net.IP) (found bool, err error) {
	family := netlink.FAMILY_V4
	if gw.To4() == nil {
		family = netlink.FAMILY_V6
	}
	err = ns.WithNetNSPath(netns, func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, family)
		found = slices.ContainsFunc(routes, func(r netlink.Route) bool {
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			return ones == 0 && r.Gw.Equal(gw)
		})
		return err
	})
	return found, err
}

// chainedNetwork is the ebpfnet network that stands for the network of
// the plugins ebpfnet is chained after.
func chainedNetwork(conf *netConf) string { return "cni-" + conf.Name }

// addChained serves the container a plugin before ebpfnet attached (the
// reference bridge, or ptp, whose veth is on no bridge): its ports are
// published through the datapath, its replies translated back on the host
// side of its veth. The result is that plugin's, passed on.
func addChained(args *skel.CmdArgs, conf *netConf, client *api.Client, publish []ports.Mapping) error {
	if conf.PrevResult == nil {
		return errors.New("chained mode (no \"network\") needs a prevResult: put ebpfnet after the plugin that attaches the container, such as bridge or ptp")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("read prevResult: %w", err)
	}
	c := &api.ChainedAttachment{}
	inside := -1
	for i, iface := range prev.Interfaces {
		switch {
		case iface.Sandbox != "" && iface.Name == args.IfName:
			inside, c.MacAddress = i, iface.Mac
		case iface.Sandbox == "":
			// The host side and the bridge, told apart by what they are.
			if l, err := netlink.LinkByName(iface.Name); err == nil && l.Type() == "veth" {
				c.HostInterface = iface.Name
			} else if err == nil && l.Type() == "bridge" {
				c.Bridge = iface.Name
			}
		}
	}
	for _, ip := range prev.IPs {
		if v4 := ip.Address.IP.To4(); ip.Interface != nil && *ip.Interface == inside && v4 != nil {
			ones, _ := ip.Address.Mask.Size()
			c.Address = netip.PrefixFrom(netip.AddrFrom4([4]byte(v4)), ones)
			if gw, ok := netip.AddrFromSlice(ip.Gateway); ok {
				c.Gateway = gw.Unmap()
			}
			break
		}
	}
	if inside < 0 || c.HostInterface == "" || !c.Address.IsValid() {
		return fmt.Errorf("prevResult has no veth with an IPv4 address for %s (interfaces %v): chain ebpfnet after the bridge or ptp plugin", args.IfName, prev.Interfaces)
	}
	ctx, cancel := timeout()
	defer cancel()
	_, err = client.Attach(ctx, api.AttachmentCreate{Frontend: frontend, ContainerID: args.ContainerID, IfName: args.IfName,
		NetNS: args.Netns, Network: chainedNetwork(conf), Publish: publish, PublishSources: conf.sources, PublishBalance: conf.PublishBalance, EgressAllow: conf.EgressAllow, Chained: c, Group: conf.Name,
		Bandwidth: conf.bandwidth})
	if err != nil {
		return err
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func del(args *skel.CmdArgs) error {
	_, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := timeout()
	defer cancel()
	return client.Detach(ctx, api.AttachmentRef{ContainerID: args.ContainerID, IfName: args.IfName})
}

func check(args *skel.CmdArgs) error {
	_, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := timeout()
	defer cancel()
	return client.CheckAttachment(ctx, api.AttachmentRef{ContainerID: args.ContainerID, IfName: args.IfName}, args.Netns)
}

func gc(args *skel.CmdArgs) error {
	conf, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	defer client.Close()
	network := conf.Network
	if network == "" {
		network = chainedNetwork(conf)
	}
	req := api.AttachmentsCollect{Frontend: frontend, Network: network, Group: conf.Name, Keep: []api.AttachmentRef{}}
	for _, a := range conf.ValidAttachments {
		req.Keep = append(req.Keep, api.AttachmentRef{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := timeout()
	defer cancel()
	_, err = client.CollectAttachments(ctx, req)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // a network never attached to has nothing to collect
	}
	return err
}

func status(args *skel.CmdArgs) error {
	_, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := timeout()
	defer cancel()
	if _, err := client.Status(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the ebpfnet daemon does not answer", err.Error())
	}
	return nil
}

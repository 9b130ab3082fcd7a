// Command ebpfnet-cni is ebpfnet's CNI plugin (installed as
// /opt/cni/bin/ebpfnet): a thin client of the running daemon, which does
// the work. With "network" set it attaches the container to that ebpfnet
// network and publishes its runtimeConfig.portMappings; without it,
// chained after another plugin (the reference bridge), it publishes the
// ports of the container that plugin attached, in place of portmap.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// frontend is the name the daemon keeps CNI attachments under.
const frontend = "cni"

// netConf is the plugin's configuration.
type netConf struct {
	types.PluginConf
	Network       string `json:"network,omitempty"` // "": chained mode
	Socket        string `json:"socket,omitempty"`
	RuntimeConfig struct {
		PortMappings []portMapping `json:"portMappings,omitempty"`
		IPs          []string      `json:"ips,omitempty"`
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
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: del, Check: check, GC: gc, Status: status},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "ebpfnet: container networking with eBPF instead of iptables")
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
		if pm.HostIP != "" {
			a, err := netip.ParseAddr(pm.HostIP)
			if err != nil {
				return nil, fmt.Errorf("port mapping %d: invalid host IP %q", pm.HostPort, pm.HostIP)
			}
			if a.Is6() && a.IsUnspecified() {
				continue // "::" repeats 0.0.0.0 while ebpfnet is IPv4-only
			}
			if !a.IsUnspecified() {
				m.HostIP = a
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func add(args *skel.CmdArgs) error {
	conf, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Network == "" {
		return errors.New("chained mode (no \"network\") is not supported yet: name an ebpfnet network")
	}
	publish, err := mappings(conf.RuntimeConfig.PortMappings)
	if err != nil {
		return err
	}
	req := api.AttachmentCreate{Frontend: frontend, ContainerID: args.ContainerID, IfName: args.IfName, NetNS: args.Netns,
		Network: conf.Network, Publish: publish}
	if len(conf.RuntimeConfig.IPs) > 1 {
		return fmt.Errorf("ebpfnet gives one IPv4 address per attachment, not %d (%v)", len(conf.RuntimeConfig.IPs), conf.RuntimeConfig.IPs)
	}
	if len(conf.RuntimeConfig.IPs) == 1 {
		req.IP = conf.RuntimeConfig.IPs[0]
	}
	ctx, cancel := timeout()
	defer cancel()
	a, err := client.Attach(ctx, req)
	if err != nil {
		return err
	}
	result, err := resultOf(a, args.Netns)
	if err != nil {
		return err
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// resultOf is an attachment as CNI reports it: the host side and the
// container's interface, its address, gateway and default route.
func resultOf(a api.Attachment, netns string) (*current.Result, error) {
	prefix, err := netip.ParsePrefix(a.Address)
	if err != nil {
		return nil, fmt.Errorf("the daemon answered an invalid address %q", a.Address)
	}
	inside := 1
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.HostInterface},
			{Name: a.Interface, Mac: a.MacAddress, Mtu: a.Mtu, Sandbox: netns},
		},
		IPs: []*current.IPConfig{{Interface: &inside, Address: net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)}}},
	}
	if a.Gateway != "" {
		gw := net.ParseIP(a.Gateway)
		r.IPs[0].Gateway = gw
		r.Routes = []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw}}
	}
	return r, nil
}

func del(args *skel.CmdArgs) error {
	_, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	return client.Detach(ctx, api.AttachmentRef{ContainerID: args.ContainerID, IfName: args.IfName})
}

func check(args *skel.CmdArgs) error {
	conf, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Network == "" {
		return errors.New("chained mode (no \"network\") is not supported yet: name an ebpfnet network")
	}
	ctx, cancel := timeout()
	defer cancel()
	return client.CheckAttachment(ctx, api.AttachmentRef{ContainerID: args.ContainerID, IfName: args.IfName}, args.Netns)
}

func gc(args *skel.CmdArgs) error {
	conf, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	if conf.Network == "" {
		return nil // chained mode keeps nothing of its own to collect
	}
	req := api.AttachmentsCollect{Frontend: frontend, Network: conf.Network, Keep: []api.AttachmentRef{}}
	for _, a := range conf.ValidAttachments {
		req.Keep = append(req.Keep, api.AttachmentRef{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := timeout()
	defer cancel()
	_, err = client.CollectAttachments(ctx, req)
	return err
}

func status(args *skel.CmdArgs) error {
	_, client, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	if _, err := client.Status(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the ebpfnet daemon does not answer", err.Error())
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/frontend/docker"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

func newPublishCommand(c *cli) *cobra.Command {
	var (
		sources api.Sources
		balance bool
	)
	cmd := &cobra.Command{
		Use:   "publish [--balance] [--allow CIDR]... [--deny CIDR]... SPEC... SANDBOX",
		Short: "Publish ports of a sandbox, with eBPF instead of iptables and docker-proxy",
		Long: `Publish ports of a sandbox. SPEC is docker run's -p grammar:
[HOST_IP:][HOST_PORT[-END]:]PORT[-END][/tcp|/udp]. Without a host port a free
one of the host's ephemeral range is chosen and printed. A host port range
with one sandbox port takes the first free port of the range.

--allow and --deny limit who opens flows to the ports, from outside or from
sandboxes (host processes are the host's own): the most specific prefix
decides, and with --allow an address no prefix holds is refused, in both
families. Without them the network's lists hold (ebpfnet.publish.allow and
.deny), else the daemon's (--publish-allow, --publish-deny), else everyone.
A port the sandbox publishes already, exactly as SPEC says, gets the lists
given instead: new flows are checked against them at once, established
ones go on.

--balance shares each host port with the other sandboxes that publish it
with --balance, on the same host address: one published port, each of
them a backend. New flows, from outside, from sandboxes and from host
processes, are spread over the backends by consistent hashing (Maglev);
established flows stay on theirs. Unpublishing a backend (or removing its
sandbox) takes it out for new flows at once; its established flows go on
until they end. Without --balance, a port another sandbox publishes is
refused, as without it.`,
		Example: `  ebpfnet publish 8080:80 web
  ebpfnet publish 127.0.0.1:5353:53/udp dns
  ebpfnet publish 8000-8010:80-90 web
  ebpfnet publish 80 web
  ebpfnet publish --allow 192.168.1.0/24 --allow fd00:1::/64 --deny 192.168.1.13 8443:443 admin
  ebpfnet publish --balance 8080:80 web1   # and web2, web3: one port, three backends`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return changePorts(cmd, args, ports.ParsePublish, func(ctx context.Context, sandbox string, mappings []api.PortMapping) (map[string][]api.PortBinding, error) {
				return c.client().Publish(ctx, sandbox, api.Ports{Mappings: mappings, Sources: sources, Balance: balance})
			})
		},
	}
	sourcesVar(cmd.Flags(), &sources, "allow", "deny", "the ports")
	cmd.Flags().BoolVar(&balance, "balance", false, "share the host ports with the other sandboxes that publish them with --balance")
	return cmd
}

func newUnpublishCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "unpublish SPEC... SANDBOX",
		Short: "Remove published ports of a sandbox",
		Long: `Remove published ports. A SPEC without ':' names host ports (8080,
8000-8010, 8080/udp); a full -p spec also names the address and the sandbox
ports. Without a protocol, tcp and udp both match. Established flows of the
removed ports are forgotten with them.`,
		Example: `  ebpfnet unpublish 8080 web
  ebpfnet unpublish 127.0.0.1:5353:53/udp dns`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return changePorts(cmd, args, ports.ParseUnpublish, c.client().Unpublish)
		},
	}
}

// changePorts applies "SPEC... SANDBOX" arguments and prints what changed.
func changePorts(cmd *cobra.Command, args []string, parse func(string) (api.PortMapping, error),
	change func(ctx context.Context, sandbox string, mappings []api.PortMapping) (map[string][]api.PortBinding, error)) error {
	mappings, err := parseEach(args[:len(args)-1], parse)
	if err != nil {
		return err
	}
	changed, err := change(cmd.Context(), args[len(args)-1], mappings)
	if err != nil {
		return err
	}
	printPorts(cmd.OutOrStdout(), changed)
	return nil
}

func newPortCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "port SANDBOX|CONTAINER [PORT[/PROTO]]",
		Short: "List the published ports of a sandbox or a Docker container, like docker port",
		Long: `List published ports. A name that is no sandbox is looked up as a CNI
container ID (its attachments, CONTAINERID:IFNAME), then as a Docker
container (at DOCKER_HOST, or /var/run/docker.sock): its ports on ebpfnet
networks, which docker port and docker ps do not show for plugin networks.`,
		Example: `  ebpfnet port web
  ebpfnet port my-container 80`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			ports, err := c.publishedPorts(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if len(args) == 2 {
				key := args[1]
				if !strings.Contains(key, "/") {
					key += "/tcp"
				}
				if len(ports[key]) == 0 {
					return fmt.Errorf("%s does not publish port %s", args[0], key)
				}
				ports = map[string][]api.PortBinding{key: ports[key]}
			}
			printPorts(cmd.OutOrStdout(), ports)
			return nil
		},
	}
}

// publishedPorts are the ports a sandbox publishes, or, when ref names no
// sandbox, those a CNI container (by its ID) or a Docker container (by
// name or ID) publishes through its attachments.
func (c *cli) publishedPorts(ctx context.Context, ref string) (map[string][]api.PortBinding, error) {
	sb, err := c.client().Sandbox(ctx, ref)
	if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return sb.NetworkSettings.Ports, err
	}
	// A CNI container's attachments: CONTAINERID:IFNAME.
	all, listErr := c.client().Sandboxes(ctx)
	if listErr != nil {
		return nil, listErr
	}
	ports := map[string][]api.PortBinding{}
	found := false
	for _, a := range all {
		if strings.HasPrefix(a.Name, ref+":") {
			found = true
			for port, bindings := range a.NetworkSettings.Ports {
				ports[port] = append(ports[port], bindings...)
			}
		}
	}
	if found {
		return ports, nil
	}
	ids, dockerErr := docker.EndpointIDs(ctx, docker.Host(), ref)
	if dockerErr != nil {
		return nil, fmt.Errorf("%w, nor a CNI or Docker container (%v)", err, dockerErr)
	}
	for _, id := range ids {
		ep, err := c.client().Sandbox(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // an endpoint on a network that is not ebpfnet's
		}
		if err != nil {
			return nil, err
		}
		for port, bindings := range ep.NetworkSettings.Ports {
			ports[port] = append(ports[port], bindings...)
		}
	}
	return ports, nil
}

// printPorts prints bindings as docker port does: "80/tcp -> 0.0.0.0:8080",
// and the source lists of those that have them.
func printPorts(w io.Writer, ports map[string][]api.PortBinding) {
	var lines []string
	for port, bindings := range ports {
		for _, b := range bindings {
			line := fmt.Sprintf("%s -> %s", port, net.JoinHostPort(b.HostIP, b.HostPort))
			if len(b.Allow) > 0 {
				line += " allow " + joinPrefixes(b.Allow)
			}
			if len(b.Deny) > 0 {
				line += " deny " + joinPrefixes(b.Deny)
			}
			if b.Balanced {
				line += " balanced"
				if len(b.Backends) > 0 {
					line += " " + strings.Join(b.Backends, ",")
				}
			}
			lines = append(lines, line)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// joinPrefixes lists prefixes as the flags take them.
func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

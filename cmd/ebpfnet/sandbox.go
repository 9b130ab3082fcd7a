package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

func newSandboxCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sb"},
		Short:   "Manage sandboxes (network namespaces)",
	}
	cmd.AddCommand(newSandboxCreate(c), newSandboxUpdate(c), newSandboxLs(c), newSandboxInspect(c), newSandboxRm(c))
	return cmd
}

// sandboxFlags are the flags of `sandbox create` and `run`; the -p specs
// land in publish, for sandboxRequest to parse.
func sandboxFlags(cmd *cobra.Command, req *api.SandboxCreate, publish *[]string) {
	f := cmd.Flags()
	f.StringArrayVar(&req.Networks, "network", nil, "network to attach to (repeatable), or host, none, container:NAME (default: bridge)")
	addrVar(f, &req.IP, api.ParseIPv4, "ip", "IP address", "IPv4 address on the first network")
	addrVar(f, &req.IP6, api.ParseAddr, "ip6", "IPv6 address", "IPv6 address on the first network (one with IPv6)")
	f.StringArrayVar(&req.Aliases, "alias", nil, "extra name on the networks (repeatable)")
	f.StringArrayVarP(publish, "publish", "p", nil, "publish a port, as docker run -p (repeatable)")
	sourcesVar(f, &req.PublishSources, "publish-allow", "publish-deny", "the ports of -p (see ebpfnet publish)")
	f.BoolVar(&req.PublishBalance, "publish-balance", false, "share the host ports of -p with other sandboxes that balance them (see ebpfnet publish)")
	addrsVar(f, &req.DNS, api.ParseIPv4, "dns", "DNS server", "upstream DNS server (repeatable)")
	f.StringArrayVar(&req.Links, "link", nil, "legacy link NAME[:ALIAS]: the sandbox's address in this one's hosts (repeatable)")
	egressVar(f, &req.EgressAllow)
	bandwidthFlags(f, &req.Bandwidth)
}

// sandboxRequest completes req from the flags that need parsing.
func sandboxRequest(req *api.SandboxCreate, publish []string) (err error) {
	if req.Publish, err = parseEach(publish, ports.ParsePublish); err != nil {
		return err
	}
	if err := checkBandwidthFlags(&req.Bandwidth); err != nil {
		return err
	}
	return checkSandboxFlags(*req)
}

// checkSandboxFlags refuses, in the words of the flags, what the daemon
// refuses in terms of values: addresses, aliases and ports on a sandbox
// without networks of its own; and what the flags cannot say: source
// lists of no port.
func checkSandboxFlags(req api.SandboxCreate) error {
	if !req.PublishSources.Empty() && len(req.Publish) == 0 {
		return errors.New("--publish-allow and --publish-deny need -p")
	}
	if req.PublishBalance && len(req.Publish) == 0 {
		return errors.New("--publish-balance needs -p")
	}
	if len(req.EgressAllow) > 0 && len(req.Networks) == 1 && api.IsNetworkMode(req.Networks[0]) {
		return fmt.Errorf("--egress-allow needs a bridge network, not %s", req.Networks[0])
	}
	if len(req.Networks) > 0 && api.IsNetworkMode(req.Networks[0]) && !req.Bandwidth.IsZero() {
		return fmt.Errorf("--egress-rate and --ingress-rate need a bridge network, not %s", req.Networks[0])
	}
	if len(req.Networks) != 1 || !req.IP.IsValid() && !req.IP6.IsValid() && len(req.Aliases) == 0 && len(req.Publish) == 0 {
		return nil
	}
	if mode := req.Networks[0]; api.IsNetworkMode(mode) {
		return fmt.Errorf("--ip, --ip6, --alias and -p need a bridge or macvlan network, not %s", mode)
	}
	return nil
}

func newSandboxCreate(c *cli) *cobra.Command {
	var (
		req     api.SandboxCreate
		publish []string
	)
	cmd := &cobra.Command{
		Use:   "create [flags] NAME",
		Short: "Create a sandbox",
		Example: `  ebpfnet sandbox create web                       # on the default network "bridge"
  ebpfnet sandbox create web --network appnet --ip 172.19.5.10 --alias www -p 8080:80 -p 9000:9000/udp
  ebpfnet sandbox create db --network dualnet --ip6 fd12:3456:789a::10
  ebpfnet sandbox create side --network container:web
  ebpfnet sandbox create app --link web:db          # db and web in app's /etc/hosts
  ebpfnet sandbox create ci --egress-rate 50mbit --ingress-rate 100mbit --burst 256kb
  ebpfnet sandbox create h --network host
  ebpfnet sandbox create n --network none
  ebpfnet sandbox create ci --network appnet --egress-allow api.github.com --egress-allow '*.debian.org' --egress-allow 10.90.0.0/28`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if err := sandboxRequest(&req, publish); err != nil {
				return err
			}
			sb, err := c.client().CreateSandbox(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
			return nil
		},
	}
	sandboxFlags(cmd, &req, &publish)
	return cmd
}

func newSandboxUpdate(c *cli) *cobra.Command {
	var (
		allow []string
		clear bool
		bw    api.Bandwidth
	)
	cmd := &cobra.Command{
		Use:   "update [flags] SANDBOX",
		Short: "Change a running sandbox's settings",
		Long: `Change a running sandbox's settings. New flows meet them at once; flows
already open go on.`,
		Example: `  ebpfnet sandbox update ci --egress-allow api.github.com --egress-allow 10.90.0.0/28   # replaces the list
  ebpfnet sandbox update ci --egress-clear                                               # anywhere again
  ebpfnet sandbox update ci --egress-rate 20mbit                                         # the other limits stay
  ebpfnet sandbox update ci --egress-rate 0 --ingress-rate 0                             # no limits`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.SandboxUpdate
			switch {
			case clear && len(allow) > 0:
				return errors.New("--egress-allow and --egress-clear exclude each other")
			case clear:
				req.EgressAllow = &[]string{}
			case len(allow) > 0:
				req.EgressAllow = &allow
			}
			f := cmd.Flags()
			if given := (limitFlags{f.Changed("egress-rate"), f.Changed("ingress-rate"), f.Changed("burst")}); given.any() {
				sb, err := c.client().Sandbox(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				limits, err := given.update(sb.HostConfig.Bandwidth, bw)
				if err != nil {
					return err
				}
				req.Bandwidth = &limits
			}
			if req.EgressAllow == nil && req.Bandwidth == nil {
				return errors.New("nothing to change: give --egress-allow, --egress-clear, --egress-rate, --ingress-rate or --burst")
			}
			sb, err := c.client().UpdateSandbox(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
			return nil
		},
	}
	egressVar(cmd.Flags(), &allow)
	cmd.Flags().BoolVar(&clear, "egress-clear", false, "remove the sandbox's egress list (its networks' lists, if any, then hold)")
	bandwidthFlags(cmd.Flags(), &bw)
	return cmd
}

func newSandboxLs(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "ps"},
		Short:   "List sandboxes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			sbs, err := c.client().Sandboxes(cmd.Context())
			if err != nil {
				return err
			}
			if c.output == "json" {
				return printJSON(cmd.OutOrStdout(), sbs)
			}
			var rows [][]string
			for _, sb := range sbs {
				var addrs []string
				for name, ep := range sb.NetworkSettings.Networks {
					addrs = append(addrs, fmt.Sprintf("%s=%s", name, ep.IPAddress))
				}
				sort.Strings(addrs)
				rows = append(rows, []string{shortID(sb.ID), sb.Name, sb.HostConfig.NetworkMode, strings.Join(addrs, ",")})
			}
			return printTable(cmd.OutOrStdout(), []string{"SANDBOX ID", "NAME", "NETWORK MODE", "ADDRESSES"}, rows)
		},
	}
	c.addOutputFlag(cmd)
	return cmd
}

func newSandboxInspect(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:               "inspect SANDBOX...",
		Short:             "Show sandboxes in detail, as JSON",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: c.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspectEach(cmd.OutOrStdout(), args, func(ref string) (api.Sandbox, error) {
				return c.client().Sandbox(cmd.Context(), ref)
			})
		},
	}
}

func newSandboxRm(c *cli) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] SANDBOX...",
		Aliases: []string{"remove"},
		Short:   "Remove sandboxes",
		Example: `  ebpfnet sandbox rm web
  ebpfnet sandbox rm -f web     # also kills what still runs inside`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: c.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return removeEach(cmd.OutOrStdout(), args, func(ref string) error {
				return c.client().RemoveSandbox(cmd.Context(), ref, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill processes still running in the sandbox")
	return cmd
}

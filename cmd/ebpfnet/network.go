package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func newNetworkCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "network",
		Aliases: []string{"net"},
		Short:   "Manage networks",
	}
	cmd.AddCommand(newNetworkCreate(c), newNetworkLs(c), newNetworkInspect(c), newNetworkRm(c),
		newNetworkPrune(c), newNetworkConnect(c), newNetworkDisconnect(c))
	return cmd
}

func newNetworkCreate(c *cli) *cobra.Command {
	var (
		req          api.NetworkCreate
		opts, labels []string
		ipv6         bool
	)
	cmd := &cobra.Command{
		Use:   "create [flags] NETWORK",
		Short: "Create a network",
		Example: `  ebpfnet network create appnet
  ebpfnet network create --subnet 172.19.0.0/16 --gateway 172.19.0.1 --ip-range 172.19.5.0/24 appnet
  ebpfnet network create --ipv6 dualnet             # IPv6 from the host's default ULA /48
  ebpfnet network create --ipv6 --subnet 172.21.0.0/16 --subnet fd12:3456:789a::/64 --ip-range fd12:3456:789a::/80 dual2
  ebpfnet network create --internal -o com.docker.network.bridge.enable_icc=false backend
  ebpfnet network create -o com.docker.network.bridge.gateway_mode_ipv4=routed --subnet 172.20.0.0/16 routednet
  ebpfnet network create --internal -o com.docker.network.bridge.gateway_mode_ipv4=isolated vault
  ebpfnet network create -d macvlan --subnet 192.168.57.0/24 --gateway 192.168.57.1 -o parent=eth1 lan
  ebpfnet network create -d overlay --subnet 10.200.0.0/24 --attachable ov   # every host of the cluster has it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			req.Name = args[0]
			if cmd.Flags().Changed("ipv6") { // unset, the option may say
				req.EnableIPv6 = &ipv6
			}
			if req.Options, err = parseKeyValues("--opt", opts); err != nil {
				return err
			}
			if req.Labels, err = parseKeyValues("--label", labels); err != nil {
				return err
			}
			if err := checkNetworkFlags(req); err != nil {
				return err
			}
			n, err := c.client().CreateNetwork(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&req.Driver, "driver", "d", api.DriverBridge, "driver: bridge, macvlan or overlay (with a cluster: ebpfnet daemon --cluster-store)")
	f.BoolVar(&ipv6, "ipv6", false, "give the network an IPv6 subnet too (dual-stack)")
	prefixesVar(f, &req.Subnets, "subnet", "subnet", "subnet in CIDR form, at most one per family (default: the next free default pool; for IPv6 a /64 of the host's ULA /48)")
	addrsVar(f, &req.Gateways, api.ParseAddr, "gateway", "gateway", "gateway address of the subnet of its family (default: the subnet's first address + 1)")
	prefixesVar(f, &req.IPRanges, "ip-range", "ip-range", "allocate dynamic addresses of the subnet of its family from this sub-range")
	f.BoolVar(&req.Internal, "internal", false, "restrict traffic to the network: no way in or out")
	f.BoolVar(&req.Attachable, "attachable", false, "accepted for docker compatibility: any sandbox may join any network, overlays included")
	f.StringArrayVarP(&opts, "opt", "o", nil, "driver option KEY=VALUE (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	addrsVar(f, &req.DNS, api.ParseIPv4, "dns", "DNS server", "upstream DNS server of the network's sandboxes (repeatable; default: the host's)")
	cmd.RegisterFlagCompletionFunc("driver", cobra.FixedCompletions([]string{api.DriverBridge, api.DriverMacvlan, api.DriverOverlay}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// checkNetworkFlags refuses what the flags cannot say: an address range or
// a gateway needs the subnet it is in, which the daemon is given in the
// same order. The rest is the daemon's to refuse, in the flags' words.
func checkNetworkFlags(req api.NetworkCreate) error {
	if len(req.Subnets) == 0 && (len(req.IPRanges) > 0 || len(req.Gateways) > 0) {
		return errors.New("--ip-range and --gateway need --subnet")
	}
	return nil
}

func newNetworkLs(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Example: `  ebpfnet network ls
  ebpfnet network ls -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			nets, err := c.client().Networks(cmd.Context())
			if err != nil {
				return err
			}
			if c.output == "json" {
				return printJSON(cmd.OutOrStdout(), nets)
			}
			var rows [][]string
			for _, n := range nets {
				subnet := ""
				if len(n.IPAM.Config) > 0 {
					subnet = n.IPAM.Config[0].Subnet
				}
				rows = append(rows, []string{shortID(n.ID), n.Name, n.Driver, n.Scope, subnet})
			}
			return printTable(cmd.OutOrStdout(), []string{"NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"}, rows)
		},
	}
	c.addOutputFlag(cmd)
	return cmd
}

func newNetworkInspect(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:               "inspect NETWORK...",
		Short:             "Show networks in detail, as JSON",
		Example:           `  ebpfnet network inspect appnet`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: c.completeNetworks,
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspectEach(cmd.OutOrStdout(), args, func(ref string) (api.Network, error) {
				return c.client().Network(cmd.Context(), ref)
			})
		},
	}
}

func newNetworkRm(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:               "rm NETWORK...",
		Aliases:           []string{"remove"},
		Short:             "Remove networks",
		Example:           `  ebpfnet network rm appnet`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: c.completeNetworks,
		RunE: func(cmd *cobra.Command, args []string) error {
			return removeEach(cmd.OutOrStdout(), args, func(ref string) error {
				return c.client().RemoveNetwork(cmd.Context(), ref)
			})
		},
	}
}

func newNetworkPrune(c *cli) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "prune",
		Short:   "Remove every user-defined network without endpoints",
		Example: `  ebpfnet network prune -f`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pruned, err := c.client().PruneNetworks(cmd.Context())
			if err != nil {
				return err
			}
			if len(pruned.NetworksDeleted) > 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "Deleted Networks:")
			}
			for _, name := range pruned.NetworksDeleted {
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return nil
		},
	}
	// Accepted for docker compatibility: prune never asks.
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not prompt (prune never prompts)")
	return cmd
}

func newNetworkConnect(c *cli) *cobra.Command {
	var req api.Connect
	cmd := &cobra.Command{
		Use:               "connect [flags] NETWORK SANDBOX",
		Short:             "Connect a sandbox to a network",
		Example:           `  ebpfnet network connect --alias db backend web`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeNetworks,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Sandbox = args[1]
			return c.client().Connect(cmd.Context(), args[0], req)
		},
	}
	addrVar(cmd.Flags(), &req.IP, api.ParseIPv4, "ip", "IP address", "IPv4 address on the network")
	addrVar(cmd.Flags(), &req.IP6, api.ParseAddr, "ip6", "IPv6 address", "IPv6 address on the network (one with IPv6)")
	cmd.Flags().StringArrayVar(&req.Aliases, "alias", nil, "extra name on the network (repeatable)")
	return cmd
}

func newNetworkDisconnect(c *cli) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "disconnect [flags] NETWORK SANDBOX",
		Short:             "Disconnect a sandbox from a network",
		Example:           `  ebpfnet network disconnect backend web`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeNetworks,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.client().Disconnect(cmd.Context(), args[0], api.Disconnect{Sandbox: args[1]})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "accepted for docker compatibility; disconnect never waits")
	return cmd
}

package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func newStatusCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the datapath: counters by verdict, map fill levels, attached programs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			st, err := c.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if c.output == "json" {
				return printJSON(out, st)
			}
			var rows [][]string
			for _, k := range st.Counters {
				if k.Packets > 0 || k.Verdict == "pass" {
					rows = append(rows, []string{k.Program, k.Verdict, fmt.Sprint(k.Packets), fmt.Sprint(k.Bytes)})
				}
			}
			printTable(out, []string{"PROGRAM", "VERDICT", "PACKETS", "BYTES"}, rows)
			fmt.Fprintln(out)
			rows = nil
			for _, m := range st.Maps {
				rows = append(rows, []string{m.Map, fmt.Sprint(m.Entries), fmt.Sprint(m.Max)})
			}
			printTable(out, []string{"MAP", "ENTRIES", "MAX"}, rows)
			fmt.Fprintln(out)
			rows = nil
			for _, e := range st.Endpoints {
				attach := string(e.Attach)
				if attach == "" {
					attach = "NOT ATTACHED"
				}
				rows = append(rows, []string{e.Interface, e.Sandbox, e.Network, attach})
			}
			for _, u := range st.Uplinks {
				programs := string(u.Attach)
				if u.XDP {
					programs += " + xdp"
				}
				rows = append(rows, []string{u.Interface, "(uplink)", "", programs})
			}
			printTable(out, []string{"INTERFACE", "SANDBOX", "NETWORK", "PROGRAMS"}, rows)
			if len(st.BackendFlows) > 0 {
				rows = nil
				for _, f := range st.BackendFlows {
					rows = append(rows, []string{f.Sandbox, f.Backend + "/" + f.Proto, fmt.Sprint(f.Flows)})
				}
				fmt.Fprintln(out)
				printTable(out, []string{"BALANCED BACKEND", "ADDRESS", "NEW FLOWS"}, rows)
			}
			if len(st.Uplinks) > 0 {
				fmt.Fprintf(out, "\nuplink datapath:\n%s", uplinkModes(st.Uplinks))
			}
			if others := otherPrograms(slices.Concat(st.Endpoints, st.Uplinks)); len(others) > 0 {
				fmt.Fprintf(out, "\nother programs on ebpfnet's hooks:\n%s", others)
			}
			fmt.Fprintf(out, "\nsocket hooks: %s\n", strings.Join(st.SocketHooks, ", "))
			if slices.Contains(st.SocketHooks, "bind4") {
				fmt.Fprintf(out, "published host ports held from other binds: %d\n", st.HeldPorts)
			} else {
				fmt.Fprintf(out, "published host ports held from other binds: NONE (the bind4 hook is not attached: any host process may bind the %d published)\n", st.HeldPorts)
			}
			monitoring := st.Monitoring
			if monitoring == "" {
				monitoring = "off (no monitor running)"
			}
			fmt.Fprintf(out, "datapath events: %s\n", monitoring)
			fmt.Fprintf(out, "\n%s", hostSettings(st.Host))
			if cs := st.Cluster; cs != nil {
				fmt.Fprintf(out, "\ncluster store: etcd://%s\nthis host: %s, lease %s (%d s left)\n", strings.Join(cs.Store, ","), cs.Advertise, cs.Lease, cs.LeaseTTL)
				if cs.Error != "" {
					fmt.Fprintf(out, "store: %s\n", cs.Error)
				}
				rows = nil
				for _, h := range cs.Hosts {
					rows = append(rows, []string{h.Advertise.String(), h.Hostname})
				}
				printTable(out, []string{"HOST (VTEP)", "HOSTNAME"}, rows)
				if len(cs.Conflicts) > 0 {
					fmt.Fprintf(out, "\nnot in line with the cluster until something changes:\n")
					for _, c := range cs.Conflicts {
						fmt.Fprintf(out, "  %s\n", c)
					}
				}
			}
			return nil
		},
	}
	c.addOutputFlag(cmd)
	return cmd
}

// uplinkModes says, one line each, which datapath each uplink has and why:
// "uplink0: tc (auto: veth loses TSO under XDP)".
func uplinkModes(uplinks []api.AttachedIface) string {
	var b strings.Builder
	for _, u := range uplinks {
		fmt.Fprintf(&b, "  %s: %s (%s)\n", u.Interface, u.Mode, u.ModeReason)
	}
	return b.String()
}

// hostSettings describes the host's netfilter and routing settings, and
// says plainly that ebpfnet needs none of them: an operator who sees
// FORWARD DROP or br_netfilter here should not go looking for a rule to add.
func hostSettings(h api.HostSettings) string {
	var b strings.Builder
	b.WriteString("Host (read from the daemon's namespace; ebpfnet does not depend on these settings:\n" +
		"it delivers every packet it accepts by redirect, never through the host's netfilter, and never changes them)\n")
	bn := h.BridgeNetfilter
	if bn.Active {
		fmt.Fprintf(&b, "  br_netfilter:   active, bridge-nf-call-iptables=%d bridge-nf-call-ip6tables=%d bridge-nf-call-arptables=%d\n",
			bit(bn.CallIPTables), bit(bn.CallIP6Tables), bit(bn.CallARPTables))
	} else {
		b.WriteString("  br_netfilter:   not active\n")
	}
	fmt.Fprintf(&b, "  FORWARD policy: IPv4 %s, IPv6 %s\n", policyWord(h.Forward.IPv4), policyWord(h.Forward.IPv6))
	for _, c := range h.Forward.Chains {
		fmt.Fprintf(&b, "    %s %s %s: %s (%s)\n", c.Family, c.Table, c.Chain, policyWord(c.Policy), c.Via)
	}
	if ct := h.Conntrack; ct.Active {
		fmt.Fprintf(&b, "  nf_conntrack:   active, %d of %d entries\n", ct.Count, ct.Max)
	} else {
		b.WriteString("  nf_conntrack:   not active\n")
	}
	fmt.Fprintf(&b, "  rp_filter:      all=%s default=%s\n", rpFilter(h.RPFilter.All), rpFilter(h.RPFilter.Default))
	for _, u := range h.Unread {
		fmt.Fprintf(&b, "  not read: %s\n", u)
	}
	return b.String()
}

func bit(on bool) int {
	if on {
		return 1
	}
	return 0
}

// policyWord writes a policy as iptables does (DROP, ACCEPT); none stays
// lower-case, being no policy at all.
func policyWord(p string) string {
	if p == api.PolicyNone || p == "" {
		return api.PolicyNone
	}
	return strings.ToUpper(p)
}

func rpFilter(v int) string {
	switch v {
	case 0:
		return "0 (off)"
	case 1:
		return "1 (strict)"
	case 2:
		return "2 (loose)"
	}
	return fmt.Sprint(v)
}

// otherPrograms describes, one line each, the programs sharing ebpfnet's
// hooks: the ones running first are what an operator must look at.
func otherPrograms(ifaces []api.AttachedIface) string {
	var b strings.Builder
	for _, i := range ifaces {
		for _, o := range i.Others {
			name := o.Name
			if name == "" {
				name = "(unnamed)"
			}
			if o.ID != 0 {
				name = fmt.Sprintf("%s (id %d, %s)", name, o.ID, o.Hook)
			} else {
				name = fmt.Sprintf("%s (%s)", name, o.Hook)
			}
			where := "after ebpfnet's program"
			if o.Before {
				where = "BEFORE ebpfnet's program: it can keep packets from it"
			}
			fmt.Fprintf(&b, "  %s %s: %s runs %s\n", i.Interface, o.Direction, name, where)
		}
	}
	return b.String()
}

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

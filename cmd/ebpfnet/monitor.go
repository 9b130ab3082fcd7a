package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func newMonitorCommand(c *cli) *cobra.Command {
	var f api.EventFilter
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream what the datapath does to packets: drops, translations, passes",
		Long: `monitor prints, live, one line per packet event of the datapath: when, which
program on which interface, the verdict (the drop reason for drops), the flow
as it came in and as it was translated, and the sandboxes and networks at its
ends. The datapath writes events only while a monitor runs, at most 10,000 a
second per CPU; the ones it could not write count as monitor_lost in
ebpfnet status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.checkOutput(); err != nil {
				return err
			}
			switch f.Type {
			case "drop", "trace", "all":
			default:
				return fmt.Errorf("invalid --type %q: want drop, trace or all", f.Type)
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			return c.client().Events(cmd.Context(), f, func(ev *api.Event) error {
				if ev == nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "listening for %s events (Ctrl-C to stop)\n", f.Type)
					return nil
				}
				if c.output == "json" {
					return enc.Encode(ev)
				}
				_, err := io.WriteString(out, eventLine(ev)+"\n")
				return err
			})
		},
	}
	cmd.Flags().StringVar(&f.Type, "type", "all", "events to show: drop, trace or all")
	cmd.Flags().StringVar(&f.Sandbox, "sandbox", "", "only events of this sandbox, at either end")
	cmd.Flags().StringVar(&f.Network, "network", "", "only events of this network, at either end")
	cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{"drop", "trace", "all"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("sandbox", c.completeSandboxes)
	cmd.RegisterFlagCompletionFunc("network", c.completeNetworks)
	c.addOutputFlag(cmd)
	return cmd
}

// eventLine is an event as one line, in the manner of cilium monitor:
//
//	12:00:01.000001 drop  from_container vethab12 drop_cross_network icmp 172.19.0.2:7 -> 172.20.0.2 [a/n1 <> b/n2]
func eventLine(ev *api.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s %s %s %s %s -> %s", ev.Time.Local().Format("15:04:05.000000"), ev.Type, ev.Program,
		ev.Interface, ev.Verdict, ev.Proto, ev.Before.Src, ev.Before.Dst)
	if ev.DstName != "" {
		fmt.Fprintf(&b, " (%s)", strings.TrimSuffix(ev.DstName, "."))
	}
	if ev.After != nil {
		fmt.Fprintf(&b, " translated %s -> %s", ev.After.Src, ev.After.Dst)
	}
	if ev.Sandbox != "" || ev.PeerSandbox != "" {
		fmt.Fprintf(&b, " [%s", endpointName(ev.Sandbox, ev.Network))
		if ev.PeerSandbox != "" {
			fmt.Fprintf(&b, " <> %s", endpointName(ev.PeerSandbox, ev.PeerNetwork))
		}
		b.WriteString("]")
	}
	return b.String()
}

func endpointName(sandbox, network string) string {
	if sandbox == "" {
		return "-"
	}
	return sandbox + "/" + network
}

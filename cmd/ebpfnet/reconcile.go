package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newReconcileCommand(c *cli) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Repair the kernel and the maps to match the state, or say what that would repair",
		Long: `Reconcile now, as the daemon does at start: rebuild missing bridges, veths
and namespaces, repair damaged endpoints, rewrite map entries that differ
from the state, and remove the interfaces and pins ebpfnet made that no
record names. With --dry-run, say what it would repair and change nothing;
it exits 1 when there is anything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun {
				return c.client().Reconcile(cmd.Context())
			}
			if err := c.checkOutput(); err != nil {
				return err
			}
			d, err := c.client().Drift(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if c.output == "json" {
				err = printJSON(out, d)
			} else {
				fmt.Fprintf(out, "map entries to write: %d\nleftover interfaces: %s\nstray pins: %s\n",
					d.MapEntries, strings.Join(d.Leftovers, " "), strings.Join(d.StrayPins, " "))
			}
			if err == nil && !d.Clean() {
				err = exitCode(1) // it said what, above
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what a reconcile would repair, and change nothing")
	c.addOutputFlag(cmd)
	return cmd
}

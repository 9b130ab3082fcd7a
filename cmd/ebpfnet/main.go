// Command ebpfnet is the container-networking dataplane's daemon and CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	err := root.ExecuteContext(ctx)
	if code, ok := err.(exitCode); ok {
		os.Exit(int(code))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ebpfnet:", err)
		os.Exit(1)
	}
}

// exitCode carries a command's exit status through cobra, silently.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// cli holds what every client command shares.
type cli struct {
	socket string
	output string
}

func (c *cli) client() *api.Client { return api.NewClient(c.socket) }

func newRootCommand() *cobra.Command {
	c := &cli{}
	root := &cobra.Command{
		Use:   "ebpfnet",
		Short: "Container networking with eBPF instead of iptables and docker-proxy",
		Long: `ebpfnet networks sandboxes (network namespaces) the way Docker networks
containers: networks, endpoints, IPAM and published ports, with eBPF programs
in place of iptables rules and proxy processes.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	socket := os.Getenv("EBPFNET_SOCKET")
	if socket == "" {
		socket = api.DefaultSocket
	}
	root.PersistentFlags().StringVar(&c.socket, "socket", socket, "daemon API socket (env EBPFNET_SOCKET)")
	root.AddCommand(
		newDaemonCommand(c),
		newNetworkCommand(c),
		newSandboxCommand(c),
		newExecCommand(c),
		newPublishCommand(c),
		newUnpublishCommand(c),
		newPortCommand(c),
		newRunCommand(c),
		newStatusCommand(c),
		newReconcileCommand(c),
		newMonitorCommand(c),
		newResetCommand(),
		newNSExecCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "ebpfnet", version) },
		},
	)
	return root
}

// addOutputFlag adds --output to a listing command.
func (c *cli) addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

func (c *cli) checkOutput() error {
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("invalid --output %q: want table or json", c.output)
	}
	return nil
}

// completeNetworks and completeSandboxes offer names from the daemon.
func (c *cli) completeNetworks(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	nets, err := c.client().Networks(cmd.Context())
	return completeNames(nets, err, func(n api.Network) string { return n.Name })
}

func (c *cli) completeSandboxes(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	sbs, err := c.client().Sandboxes(cmd.Context())
	return completeNames(sbs, err, func(s api.Sandbox) string { return s.Name })
}

func completeNames[T any](items []T, err error, name func(T) string) ([]string, cobra.ShellCompDirective) {
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, it := range items {
		names = append(names, name(it))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

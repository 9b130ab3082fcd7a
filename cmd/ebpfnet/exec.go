package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
)

func newExecCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "exec SANDBOX -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox",
		Long: `Run a command in a sandbox's network namespace, with the sandbox's
resolv.conf and hosts in place of the host's (like ip netns exec).`,
		Example: `  ebpfnet exec web -- ip addr
  ebpfnet exec web -- busybox ping -c1 172.19.5.11`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: c.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			sb, err := c.client().Sandbox(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return runIn(cmd.Context(), sb, args[1:])
		},
	}
}

func newRunCommand(c *cli) *cobra.Command {
	var (
		req     api.SandboxCreate
		publish []string
		remove  bool
	)
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARG...]",
		Short: "Create a sandbox and run a command in it",
		Example: `  ebpfnet run --name job --network appnet -- sh -c 'ip -4 addr show eth0'
  ebpfnet run --rm --name once -- busybox ping -c1 172.17.0.1`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Name == "" {
				return errors.New("run needs --name")
			}
			if err := sandboxRequest(&req, publish); err != nil {
				return err
			}
			client := c.client()
			sb, err := client.CreateSandbox(cmd.Context(), req)
			if err != nil {
				return err
			}
			runErr := runIn(cmd.Context(), sb, args)
			if remove {
				// Not the command's context: an interrupted run still cleans up.
				if err := client.RemoveSandbox(context.Background(), sb.Name, true); err != nil {
					return errors.Join(runErr, err)
				}
			}
			return runErr
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "name of the sandbox")
	cmd.Flags().BoolVar(&remove, "rm", false, "remove the sandbox when the command exits")
	sandboxFlags(cmd, &req, &publish)
	return cmd
}

// nsexecCommand is the hidden helper runIn starts inside the sandbox.
const nsexecCommand = "__nsexec"

// runIn runs argv in a sandbox and returns its exit status as exitCode. It
// starts this binary's nsexec helper from a thread inside the sandbox's
// namespace, in a private mount namespace where the helper can bind the
// sandbox's files over /etc without the host seeing them.
func runIn(ctx context.Context, sb api.Sandbox, argv []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(self, append([]string{nsexecCommand, sb.NetworkSettings.EtcDir, "--"}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if err := namespace.Do(sb.NetworkSettings.SandboxKey, cmd.Start); err != nil {
		return fmt.Errorf("start %s in sandbox %s: %w", argv[0], sb.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGTERM) })
	defer stop()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exitCode(exit.ExitCode())
	}
	return err
}

func newNSExecCommand() *cobra.Command {
	return &cobra.Command{
		Use:    nsexecCommand + " ETCDIR -- COMMAND [ARG...]",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			etcDir, argv := args[0], args[1:]
			if etcDir != "" {
				entries, _ := os.ReadDir(etcDir)
				for _, e := range entries {
					src, dst := filepath.Join(etcDir, e.Name()), filepath.Join("/etc", e.Name())
					if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
						return fmt.Errorf("bind %s over %s: %w", src, dst, err)
					}
				}
			}
			// A sysfs of the sandbox's namespace, so /sys/class/net lists its interfaces.
			if unix.Unmount("/sys", unix.MNT_DETACH) == nil {
				unix.Mount("sysfs", "/sys", "sysfs", 0, "")
			}
			path, err := exec.LookPath(argv[0])
			if err != nil {
				return err
			}
			return syscall.Exec(path, argv, os.Environ())
		},
	}
}

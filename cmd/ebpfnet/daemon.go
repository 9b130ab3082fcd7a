package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/apiengine"
	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/frontend/docker"
	"github.com/ebpfnet/ebpfnet/control/frontend/sandbox"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/loader"
)

// placement is what places one daemon instance: the engine's state, pins
// and namespace, and where its CLI sandboxes live. The daemon and reset
// share its flags.
type placement struct {
	cfg     engine.Config
	sandbox sandbox.Runtime
}

func (p *placement) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.cfg.StateDir, "state-dir", engine.DefaultStateDir, "directory of the state file")
	f.StringVar(&p.cfg.BPFFS, "bpffs", engine.DefaultBPFFS, "bpffs directory for pinned maps and links")
	f.StringVar(&p.cfg.NetNS, "netns", "", "network namespace (path) that the dataplane serves; default: the daemon's own")
	f.StringVar(&p.sandbox.NetnsDir, "netns-dir", sandbox.DefaultNetnsDir, "directory where sandbox namespaces are bound")
	f.StringVar(&p.sandbox.EtcDir, "etc-dir", sandbox.DefaultEtcDir, "directory of the sandboxes' resolv.conf and hosts")
}

func newDaemonCommand(c *cli) *cobra.Command {
	var (
		place        placement
		cfg          = &place.cfg
		attach       string
		uplinkModes  []string
		socketMode   string
		socketGroup  string
		logLevel     string
		natPorts     string
		ctTimeouts   []string
		dockerPlugin string
		// --cluster-store, --cluster-advertise and --cluster-store-opt,
		// Docker's flags
		clusterStore, clusterAdvertise string
		clusterStoreOpts               []string
		ctSourceMax                    uint32
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the ebpfnet daemon",
		Long: `Run the daemon: it keeps the state, serves the API on a unix socket and
keeps the kernel (bridges, veths, BPF programs and maps) in line with the
state. On start it creates the default network "bridge" (device ebpf0) if
it does not exist, and reconciles. The datapath keeps running when the
daemon stops, and so does the hold on published host ports: pinned
cgroup bind4 and bind6 hooks refuse every process of the namespace but
root's a bind of a published port (EPERM).`,
		Example: `  # the host's daemon
  sudo ebpfnet daemon &

  # an isolated instance serving a test namespace
  sudo ebpfnet daemon --netns /run/netns/testhost --socket /tmp/t.sock \
      --state-dir /tmp/t-state --bpffs /sys/fs/bpf/t`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mode, err := loader.ParseAttachMode(attach)
			if err != nil {
				return err
			}
			if cfg.UplinkModes, err = loader.ParseUplinkModes(uplinkModes); err != nil {
				return err
			}
			perm, err := strconv.ParseUint(socketMode, 8, 32)
			if err != nil || perm > 0o777 {
				return fmt.Errorf("invalid --socket-mode %q: want octal permissions such as 0600", socketMode)
			}
			gid, err := groupID(socketGroup)
			if err != nil {
				return err
			}
			if gid >= 0 && !cmd.Flags().Changed("socket-mode") {
				perm = 0o660 // as dockerd's -G: the group reads and writes
			}
			if natPorts != "" {
				first, end, err := ports.ParseRange(natPorts)
				if err != nil || first < 1024 {
					return fmt.Errorf("invalid --nat-ports %q: want a range such as 61000-65535, above 1023", natPorts)
				}
				cfg.NATPortMin, cfg.NATPortMax = first, end
			}
			if ctSourceMax > loader.MaxCTSourceMax {
				return fmt.Errorf("invalid --ct-source-max %d: want at most %d, the flows the conntrack table holds", ctSourceMax, loader.MaxCTSourceMax)
			}
			cfg.CTSourceMax = ctSourceMax
			if len(ctTimeouts) > 0 {
				t, err := loader.DefaultCTTimeouts()
				if err != nil {
					return err
				}
				for _, setting := range ctTimeouts {
					if err := loader.SetCTTimeout(&t, setting); err != nil {
						return err
					}
				}
				cfg.CTTimeouts = &t
			}
			if (clusterStore == "") != (clusterAdvertise == "") {
				return errors.New("--cluster-store and --cluster-advertise go together: give both to join a cluster, or neither")
			}
			if clusterStore == "" && len(clusterStoreOpts) > 0 {
				return errors.New("--cluster-store-opt needs --cluster-store")
			}
			if clusterStore != "" {
				endpoints, err := cluster.ParseStore(clusterStore)
				if err != nil {
					return err
				}
				advertise, err := netip.ParseAddr(clusterAdvertise)
				if err != nil {
					return fmt.Errorf("invalid --cluster-advertise %q: want this host's IP address on the network between the hosts", clusterAdvertise)
				}
				o, err := cluster.ParseStoreOptions(clusterStoreOpts)
				if err != nil {
					return err
				}
				cfg.Cluster = &cluster.Config{Endpoints: endpoints, Advertise: advertise, TLS: o.TLS, LeaseTTL: o.LeaseTTL, Heartbeat: o.Heartbeat}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", logLevel)
			}
			cfg.AttachMode = mode
			// A host daemon should stay small. GOGC and GOMEMLIMIT set by
			// hand take over.
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(gcPercent)
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				limitMemory(cmd.Context())
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			raiseFileLimit(cfg.Log)
			if cfg.Runtime, err = sandbox.NewRuntime(place.sandbox.NetnsDir, place.sandbox.EtcDir); err != nil {
				return err
			}
			eng, err := engine.New(*cfg)
			if err != nil {
				return err
			}
			defer eng.Close()
			ctx, stop := context.WithCancel(cmd.Context())
			defer stop()
			served := make(chan error, 2)
			apiEngine := apiengine.New(eng)
			go func() { served <- api.NewServer(apiEngine).Serve(ctx, c.socket, os.FileMode(perm), gid) }()
			if dockerPlugin != "" {
				go func() { served <- docker.Serve(ctx, dockerPlugin, apiEngine, cfg.Log) }()
			}
			cfg.Log.Info("ebpfnet daemon ready", "socket", c.socket, "docker-plugin", dockerPlugin, "version", version)
			err = <-served // the first to end ends both
			stop()
			if dockerPlugin != "" {
				err = errors.Join(err, <-served)
			}
			return err
		},
	}
	place.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&attach, "attach", string(loader.AttachAuto), "how TC programs attach: auto, tcx or clsact")
	f.StringArrayVar(&uplinkModes, "uplink-mode", nil, "the uplinks' datapath, MODE for every uplink or IFNAME=MODE for one (repeatable): tc (the default); xdp (a native XDP fast path for published and masqueraded flows, besides TC); auto (xdp only for drivers known to keep their offloads under XDP: i40e, ice, mlx5_core; tc for veth, virtio_net and every other; status says which and why)")
	f.StringVar(&cfg.ResolvConf, "resolv-conf", engine.DefaultResolvConf, "the host's resolv.conf: upstream DNS servers and search domains")
	f.StringArrayVar(&cfg.Uplinks, "uplink", nil, "host interface serving published ports and masquerade, with an Ethernet header (repeatable; default: every Ethernet interface with an IPv4 address, or an IPv6 one beyond the link, that ebpfnet did not create and that is no container's routed veth, holding host addresses alone)")
	f.StringVar(&socketMode, "socket-mode", "0600", "permissions of the API socket (0660 with --socket-group)")
	f.StringVar(&socketGroup, "socket-group", "", "group (name or ID) whose members may use the API socket, as dockerd's -G")
	states, _ := loader.CTTimeoutNames()
	f.StringVar(&natPorts, "nat-ports", "", "source port range of masqueraded flows that collide on their own port (default 61000-65535); must not overlap net.ipv4.ip_local_port_range")
	f.Uint32Var(&ctSourceMax, "ct-source-max", 0, "flows one source address may hold in the conntrack table of established flows (default 16384, an eighth of it); past it a source's flows work from the table of new flows, which a flood may evict")
	f.StringArrayVar(&ctTimeouts, "ct-timeout", nil, "conntrack lifetime of a state, STATE=SECONDS (repeatable); states: "+strings.Join(states, ", "))
	sourcesVar(f, &cfg.PublishSources, "publish-allow", "publish-deny", "every published port without lists of its own or of its network")
	f.BoolVar(&cfg.DefaultIPv6, "default-ipv6", false, "make the default network bridge dual-stack when it is first made (Docker's default-network-opts bridge=com.docker.network.enable_ipv6=true); its IPv6 subnet is a /64 of the host's ULA /48")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&clusterStore, "cluster-store", "", "join a cluster of hosts sharing overlay networks, through etcd: etcd://HOST:PORT[,HOST:PORT…] (Docker's flag)")
	f.StringArrayVar(&clusterStoreOpts, "cluster-store-opt", nil, "cluster store setting, KEY=VALUE, repeatable (Docker's flag): kv.cacertfile (the members' CA), kv.certfile and kv.keyfile (this host's client certificate) for TLS; discovery.ttl and discovery.heartbeat (this host's lease and its renewal, in seconds)")
	f.StringVar(&clusterAdvertise, "cluster-advertise", "", "this host's IP address on the network between the hosts, which the others reach it at (with --cluster-store)")
	f.StringVar(&dockerPlugin, "docker-plugin", docker.DefaultSocket, "socket of Docker's network and IPAM plugin, named after its file (ebpfnet.sock: -d ebpfnet); \"\" serves none")
	return cmd
}

func newResetCommand() *cobra.Command {
	var place placement
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Remove everything a stopped daemon created",
		Long: `Remove every sandbox namespace, interface, pinned map and link and the
state of a daemon instance. The daemon must be stopped.`,
		Example: `  sudo ebpfnet reset
  sudo ebpfnet reset --netns /run/netns/testhost --state-dir /tmp/t-state --bpffs /sys/fs/bpf/t`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			place.cfg.Runtime = &place.sandbox
			return engine.Reset(place.cfg)
		},
	}
	place.flags(cmd)
	return cmd
}

// raiseFileLimit raises the soft limit on open files to the hard one: the
// daemon holds two descriptors per sandbox (its resolver's sockets), and
// the soft limit systemd and shells give (1024) would stop a host at about
// 500 sandboxes. Go's runtime does the same for itself since 1.19; doing
// it here says so in the log, where the number of sandboxes a host can
// hold follows from it.
func raiseFileLimit(log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("read the limit on open files", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		raised := unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
			log.Warn("raise the limit on open files to the hard limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
			return
		}
	}
	log.Info("limit on open files", "RLIMIT_NOFILE", lim.Max, "per sandbox", engine.DescriptorsPerSandbox)
}

// groupID is the ID of group (a name or a number), -1 for "".
func groupID(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if id, err := strconv.Atoi(group); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("invalid --socket-group %q: no such group", group)
	}
	return strconv.Atoi(g.Gid)
}

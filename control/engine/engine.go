package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/clustersync"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/external"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/hostports"
	"github.com/ebpfnet/ebpfnet/control/hostsync"
	"github.com/ebpfnet/ebpfnet/control/monitor"
	"github.com/ebpfnet/ebpfnet/control/names"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/publications"
	"github.com/ebpfnet/ebpfnet/control/reconcile"
	"github.com/ebpfnet/ebpfnet/control/status"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/control/wiring"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config places one daemon instance. Every path can be moved, so several
// instances (one per test "host" namespace) run side by side.
type Config struct {
	StateDir string // the store lives here
	BPFFS    string // pins of maps and links
	NetNS    string // the dataplane's namespace: where bridges and host-side veths live
	// Runtime keeps the namespaces, processes and files of the sandboxes
	// CreateSandbox makes.
	Runtime     Runtime
	ResolvConf  string             // the host's resolv.conf: upstream servers and search domains
	AttachMode  loader.AttachMode  // how TC programs attach
	UplinkModes loader.UplinkModes // whether uplinks get the XDP fast path
	// Uplinks name the host interfaces that published ports are reachable
	// on and masqueraded flows leave through; empty means every interface
	// with an IPv4 address that ebpfnet did not create. Uplinks need an
	// Ethernet header: a named one without is refused.
	Uplinks []string
	// NATPortMin and NATPortMax bound the source ports of masqueraded
	// flows; zero keeps the default (61000-65535, or below the host's
	// ephemeral ports when those cover it).
	NATPortMin, NATPortMax uint16
	// CTTimeouts are the conntrack lifetimes per state; nil keeps
	// netfilter's defaults.
	CTTimeouts *loader.CTTimeouts
	// CTSourceMax is how many flows one source address may hold in ct;
	// zero keeps the datapath's default.
	CTSourceMax uint32
	// PublishSources are the source lists of the published ports without
	// lists of their own or of their network; none lets everyone in.
	PublishSources ports.Sources
	// DefaultIPv6 makes the default network bridge dual-stack when it is
	// made (Docker's default-network-opts with enable_ipv6): its IPv6
	// subnet is the first default IPv6 pool free of routes.
	DefaultIPv6 bool
	// Cluster, when set, makes this host a member of a cluster of hosts
	// sharing overlay networks through etcd (its Dial is the engine's).
	Cluster *cluster.Config
	Log     *slog.Logger
}

// Defaults for a daemon serving the host.
const (
	DefaultStateDir   = "/var/lib/ebpfnet"
	DefaultBPFFS      = "/sys/fs/bpf/ebpfnet"
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultBridge is the device of the default network.
	DefaultBridge = "ebpf0"
)

// Engine applies changes. All mutations are serialised.
type Engine struct {
	cfg   Config
	store *store.Store
	dp    *loader.Datapath
	maps  *maps.Maps
	log   *slog.Logger
	mu    sync.Mutex
	// hostSync keeps the uplinks, host_addrs and other runtimes' subnets
	// in line with the dataplane namespace; what it applied is guarded by
	// mu.
	hostSync *hostsync.Syncer
	// pools chooses the networks' address pools and serves a runtime's
	// IPAM requests.
	pools *pools.Pools
	// wiring makes the kernel objects of networks and endpoints.
	wiring *wiring.Wiring
	// external keeps the endpoints of runtimes that own their namespaces
	// (Docker, CNI).
	external *external.Endpoints
	// status reads the status and the metrics.
	status *status.Reader
	// reconciler repairs the kernel and the maps to match the store.
	reconciler  *reconcile.Reconciler
	stopWatcher func()
	stopReclaim chan struct{}
	resolver    *dns.Resolver
	dnsServers  *dns.Servers
	// names keeps the resolver's view and the sandboxes' files in step
	// with the store; its changes are made under mu.
	names *names.Names
	// drivers finds the driver of a network: drivers.For, but for tests
	// that wrap one to make it fail.
	drivers func(name string) (driver.Driver, bool)
	// publications publishes ports and holds their host ports; guarded
	// by mu.
	publications *publications.Publications
	// monitor hands datapath events to monitor clients (Events).
	monitor *monitor.Hub
	// host is a thread kept in the dataplane's namespace (inHost).
	host *namespace.Thread
	// cluster is this host's membership of a cluster, and clusterSync
	// follows it; both nil without one.
	cluster     *cluster.Cluster
	clusterSync *clustersync.Syncer
}

// New opens the state, loads the datapath, creates the predefined networks
// on the first start and reconciles the kernel with the store.
func New(cfg Config) (*Engine, error) {
	if cfg.NetNS == "" {
		cfg.NetNS = "/proc/self/ns/net"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if !namespace.IsNamespace(cfg.NetNS) {
		return nil, fmt.Errorf("dataplane namespace %s is not a network namespace", cfg.NetNS)
	}
	if cfg.Runtime == nil {
		return nil, errors.New("engine: no sandbox runtime configured")
	}
	if err := hostsync.CheckNamedUplinks(cfg.NetNS, cfg.Uplinks); err != nil {
		return nil, err
	}
	if err := cfg.PublishSources.Check(); err != nil {
		return nil, fmt.Errorf("the daemon's source lists: %w", err)
	}
	cookie, err := netnsCookie(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	cgroup, err := loader.Cgroup2Root()
	if err != nil {
		return nil, err
	}
	host, err := namespace.NewThread(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	err = host.Do(func() (err error) {
		lo, hi := hostports.EphemeralRange()
		cfg.NATPortMin, cfg.NATPortMax, err = hostports.NATRange(cfg.NATPortMin, cfg.NATPortMax, lo, hi)
		return err
	})
	if err != nil {
		host.Close()
		return nil, err
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		host.Close()
		return nil, err
	}
	dp, err := loader.Load(loader.Options{PinDir: cfg.BPFFS, Attach: cfg.AttachMode, NetnsCookie: cookie,
		NATPortMin: cfg.NATPortMin, NATPortMax: cfg.NATPortMax, CTTimeouts: cfg.CTTimeouts, CTSourceMax: cfg.CTSourceMax})
	if err != nil {
		st.Close()
		host.Close()
		return nil, err
	}
	for _, r := range dp.ReplacedMaps() {
		// Reconcile below refills the maps the store describes; what lived
		// only in the datapath (conntrack, counters) starts afresh.
		cfg.Log.Warn("replaced a pinned map of another layout: its entries are lost", "map", r.Name, "bpffs", cfg.BPFFS, "change", r.Reason)
	}
	for _, name := range dp.RetiredMaps() {
		cfg.Log.Info("removed a pinned map this version no longer uses", "map", name, "bpffs", cfg.BPFFS)
	}
	e := &Engine{cfg: cfg, store: st, dp: dp, maps: maps.New(&dp.Maps), log: cfg.Log, drivers: drivers.For, host: host}
	e.pools = pools.New(pools.Config{Store: st, Lock: &e.mu, Routes: e.hostRoutes})
	e.publications = publications.New(publications.Config{Maps: e.maps, InHost: e.inHost})
	e.wiring = wiring.New(wiring.Config{NetNS: cfg.NetNS, Datapath: dp, Maps: e.maps, InHost: e.inHost, Log: cfg.Log,
		Drivers: func(name string) (driver.Driver, bool) { return e.drivers(name) }})
	e.hostSync = hostsync.New(hostsync.Config{NetNS: cfg.NetNS, Uplinks: cfg.Uplinks, UplinkModes: cfg.UplinkModes,
		Datapath: dp, Maps: e.maps, InHost: e.inHost, Locked: e.locked, BeforeRead: func() { beforeHostRead() }, Log: cfg.Log})
	if e.monitor, err = monitor.New(e.maps, monitor.StoreNames{Store: e.store, InHost: e.inHost, Answers: e.wiring.EgressName}, cfg.Log); err != nil {
		e.Close()
		return nil, err
	}
	if cfg.Cluster != nil {
		c := *cfg.Cluster
		c.Log = cfg.Log
		// etcd is reached the way the host's own traffic leaves.
		c.Dial = func(ctx context.Context, address string) (net.Conn, error) { return e.dialInHost(ctx, "tcp", address) }
		e.store.View(func(tx *store.Tx) error { c.Lease = tx.ClusterLease(); return nil })
		if e.cluster, err = cluster.Join(c); err != nil {
			e.Close()
			return nil, err
		}
		e.clusterSync = clustersync.New(clustersync.Config{Cluster: e.cluster, Store: e.store, Maps: e.maps, Locked: e.locked,
			Mirror: e.mirrorOverlay, DropMirror: e.dropMirror, InHost: e.inHost, PeersRecheck: c.PeersRecheck, Log: e.log,
			FollowRemote: func(changed map[string][]dns.Record) { e.names.Follow(store.Changes{}, changed) }}, c.Lease)
	}
	if err := e.storeNamespacePaths(); err != nil {
		e.Close()
		return nil, err
	}
	e.resolver = dns.NewResolver(e.dialUpstream)
	e.resolver.LearnWith(e.wiring.LearnEgress)
	e.dnsServers = dns.NewServers(e.resolver)
	e.names = names.New(names.Config{Store: e.store, ResolvConf: cfg.ResolvConf, WriteFiles: cfg.Runtime.WriteFiles,
		Resolver: e.resolver, Servers: e.dnsServers, Remote: e.remoteRecords, Exclusive: e.locked, Log: e.log})
	if err := dp.AttachSockets(cgroup); err != nil {
		e.Close()
		return nil, err
	}
	e.external = external.New(external.Config{Store: e.store, Wiring: e.wiring, Maps: e.maps, Lock: &e.mu,
		Update: e.update, Commit: e.commit, AddNetwork: e.addChained, Publish: e.publications.Add, ForgetPorts: e.publications.Forget,
		ClusterAddress: e.externalOverlayAddress, Removed: e.nudgeCluster})
	e.status = status.New(status.Config{Store: e.store, Datapath: dp, Maps: e.maps, Monitor: e.monitor, Uplinks: e.hostSync.Uplinks,
		InHost: e.inHost, Cluster: e.cluster, Conflicts: e.clusterConflicts, Reclaimed: e.wiring.Reclaimed, DNS: e.resolver.Stats})
	e.reconciler = reconcile.New(reconcile.Config{Store: e.store, Wiring: e.wiring, HostSync: e.hostSync, Datapath: dp,
		Maps: e.maps, Namespaces: cfg.Runtime, NetNS: cfg.NetNS, InHost: e.inHost, Locked: e.locked, Resync: e.names.Resync,
		RecheckPeers: e.recheckPeers, DefaultSources: maps.Sources(cfg.PublishSources), BeforeMapsRead: func() { beforeMapsRead() }, AfterHostRead: func(v *hostsync.View) { afterHostRead(v) },
		Log: e.log})
	if err := e.removeOrphanedNamespaces(); err != nil {
		e.log.Warn("remove the namespaces of changes a crash ended", "err", err)
	}
	if err := e.ensurePredefined(); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.Reconcile(); err != nil {
		e.log.Warn("reconcile on start left work undone", "err", err)
	}
	if e.stopWatcher, err = e.hostSync.Watch(); err != nil {
		e.Close()
		return nil, err
	}
	e.stopReclaim = make(chan struct{})
	go e.wiring.ReclaimConntrack(e.stopReclaim)
	if e.clusterSync != nil {
		e.clusterSync.Start()
	}
	return e, nil
}

// The tests hold a read of the host as it begins (beforeHostRead), see
// what a reconcile read (afterHostRead) and change records as it plans
// (beforeMapsRead).
var (
	beforeHostRead = func() {}
	afterHostRead  = func(*hostsync.View) {}
	beforeMapsRead = func() {}
)

// Status reads the counters, map fill levels and attachments.
func (e *Engine) Status() (api.Status, error) { return e.status.Status() }

// Counters reads the per-verdict counters (for metrics).
func (e *Engine) Counters() ([]api.Counter, error) { return e.status.Counters() }

// Metrics reads conntrack, the NAT ports in use and the embedded DNS's
// counts, for the daemon's Prometheus metrics.
func (e *Engine) Metrics() (api.Metrics, error) { return e.status.Metrics() }

// clusterConflicts are the conflicts the cluster's follower keeps.
func (e *Engine) clusterConflicts() []string {
	if e.clusterSync == nil {
		return nil
	}
	return e.clusterSync.Conflicts()
}

// Pools are the address pools: a runtime's IPAM requests them and their
// addresses on their own.
func (e *Engine) Pools() *pools.Pools { return e.pools }

// External is the endpoints of runtimes that own their namespaces.
func (e *Engine) External() *external.Endpoints { return e.external }

// Reconcile moves the kernel and the maps to what the store holds
// (package reconcile).
func (e *Engine) Reconcile() error { return e.reconciler.Run() }

// Drift is what a reconcile would repair now; it changes nothing.
func (e *Engine) Drift() (reconcile.Drift, error) { return e.reconciler.Drift() }

// locked runs fn under the engine's lock.
func (e *Engine) locked(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn()
}

// recheckPeers writes every overlay peer again, on a host in a cluster.
func (e *Engine) recheckPeers() {
	if e.clusterSync != nil {
		e.clusterSync.RecheckPeers()
	}
}

// Close releases the store and the loaded objects; the datapath stays.
func (e *Engine) Close() error {
	if e.names != nil {
		e.names.Close()
	}
	if e.stopWatcher != nil {
		e.stopWatcher()
	}
	if e.stopReclaim != nil {
		close(e.stopReclaim)
	}
	if e.dnsServers != nil {
		e.dnsServers.Close()
	}
	leave := e.leaveCluster()
	if e.wiring != nil {
		e.wiring.Wait() // its flushes use the maps about to be closed
	}
	var monitorErr error
	if e.monitor != nil {
		monitorErr = e.monitor.Close()
	}
	err := errors.Join(monitorErr, e.dp.Close(), e.store.Close(), leave)
	e.host.Close()
	return err
}

// netnsCookie identifies a network namespace the way the socket hooks see it.
func netnsCookie(path string) (cookie uint64, err error) {
	err = namespace.Do(path, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read the cookie of namespace %s: %w (needs Linux 5.14)", path, err)
	}
	return cookie, nil
}

// inHost runs fn in the dataplane's namespace, on the engine's thread
// there: entering the namespace afresh would cost a publish a tenth of its
// time.
func (e *Engine) inHost(fn func() error) error { return e.host.Do(fn) }

// storeNamespacePaths writes into the sandbox records stored before they
// held the path of their namespace where the runtime keeps it.
func (e *Engine) storeNamespacePaths() error {
	return e.store.Update(func(tx *store.Tx) error {
		sbs, err := tx.Sandboxes()
		if err != nil {
			return err
		}
		for _, sb := range sbs {
			if sb.NetNS == "" && !sb.External() {
				sb.NetNS = namespaceOf(e.cfg.Runtime, sb)
				if err := tx.PutSandbox(sb); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// update runs change in a store transaction. When change or the commit
// fails, the undo steps change registered are run, so the kernel is left as
// it was; when it succeeds, names and files follow the records it changed.
func (e *Engine) update(change func(tx *store.Tx, undo *store.Undo) error) error {
	var undo store.Undo
	ch, err := e.store.Change(func(tx *store.Tx) error { return change(tx, &undo) })
	if err != nil {
		undo.Run(e.log)
		e.publications.Reset() // it may hold what the failed change added
		return err
	}
	failpoint.Hit("engine.names") // a crash alone: the names follow at the next start
	e.names.Follow(ch, nil)
	return nil
}

// commit is update for removals: a store transaction whose kernel
// teardown, after it, is best effort. Names and files follow the records
// it changed.
func (e *Engine) commit(change func(tx *store.Tx) error) error {
	ch, err := e.store.Change(change)
	if err != nil {
		return err
	}
	e.names.Follow(ch, nil)
	return nil
}

// View runs fn on a read-only view of the store, for read models.
func (e *Engine) View(fn func(*store.Tx) error) error { return e.store.View(fn) }

// Snapshot is every network and sandbox the store holds.
func (e *Engine) Snapshot() ([]store.Network, []store.Sandbox, error) { return e.store.Snapshot() }

// FilesDir is where sb's hosts and resolv.conf are, "" for a runtime's
// sandbox, which has none of ebpfnet's.
func (e *Engine) FilesDir(sb store.Sandbox) string {
	if sb.External() {
		return ""
	}
	return e.cfg.Runtime.FilesDir(sb)
}

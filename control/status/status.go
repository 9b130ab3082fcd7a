// Package status reads what the daemon's status and metrics show: the
// datapath's counters and map fill, the programs on every endpoint and
// uplink (and the other programs there), the host's netfilter and
// sysctls, the cluster, conntrack and the embedded DNS's counts. It reads
// and never changes anything.
package status

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/hostsettings"
	"github.com/ebpfnet/ebpfnet/control/monitor"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/loader"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Config is what a Reader reads.
type Config struct {
	Store    *store.Store
	Datapath *loader.Datapath
	Maps     *dpmaps.Maps
	Monitor  *monitor.Hub
	// Uplinks are the uplinks chosen and their addresses, copied under
	// the engine's lock.
	Uplinks func() (map[string]loader.UplinkChoice, map[netip.Addr]string)
	// InHost runs fn in the dataplane's namespace.
	InHost func(fn func() error) error
	// Cluster is this host's membership, nil outside a cluster; Conflicts
	// are the conflicts its follower keeps.
	Cluster   *cluster.Cluster
	Conflicts func() []string
	// Reclaimed counts the expired conntrack entries reclaimed; DNS is the
	// embedded DNS's counts.
	Reclaimed func() uint64
	DNS       func() dns.Stats
}

// Reader reads the status.
type Reader struct{ cfg Config }

// New is a reader of cfg.
func New(cfg Config) *Reader { return &Reader{cfg: cfg} }

// Status reads the counters, map fill levels and attachments.
func (r *Reader) Status() (api.Status, error) {
	var st api.Status
	var err error
	if st.Counters, err = r.Counters(); err != nil {
		return st, err
	}
	fills, err := r.cfg.Maps.Fills()
	if err != nil {
		return st, err
	}
	for _, f := range fills {
		st.Maps = append(st.Maps, api.Fill(f))
		if f.Map == "held_ports" {
			st.HeldPorts = f.Entries
		}
	}
	if st.Monitoring, err = r.cfg.Monitor.Monitoring(); err != nil {
		return st, err
	}
	// Before reading the store: a writer holding the engine's lock may
	// wait for readers.
	choices, _ := r.cfg.Uplinks()
	uplinks := slices.Sorted(maps.Keys(choices))
	nets, sbs, err := r.cfg.Store.Snapshot()
	if err != nil {
		return st, err
	}
	byID := store.ByID(nets)
	if st.BackendFlows, err = r.backendFlows(sbs); err != nil {
		return st, err
	}
	err = r.cfg.InHost(func() error {
		var errs []error
		attached := func(a api.AttachedIface) api.AttachedIface {
			a.Attach = string(r.cfg.Datapath.Attachment(a.Interface))
			others, err := r.cfg.Datapath.OtherPrograms(a.Interface)
			errs = append(errs, err)
			for _, o := range others {
				a.Others = append(a.Others, api.OtherProgram{Direction: o.Direction, Before: o.Before, Hook: o.Hook, ID: uint32(o.ID), Name: o.Name})
			}
			return a
		}
		for _, sb := range sbs {
			for _, ep := range sb.Endpoints {
				if ep.HostSide != "" {
					st.Endpoints = append(st.Endpoints, attached(api.AttachedIface{Interface: ep.HostSide, Sandbox: sb.Name,
						Network: byID[ep.NetworkID].Name}))
				}
			}
		}
		for _, name := range uplinks {
			a := attached(api.AttachedIface{Interface: name})
			if l, err := netlink.LinkByName(name); err == nil {
				a.XDP = r.cfg.Datapath.HasXDP(name, l.Attrs().Index)
			}
			a.Mode, a.ModeReason = uplinkMode(choices[name], a.XDP)
			st.Uplinks = append(st.Uplinks, a)
		}
		return errors.Join(errs...)
	})
	// Read where the datapath runs: sysctls and netfilter are per namespace.
	ctx, cancel := context.WithTimeout(context.Background(), hostSettingsTimeout)
	defer cancel()
	err = errors.Join(err, r.cfg.InHost(func() error {
		st.Host = hostsettings.New().Read(ctx)
		return nil
	}))
	st.SocketHooks = r.cfg.Datapath.SocketHooks()
	st.Cluster = r.clusterStatus()
	return st, err
}

// backendFlows reads the new flows of every balanced publication's
// backends and names the sandbox each backend's address is in.
func (r *Reader) backendFlows(sbs []store.Sandbox) ([]api.BackendFlows, error) {
	flows, err := r.cfg.Maps.BackendFlows()
	if err != nil {
		return nil, err
	}
	sandboxOf := map[netip.Addr]string{}
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			for _, a := range ep.Addrs() {
				sandboxOf[a] = sb.Name
			}
		}
	}
	out := make([]api.BackendFlows, 0, len(flows))
	for _, f := range flows {
		out = append(out, api.BackendFlows{Backend: f.Backend.String(), Sandbox: sandboxOf[f.Backend.Addr], Proto: f.Proto, Flows: f.Flows})
	}
	slices.SortFunc(out, func(a, b api.BackendFlows) int {
		return cmp.Or(cmp.Compare(a.Sandbox, b.Sandbox), cmp.Compare(a.Backend, b.Backend), cmp.Compare(a.Proto, b.Proto))
	})
	return out, nil
}

// hostSettingsTimeout bounds the commands reading the host's netfilter
// (nft), which run on the host thread that every change needs too.
const hostSettingsTimeout = 5 * time.Second

// uplinkMode says what runs on an uplink (it has XDP or not) and why,
// after choice.
func uplinkMode(choice loader.UplinkChoice, xdp bool) (mode, reason string) {
	mode = string(loader.UplinkTC)
	if xdp {
		mode = string(loader.UplinkXDP)
	}
	reason = choice.Reason
	if choice.Auto {
		reason = "auto: " + reason
	}
	if choice.Mode == loader.UplinkXDP && !xdp {
		// The driver refused the program (an MTU above one buffer, LRO
		// on), or attaching failed: the daemon's log says which when
		// it was asked for.
		if choice.Auto {
			return mode, reason + ", but the driver refused it here"
		}
		return mode, "xdp asked for, but not attached: see the daemon's log"
	}
	return mode, reason
}

// clusterStatus is the membership as etcd has it; a store out of reach
// is part of the status, not a failure of it.
func (r *Reader) clusterStatus() *api.ClusterStatus {
	if r.cfg.Cluster == nil {
		return nil
	}
	cs, err := r.cfg.Cluster.Status(context.Background())
	v := &api.ClusterStatus{Store: cs.Endpoints, Advertise: cs.Advertise, Lease: cs.Lease, LeaseTTL: cs.LeaseTTL}
	for _, h := range cs.Hosts {
		v.Hosts = append(v.Hosts, api.PeerHost{Advertise: h.Advertise, Hostname: h.Hostname})
	}
	if err != nil {
		v.Error = err.Error()
	}
	v.Conflicts = r.cfg.Conflicts()
	return v
}

// Counters reads the per-verdict counters (for metrics).
func (r *Reader) Counters() ([]api.Counter, error) {
	counters, err := r.cfg.Maps.Counters()
	out := make([]api.Counter, 0, len(counters))
	for _, c := range counters {
		out = append(out, api.Counter(c))
	}
	return out, err
}

// Metrics reads conntrack, the NAT ports in use, the new flows of the
// balanced publications' backends and the embedded DNS's counts, for the daemon's Prometheus metrics. Conntrack is walked
// without the engine's lock, so a scrape never holds up a change.
func (r *Reader) Metrics() (api.Metrics, error) {
	_, byAddr := r.cfg.Uplinks()
	summary, err := r.cfg.Maps.SummarizeConntrack(slices.Collect(maps.Keys(byAddr)), dpmaps.Now())
	if err != nil {
		return api.Metrics{}, err
	}
	m := api.Metrics{Reclaimed: r.cfg.Reclaimed(), DNS: api.DNSStats(r.cfg.DNS())}
	for c, n := range summary.Entries {
		m.Conntrack = append(m.Conntrack, api.ConntrackEntries{State: c.State, Proto: c.Proto, Assured: c.Assured, Entries: n})
	}
	for a, n := range summary.NATPorts {
		m.NATPorts = append(m.NATPorts, api.NATPortsInUse{Uplink: byAddr[a], Addr: a.String(), Ports: n})
	}
	flows, err := r.cfg.Maps.BackendFlows()
	for _, f := range flows {
		m.BackendFlows = append(m.BackendFlows, api.BackendFlows{Backend: f.Backend.String(), Proto: f.Proto, Flows: f.Flows})
	}
	return m, err
}

package engine

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/hostsettings"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/loader"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Status reads the counters, map fill levels and attachments.
func (e *Engine) Status() (api.Status, error) {
	var st api.Status
	var err error
	if st.Counters, err = e.Counters(); err != nil {
		return st, err
	}
	fills, err := e.maps.Fills()
	if err != nil {
		return st, err
	}
	for _, f := range fills {
		st.Maps = append(st.Maps, api.Fill(f))
		if f.Map == "held_ports" {
			st.HeldPorts = f.Entries
		}
	}
	if st.Monitoring, err = e.monitor.Monitoring(); err != nil {
		return st, err
	}
	// Before reading the store: a writer holding e.mu may wait for readers.
	e.mu.Lock()
	choices, _ := e.hostSync.Uplinks()
	choices = maps.Clone(choices)
	e.mu.Unlock()
	uplinks := slices.Sorted(maps.Keys(choices))
	nets, sbs, err := e.store.Snapshot()
	if err != nil {
		return st, err
	}
	byID := store.ByID(nets)
	err = e.inHost(func() error {
		var errs []error
		attached := func(a api.AttachedIface) api.AttachedIface {
			a.Attach = string(e.dp.Attachment(a.Interface))
			others, err := e.dp.OtherPrograms(a.Interface)
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
				a.XDP = e.dp.HasXDP(name, l.Attrs().Index)
			}
			a.Mode, a.ModeReason = uplinkMode(choices[name], a.XDP)
			st.Uplinks = append(st.Uplinks, a)
		}
		return errors.Join(errs...)
	})
	// Read where the datapath runs: sysctls and netfilter are per namespace.
	ctx, cancel := context.WithTimeout(context.Background(), hostSettingsTimeout)
	defer cancel()
	err = errors.Join(err, e.inHost(func() error {
		st.Host = hostsettings.New().Read(ctx)
		return nil
	}))
	st.SocketHooks = e.dp.SocketHooks()
	st.Cluster = e.clusterStatus()
	return st, err
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
func (e *Engine) clusterStatus() *api.ClusterStatus {
	if e.cluster == nil {
		return nil
	}
	cs, err := e.cluster.Status(context.Background())
	v := &api.ClusterStatus{Store: cs.Endpoints, Advertise: cs.Advertise, Lease: cs.Lease, LeaseTTL: cs.LeaseTTL}
	for _, h := range cs.Hosts {
		v.Hosts = append(v.Hosts, api.PeerHost{Advertise: h.Advertise, Hostname: h.Hostname})
	}
	if err != nil {
		v.Error = err.Error()
	}
	v.Conflicts = e.clusterSync.Conflicts()
	return v
}

// Counters reads the per-verdict counters (for metrics).
func (e *Engine) Counters() ([]api.Counter, error) {
	counters, err := e.maps.Counters()
	out := make([]api.Counter, 0, len(counters))
	for _, c := range counters {
		out = append(out, api.Counter(c))
	}
	return out, err
}

// Metrics reads conntrack, the NAT ports in use and the embedded DNS's
// counts, for the daemon's Prometheus metrics. Conntrack is walked
// without e.mu, so a scrape never holds up a change.
func (e *Engine) Metrics() (api.Metrics, error) {
	e.mu.Lock()
	_, byAddr := e.hostSync.Uplinks()
	byAddr = maps.Clone(byAddr)
	e.mu.Unlock()
	summary, err := e.maps.SummarizeConntrack(slices.Collect(maps.Keys(byAddr)), dpmaps.Now())
	if err != nil {
		return api.Metrics{}, err
	}
	m := api.Metrics{Reclaimed: e.wiring.Reclaimed(), DNS: api.DNSStats(e.resolver.Stats())}
	for c, n := range summary.Entries {
		m.Conntrack = append(m.Conntrack, api.ConntrackEntries{State: c.State, Proto: c.Proto, Assured: c.Assured, Entries: n})
	}
	for a, n := range summary.NATPorts {
		m.NATPorts = append(m.NATPorts, api.NATPortsInUse{Uplink: byAddr[a], Addr: a.String(), Ports: n})
	}
	return m, nil
}

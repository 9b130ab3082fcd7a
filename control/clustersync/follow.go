package clustersync

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// follow is Apply's local part, under the engine's lock: it returns the
// requests to make of the store, and what failed here.
func (s *Syncer) follow(ctx context.Context, st cluster.State) (requests []func() error, errs []error, stale bool) {
	c := s.cfg.Cluster
	if st.Revision < c.Written() {
		// Read before a change this host made meanwhile (a network
		// created or removed here): it would undo the change here until
		// the next state. The change's own state follows.
		return nil, nil, true
	}
	s.recordLease()
	local, onNetwork, err := s.overlayState()
	if err != nil {
		return nil, []error{fmt.Errorf("read state for the cluster: %w", err)}, false
	}
	// Peers are written where they changed; all of them now and then,
	// which puts back what else removed from the devices.
	recheck := time.Since(s.peersChecked) > s.cfg.PeersRecheck
	if recheck {
		s.peers, s.peersChecked = map[string][]overlay.Peer{}, time.Now()
	}
	// Mirrors of removed networks go first: a network created in one's
	// stead (its name, its subnet, its VNI) would find it in the way.
	for id, n := range local {
		if !slices.ContainsFunc(st.Networks, func(cn cluster.Network) bool { return cn.ID == id }) {
			errs = append(errs, s.cfg.DropMirror(n))
			delete(s.peers, id)
			delete(local, id)
		}
	}
	for _, cn := range st.Networks {
		if _, ok := local[cn.ID]; !ok {
			n, err := s.cfg.Mirror(cn)
			errs = append(errs, err)
			if err == nil {
				local[n.ID] = n
			}
		}
	}
	mine := map[string]store.Endpoint{} // this host's overlay endpoints, by ID
	for _, eps := range onNetwork {
		for _, ep := range eps {
			mine[ep.ID] = ep.Endpoint
		}
	}
	var vnis []uint32
	for _, n := range local {
		vnis = append(vnis, n.VNI)
	}
	var vteps []netip.Addr
	for _, h := range st.Hosts {
		vteps = append(vteps, h.Advertise)
	}
	s.logHosts(st.Hosts)
	errs = append(errs, s.cfg.Maps.SyncOverlay(vnis, vteps))
	remote := map[string][]cluster.Address{}
	for id, n := range local {
		var peers []overlay.Peer
		held := map[string]bool{}
		for _, a := range st.Addresses[id] {
			if a.Host != c.Advertise() {
				peers = append(peers, overlay.Peer{Addr: a.Addr, MAC: driver.MACFor(a.Addr), VTEP: a.Host})
				remote[id] = append(remote[id], a)
				continue
			}
			held[a.Owner] = true
			if ep, ok := mine[a.Owner]; (!ok || ep.Addr != a.Addr) && !s.isTaking(a.Owner) {
				requests = append(requests, func() error {
					if err := c.ReleaseAddress(ctx, id, a.Addr, a.Owner); err != nil {
						return fmt.Errorf("network %s: %w", n.Name, err)
					}
					return nil
				})
			}
		}
		for _, ep := range onNetwork[id] {
			if !held[ep.ID] {
				// The lease lapsed while etcd was out of reach: take the
				// address again, unless another host has it by now.
				retake := named(cluster.Address{Owner: ep.ID, Addr: ep.Addr}, ep.sandbox, ep.Aliases)
				requests = append(requests, func() error {
					if _, err := c.AllocateAddress(ctx, id, retake); err != nil {
						return fmt.Errorf("sandbox %s, network %s: take %s again: %w", ep.sandbox.Name, n.Name, ep.Addr, err)
					}
					return nil
				})
			}
		}
		errs = append(errs, s.syncPeers(n, peers, recheck))
	}
	// Only the networks whose remote endpoints changed are named again.
	changed := map[string][]dns.Record{}
	for id, n := range local {
		if !reflect.DeepEqual(s.remote[id], remote[id]) {
			changed[id] = remoteRecords(n, remote[id])
		}
	}
	for id := range s.remote {
		if _, ok := local[id]; !ok {
			changed[id] = nil
		}
	}
	s.remote = remote
	s.cfg.FollowRemote(changed)
	return requests, errs, false
}

// sandboxEndpoint is an endpoint and its sandbox.
type sandboxEndpoint struct {
	store.Endpoint
	sandbox store.Sandbox
}

// overlayState reads this host's overlay networks, by ID, and the
// endpoints on each: the sandboxes on other networks are not read, so
// that following the cluster costs what its networks hold here.
func (s *Syncer) overlayState() (local map[string]store.Network, onNetwork map[string][]sandboxEndpoint, err error) {
	local, onNetwork = map[string]store.Network{}, map[string][]sandboxEndpoint{}
	err = s.cfg.Store.View(func(tx *store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		for _, n := range nets {
			if !drivers.TraitsOf(n).Global {
				continue
			}
			local[n.ID] = n
			for _, name := range tx.NetworkUsers(n.ID) {
				sb, _, err := tx.SandboxNamed(name)
				if err != nil {
					return err
				}
				for _, ep := range sb.Endpoints {
					if ep.NetworkID == n.ID {
						onNetwork[n.ID] = append(onNetwork[n.ID], sandboxEndpoint{ep, sb})
					}
				}
			}
		}
		return nil
	})
	return local, onNetwork, err
}

// logHosts says which hosts joined the cluster and which left it (their
// lease ended: their endpoints go with them) since the last state.
func (s *Syncer) logHosts(hosts []cluster.Host) {
	self := s.cfg.Cluster.Advertise()
	now := map[netip.Addr]cluster.Host{}
	for _, h := range hosts {
		now[h.Advertise] = h
		if _, ok := s.hosts[h.Advertise]; !ok && h.Advertise != self {
			s.cfg.Log.Info("host in the cluster", "advertise", h.Advertise, "hostname", h.Hostname)
		}
	}
	for a, h := range s.hosts {
		if _, ok := now[a]; !ok && a != self {
			s.cfg.Log.Warn("host left the cluster: its endpoints are dropped", "advertise", a, "hostname", h.Hostname)
		}
	}
	s.hosts = now
}

// syncPeers writes the peers of overlay network n to its VXLAN device
// unless they are those last written.
func (s *Syncer) syncPeers(n store.Network, peers []overlay.Peer, recheck bool) error {
	if last, ok := s.peers[n.ID]; ok && !recheck && slices.EqualFunc(last, peers, func(a, b overlay.Peer) bool {
		return a.Addr == b.Addr && a.VTEP == b.VTEP // the MAC follows from the address
	}) {
		return nil
	}
	delete(s.peers, n.ID)
	if err := s.cfg.InHost(func() error { return overlay.SyncPeers(n, peers) }); err != nil {
		return err
	}
	s.peers[n.ID] = peers
	return nil
}

// recordLease keeps the cluster lease in the store, for a restarted
// daemon to keep (cluster.Config.Lease).
func (s *Syncer) recordLease() {
	lease := s.cfg.Cluster.Lease()
	if lease == s.lease || lease == 0 { // 0: none now, the last one may come back
		return
	}
	err := s.cfg.Store.Update(func(tx *store.Tx) error { return tx.PutClusterLease(lease) })
	if err != nil {
		s.cfg.Log.Warn("record the cluster lease", "err", err)
		return
	}
	s.lease = lease
}

// RemoteRecords are the names of other hosts' endpoints on overlay
// network n, for the resolvers. Callers hold the engine's lock.
func (s *Syncer) RemoteRecords(n store.Network) []dns.Record { return remoteRecords(n, s.remote[n.ID]) }

// remoteRecords are the names of the endpoints of other hosts' addresses
// on overlay network n.
func remoteRecords(n store.Network, addrs []cluster.Address) []dns.Record {
	var out []dns.Record
	for _, a := range addrs {
		// Another writer's record may lack names: it names nothing.
		names := slices.DeleteFunc(append([]string{a.Sandbox}, a.Aliases...), func(s string) bool { return s == "" })
		if len(names) > 0 {
			// Owned by the endpoint: another host's sandbox may have the
			// name of one here.
			out = append(out, dns.Record{Network: n.ID, NetworkName: n.Name, Owner: "endpoint " + a.Owner, Names: names, Addr: a.Addr})
		}
	}
	return out
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Overlay networks live in the cluster store; each host keeps a copy of
// every one in its own store (a "mirror"), with a local pool holding the
// addresses of its own endpoints, so that everything a bridge network has
// (sandboxes, names, publishing, the maps) works on it unchanged. The
// cluster is the authority: mirrors follow it (applyCluster), and
// addresses are taken there before they are written here.

// errNoCluster is the answer to overlay work on a host outside a cluster.
var errNoCluster = errdefs.Invalidf("overlay networks need a cluster: start the daemon with --cluster-store and --cluster-advertise")

// createOverlay creates an overlay network in the cluster and its mirror
// here; a mirror that cannot be made takes the network out of the
// cluster again. Callers hold e.mu.
func (e *Engine) createOverlay(n store.Network, spec NetworkSpec) (store.Network, error) {
	if e.cluster == nil {
		return n, errNoCluster
	}
	switch {
	case n.EnableIPv6:
		return n, errdefs.Invalidf("overlay network %s: overlay networks are IPv4 only", n.Name)
	case spec.IPv4.IPRange.IsValid():
		return n, errdefs.Invalidf("ip range %s: overlay networks hand out their whole subnet", spec.IPv4.IPRange)
	case spec.IPv4.ID != "" || spec.Frontend != "":
		return n, errdefs.Invalidf("overlay network %s: its addresses are the cluster's, not an IPAM driver's", n.Name)
	}
	// A subnet the cluster chooses keeps clear of this host's routes and
	// networks, as a bridge network's does (choosePool).
	var avoid []netip.Prefix
	err := e.store.View(func(tx *store.Tx) (err error) {
		if _, err := tx.Network(n.Name); err == nil {
			return errdefs.Conflictf("network %s already exists", n.Name)
		}
		avoid, err = e.usedSubnets(tx, netlink.FAMILY_V4)
		return err
	})
	if err != nil {
		return n, err
	}
	ctx := context.Background()
	cn, err := e.cluster.CreateNetwork(ctx, cluster.NetworkSpec{ID: n.ID, Name: n.Name, Subnet: spec.IPv4.Subnet,
		Gateway: spec.IPv4.Gateway, Internal: n.Internal, Attachable: n.Attachable, Labels: n.Labels, Options: n.Options, Avoid: avoid})
	if err != nil {
		return n, err
	}
	mirror, err := e.mirrorOverlay(cn)
	if err != nil {
		return n, errors.Join(err, e.cluster.RemoveNetwork(ctx, cn.ID))
	}
	return mirror, nil
}

// mirrorOverlay makes the local copy of an overlay network: its record,
// its pool, its bridge and VXLAN device, its map entries. Callers hold
// e.mu.
func (e *Engine) mirrorOverlay(cn cluster.Network) (store.Network, error) {
	n := store.Network{ID: cn.ID, Name: cn.Name, Driver: store.DriverOverlay, Created: cn.Created, ICC: true,
		Masquerade: true, Internal: cn.Internal, Attachable: cn.Attachable, Labels: cn.Labels, VNI: cn.VNI, VTEP: e.cluster.Advertise()}
	if err := (overlay.Driver{}).Configure(&n, cn.Options); err != nil {
		return n, fmt.Errorf("overlay network %s: %w", cn.Name, err)
	}
	n.Options = cn.Options
	// Another host chose the subnet, clear of its own routes only: here
	// it could be the underlay's, which the bridge would take over.
	routes, err := e.hostRoutes(netlink.FAMILY_V4)
	if err != nil {
		return n, err
	}
	if i := slices.IndexFunc(routes, cn.Subnet.Overlaps); i >= 0 {
		return n, errdefs.Conflictf("overlay network %s: subnet %s overlaps route %s of this host: it cannot be used here", cn.Name, cn.Subnet, routes[i])
	}
	if n.MTU == 0 { // each host's underlay decides
		err := e.inHost(func() (err error) {
			n.MTU, err = overlay.MTU(n.VTEP)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("overlay network %s: %w", cn.Name, err)
		}
	}
	err = e.update(func(tx *store.Tx, undo *rollback) error {
		if other, err := tx.Network(n.Name); err == nil {
			return errdefs.Conflictf("overlay network %s: this host has a network of that name already (%s)", n.Name, other.Driver)
		}
		pool, err := ipam.NewPool(cn.Subnet, netip.Prefix{}, cn.Gateway) // no range: the whole subnet
		if err != nil {
			return fmt.Errorf("overlay network %s: %w", n.Name, err)
		}
		if err := checkFreeOfPools(tx, pool.Subnet); err != nil {
			return fmt.Errorf("overlay network %s on this host: %w", n.Name, err)
		}
		pool.ID = newID()
		if err := tx.PutPool(pool); err != nil {
			return err
		}
		n.Pool, n.PoolID = pool, pool.ID
		if err := e.checkDevices(tx, &n); err != nil {
			return err
		}
		if err := e.addNetwork(tx, undo, &n); err != nil {
			return err
		}
		return e.putTunnel(n, undo)
	})
	return n, err
}

// putTunnel registers the network's VXLAN device in the maps as a port
// of the network and as the way to its endpoints on other hosts, and
// attaches from_tunnel to it, so frames between this host's endpoints and
// other hosts' are delivered as a neighbour's are: past the bridge.
func (e *Engine) putTunnel(n store.Network, undo *rollback) error {
	var ifindex int
	err := e.inHost(func() error {
		var err error
		ifindex, err = e.attachTunnel(n)
		return err
	})
	if err != nil {
		return err
	}
	undo.add(func() error { return e.inHost(func() error { return e.dp.Detach(overlay.Device(n)) }) })
	if err := e.maps.PutIface(tunnelMaps(n, ifindex)); err != nil {
		return err
	}
	undo.add(func() error { return e.maps.DeleteIface(uint32(ifindex)) })
	m := networkMaps(n)
	m.Tunnel = uint32(ifindex)
	return e.maps.PutNetwork(m)
}

// attachTunnel attaches from_tunnel to a network's tunnel device, if it
// has one, and returns the device's ifindex (0: none). It runs in the
// dataplane's namespace.
func (e *Engine) attachTunnel(n store.Network) (int, error) {
	dev, ok := tunnelDevice(n)
	if !ok {
		return 0, nil
	}
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("look up tunnel device %s of network %s: %w", dev, n.Name, err)
	}
	if _, err := e.dp.AttachTunnel(dev, l.Attrs().Index); err != nil {
		return 0, fmt.Errorf("attach to tunnel device %s of network %s: %w", dev, n.Name, err)
	}
	return l.Attrs().Index, nil
}

// removeOverlay takes an overlay network out of the cluster, which
// refuses while any host has endpoints on it; the caller then removes the
// mirror.
func (e *Engine) removeOverlay(n store.Network) error {
	if e.cluster == nil {
		return errNoCluster
	}
	return e.cluster.RemoveNetwork(context.Background(), n.ID)
}

// preTaken is an overlay address taken in the cluster before the engine's
// lock, for an endpoint to come.
type preTaken struct {
	owner string // the endpoint's ID
	addr  netip.Addr
	used  bool // an endpoint took it
}

// takeOverlayAddresses takes in the cluster, before the engine's lock, the
// addresses of a sandbox's endpoints on the overlay networks among refs
// (on the first, static when it is valid), by network ID: a store out of
// reach keeps this change waiting, not every other. done ends the taking
// once the change is over, giving back what no endpoint took.
func (e *Engine) takeOverlayAddresses(refs []string, sandbox string, aliases []string, static netip.Addr) (taken map[string]*preTaken, done func(), err error) {
	taken, done = map[string]*preTaken{}, func() {}
	if e.cluster == nil {
		return taken, done, nil
	}
	type want struct {
		n    store.Network
		addr netip.Addr
	}
	var wants []want
	err = e.store.View(func(tx *store.Tx) error {
		for i, ref := range refs {
			// What is not an overlay network here is the locked change's
			// to take, or to refuse.
			if n, err := tx.Network(ref); err == nil && drivers.TraitsOf(n).Global {
				w := want{n: n}
				if i == 0 {
					w.addr = static
				}
				wants = append(wants, w)
			}
		}
		return nil
	})
	if err != nil || len(wants) == 0 {
		return taken, done, err
	}
	ctx := context.Background()
	done = func() {
		for id, t := range taken {
			e.setTaking(t.owner, false)
			if t.used {
				continue
			}
			if err := e.cluster.ReleaseAddress(ctx, id, t.addr, t.owner); err != nil {
				e.log.Warn("give back an overlay address no endpoint took", "addr", t.addr, "err", err)
			}
		}
	}
	for _, w := range wants {
		t := &preTaken{owner: newID()}
		e.setTaking(t.owner, true)
		t.addr, err = e.cluster.AllocateAddress(ctx, w.n.ID, cluster.Address{Owner: t.owner, Addr: w.addr, Sandbox: sandbox, Aliases: aliases})
		if err != nil {
			e.setTaking(t.owner, false)
			done()
			return nil, nil, fmt.Errorf("network %s: %w", w.n.Name, err)
		}
		taken[w.n.ID] = t
	}
	return taken, done, nil
}

// setTaking records whether owner's address is being taken for an
// endpoint not stored yet.
func (e *Engine) setTaking(owner string, taking bool) {
	e.takingMu.Lock()
	defer e.takingMu.Unlock()
	if taking {
		e.taking[owner] = true
	} else {
		delete(e.taking, owner)
	}
}

// isTaking reports whether owner's address is being taken for an
// endpoint not stored yet.
func (e *Engine) isTaking(owner string) bool {
	e.takingMu.Lock()
	defer e.takingMu.Unlock()
	return e.taking[owner]
}

// allocateOverlay gives ep its address on an overlay network: the one
// taken for it before the engine's lock, or one taken in the cluster now;
// then the local pool's. undo gives it back.
func (e *Engine) allocateOverlay(tx *store.Tx, undo *rollback, n store.Network, sb store.Sandbox, ep *store.Endpoint, static netip.Addr, taken map[string]*preTaken) error {
	if e.cluster == nil {
		return errNoCluster
	}
	ctx := context.Background()
	var a netip.Addr
	if t, ok := taken[n.ID]; ok && !t.used && (!static.IsValid() || t.addr == static) {
		t.used = true
		ep.ID, a = t.owner, t.addr
	} else {
		var err error
		a, err = e.cluster.AllocateAddress(ctx, n.ID, cluster.Address{Owner: ep.ID, Addr: static, Sandbox: sb.Name, Aliases: ep.Aliases})
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Name, err)
		}
	}
	undo.add(func() error { return e.cluster.ReleaseAddress(ctx, n.ID, a, ep.ID) })
	if _, err := allocateOn(tx, n, n.PoolID, a); err != nil {
		return err
	}
	ep.Addr, ep.MAC = a, driver.MACFor(a).String()
	return nil
}

// runCluster keeps this host in line with the cluster until ctx ends:
// after every change in the store, and when a local change asks
// (nudgeCluster).
func (e *Engine) runCluster(ctx context.Context, done chan struct{}) {
	defer close(done)
	latest := make(chan cluster.State, 1)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		e.cluster.Watch(ctx, func(st cluster.State) {
			select { // only the newest state matters
			case <-latest:
			default:
			}
			latest <- st
		})
	}()
	defer func() { <-watching }() // it ends with ctx, before the client closes
	var last cluster.State
	// What failed is tried again, a little later each time it fails
	// again, until it works or a new state comes.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := time.Duration(0)
	recheck := time.NewTicker(peersRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case last = <-latest:
		case <-retry.C:
		case <-recheck.C: // followCluster sees the time has come
		case <-e.clusterNudge:
			// The watch keeps last current: what a local change asks
			// for is done against it, without reading the store.
		}
		if last.Revision == 0 {
			continue
		}
		retry.Stop()
		if !e.applyCluster(ctx, last) {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, clusterRetry), 16*clusterRetry)
		retry.Reset(backoff)
	}
}

// clusterRetry is how soon runCluster first tries again what failed.
const clusterRetry = time.Second

// nudgeCluster asks runCluster to bring the cluster in line with a local
// change (addresses of removed endpoints to give back) without waiting
// for it.
func (e *Engine) nudgeCluster() {
	if e.cluster == nil {
		return
	}
	select {
	case e.clusterNudge <- struct{}{}:
	default:
	}
}

// applyCluster brings this host in line with st: mirrors of the overlay
// networks, the VXLAN devices' peers, the names of other hosts'
// endpoints, and this host's addresses in the cluster (those of removed
// endpoints given back, those a lapsed lease lost taken again). The
// requests to the store come last, without the engine's lock: a store out
// of reach keeps them waiting, not every local change.
// It reports whether something failed, to be tried again. A conflict
// with the state (errdefs.ErrConflict: an address or a subnet another
// has) is not: it is noted, and tried again at the next change, which
// alone can resolve it.
func (e *Engine) applyCluster(ctx context.Context, st cluster.State) (failed bool) {
	requests, errs, stale := e.followCluster(ctx, st)
	if stale {
		return false
	}
	complete := true
	for i, request := range requests {
		err := request()
		errs = append(errs, err)
		if errors.Is(err, cluster.ErrUnreachable) {
			// The rest would wait as long: all of them next time.
			errs = append(errs, fmt.Errorf("%d more requests wait for the cluster store", len(requests)-i-1))
			complete = false
			break
		}
	}
	var retry []error
	var conflicts []string
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, errdefs.ErrConflict):
			conflicts = append(conflicts, err.Error())
		default:
			retry = append(retry, err)
		}
	}
	e.noteConflicts(conflicts, complete)
	if err := errors.Join(retry...); err != nil {
		e.log.Warn("follow the cluster", "err", err)
		return true
	}
	return false
}

// noteConflicts keeps the conflicts of the latest applyCluster for the
// status, and logs those that are new and those that ended; an
// incomplete one (it stopped at a store out of reach) keeps the earlier
// ones too, as what it did not try again may still conflict.
func (e *Engine) noteConflicts(now []string, complete bool) {
	e.conflictsMu.Lock()
	defer e.conflictsMu.Unlock()
	if !complete {
		now = append(now, e.conflicts...)
	}
	slices.Sort(now)
	now = slices.Compact(now)
	for _, c := range now {
		if !slices.Contains(e.conflicts, c) {
			e.log.Error("cannot follow the cluster here until something changes", "conflict", c)
		}
	}
	for _, c := range e.conflicts {
		if !slices.Contains(now, c) {
			e.log.Info("cluster conflict resolved", "conflict", c)
		}
	}
	e.conflicts = now
}

// followCluster is applyCluster's local part: it returns the requests to
// make of the store, and what failed here.
func (e *Engine) followCluster(ctx context.Context, st cluster.State) (requests []func() error, errs []error, stale bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.Revision < e.cluster.Written() {
		// Read before a change this host made meanwhile (a network
		// created or removed here): it would undo the change here until
		// the next state. The change's own state follows.
		return nil, nil, true
	}
	e.recordLease()
	local, onNetwork, err := e.overlayState()
	if err != nil {
		return nil, []error{fmt.Errorf("read state for the cluster: %w", err)}, false
	}
	// Peers are written where they changed; all of them now and then,
	// which puts back what else removed from the devices.
	recheck := time.Since(e.peersChecked) > peersRecheck
	if recheck {
		e.peers, e.peersChecked = map[string][]overlay.Peer{}, time.Now()
	}
	// Mirrors of removed networks go first: a network created in one's
	// stead (its name, its subnet, its VNI) would find it in the way.
	for id, n := range local {
		if !slices.ContainsFunc(st.Networks, func(cn cluster.Network) bool { return cn.ID == id }) {
			errs = append(errs, e.dropMirror(n))
			delete(local, id)
		}
	}
	for _, cn := range st.Networks {
		if _, ok := local[cn.ID]; !ok {
			n, err := e.mirrorOverlay(cn)
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
	e.logHosts(st.Hosts)
	errs = append(errs, e.maps.SyncOverlay(vnis, vteps))
	remote := map[string][]cluster.Address{}
	for id, n := range local {
		var peers []overlay.Peer
		held := map[string]bool{}
		for _, a := range st.Addresses[id] {
			if a.Host != e.cluster.Advertise() {
				peers = append(peers, overlay.Peer{Addr: a.Addr, MAC: driver.MACFor(a.Addr), VTEP: a.Host})
				remote[id] = append(remote[id], a)
				continue
			}
			held[a.Owner] = true
			if ep, ok := mine[a.Owner]; (!ok || ep.Addr != a.Addr) && !e.isTaking(a.Owner) {
				requests = append(requests, func() error {
					if err := e.cluster.ReleaseAddress(ctx, id, a.Addr, a.Owner); err != nil {
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
				retake := cluster.Address{Owner: ep.ID, Addr: ep.Addr, Sandbox: ep.sandbox, Aliases: ep.Aliases}
				requests = append(requests, func() error {
					if _, err := e.cluster.AllocateAddress(ctx, id, retake); err != nil {
						return fmt.Errorf("sandbox %s, network %s: take %s again: %w", ep.sandbox, n.Name, ep.Addr, err)
					}
					return nil
				})
			}
		}
		errs = append(errs, e.syncPeers(n, peers, recheck))
	}
	// Only the networks whose remote endpoints changed are named again.
	changed := map[string][]dns.Record{}
	for id, n := range local {
		if !reflect.DeepEqual(e.remote[id], remote[id]) {
			changed[id] = remoteRecords(n, remote[id])
		}
	}
	for id := range e.remote {
		if _, ok := local[id]; !ok {
			changed[id] = nil
		}
	}
	e.remote = remote
	e.names.Follow(store.Changes{}, changed)
	return requests, errs, false
}

// sandboxEndpoint is an endpoint and the name of its sandbox.
type sandboxEndpoint struct {
	store.Endpoint
	sandbox string
}

// overlayState reads this host's overlay networks, by ID, and the
// endpoints on each: the sandboxes on other networks are not read, so
// that following the cluster costs what its networks hold here.
func (e *Engine) overlayState() (local map[string]store.Network, onNetwork map[string][]sandboxEndpoint, err error) {
	local, onNetwork = map[string]store.Network{}, map[string][]sandboxEndpoint{}
	err = e.store.View(func(tx *store.Tx) error {
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
						onNetwork[n.ID] = append(onNetwork[n.ID], sandboxEndpoint{ep, sb.Name})
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
// Callers hold e.mu.
func (e *Engine) logHosts(hosts []cluster.Host) {
	now := map[netip.Addr]cluster.Host{}
	for _, h := range hosts {
		now[h.Advertise] = h
		if _, ok := e.hosts[h.Advertise]; !ok && h.Advertise != e.cluster.Advertise() {
			e.log.Info("host in the cluster", "advertise", h.Advertise, "hostname", h.Hostname)
		}
	}
	for a, h := range e.hosts {
		if _, ok := now[a]; !ok && a != e.cluster.Advertise() {
			e.log.Warn("host left the cluster: its endpoints are dropped", "advertise", a, "hostname", h.Hostname)
		}
	}
	e.hosts = now
}

// peersRecheck is how often runCluster writes every peer of every overlay
// network, changed or not; a variable for the tests.
var peersRecheck = time.Minute

// syncPeers writes the peers of overlay network n to its VXLAN device
// unless they are those last written. Callers hold e.mu.
func (e *Engine) syncPeers(n store.Network, peers []overlay.Peer, recheck bool) error {
	if last, ok := e.peers[n.ID]; ok && !recheck && slices.EqualFunc(last, peers, func(a, b overlay.Peer) bool {
		return a.Addr == b.Addr && a.VTEP == b.VTEP // the MAC follows from the address
	}) {
		return nil
	}
	delete(e.peers, n.ID)
	if err := e.inHost(func() error { return overlay.SyncPeers(n, peers) }); err != nil {
		return err
	}
	e.peers[n.ID] = peers
	return nil
}

// recordLease keeps the cluster lease in the store, for a restarted
// daemon to keep (cluster.Config.Lease).
func (e *Engine) recordLease() {
	lease := e.cluster.Lease()
	if lease == e.lease || lease == 0 { // 0: none now, the last one may come back
		return
	}
	err := e.store.Update(func(tx *store.Tx) error { return tx.PutClusterLease(lease) })
	if err != nil {
		e.log.Warn("record the cluster lease", "err", err)
		return
	}
	e.lease = lease
}

// dropMirror removes the mirror of an overlay network the cluster no
// longer has; one this host still has endpoints on stays, and says so.
func (e *Engine) dropMirror(n store.Network) error {
	var removed bool
	err := e.commit(func(tx *store.Tx) error {
		if users := tx.NetworkUsers(n.ID); len(users) > 0 {
			return errdefs.Conflictf("overlay network %s is gone from the cluster, but sandboxes here are on it: %v", n.Name, users)
		}
		removed = true
		if err := tx.DeletePool(n.PoolID); err != nil {
			return err
		}
		return tx.DeleteNetwork(n.Name)
	})
	if err != nil || !removed {
		return err
	}
	delete(e.peers, n.ID)
	return e.dropNetwork(n)
}

// remoteRecords are the names of other hosts' endpoints on overlay
// network n, for the resolvers. Callers hold e.mu.
func (e *Engine) remoteRecords(n store.Network) []dns.Record { return remoteRecords(n, e.remote[n.ID]) }

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

// leaveCluster stops following the cluster and leaves it.
func (e *Engine) leaveCluster() error {
	if e.cluster == nil {
		return nil
	}
	if e.stopCluster != nil {
		e.stopCluster()
		<-e.clusterDone
	}
	return e.cluster.Close()
}

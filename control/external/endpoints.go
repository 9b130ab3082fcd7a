// Package external serves container runtimes that own their namespaces
// (Docker's remote driver protocol, CNI). Each is kept as a sandbox of its
// own (store.Sandbox.Frontend set) with one endpoint: one attachment of
// the runtime's namespace to a network. ebpfnet never creates or removes
// that namespace, writes no files for it and runs no resolver in
// it. Docker creates, joins, leaves and deletes an endpoint step by step
// and configures the interface itself, so the sandbox end of the veth is
// handed over in the dataplane's namespace for Docker to move in; CNI
// attaches in one step, and ebpfnet configures the interface in the
// namespace. Every step may be asked twice: a runtime that restarts
// replays what it is unsure of.
//
// The endpoints are the engine's records, changed under its lock and in
// its transactions, which the engine hands over (Config); this package
// owns what is particular to runtimes: their requests, the chained
// networks another plugin built, and the checks a runtime asks for.
package external

import (
	"cmp"
	"errors"
	"fmt"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/control/wiring"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config is what Endpoints change the engine's state with.
type Config struct {
	Store  *store.Store
	Wiring *wiring.Wiring
	Maps   *maps.Maps
	// Lock is the engine's lock: runtimes' endpoints change the records
	// and the kernel as the engine's own changes do.
	Lock sync.Locker
	// Update and Commit run a change in one store transaction, as the
	// engine's own (callers hold Lock): Update undoes the kernel steps
	// undo collected when the change fails; Commit is for removals, whose
	// kernel teardown after it is best effort.
	Update func(change func(tx *store.Tx, undo *store.Undo) error) error
	Commit func(change func(tx *store.Tx) error) error
	// AddNetwork stores n with a pool of subnet and gateway, and makes its
	// host side (a chained network).
	AddNetwork func(tx *store.Tx, undo *store.Undo, n *store.Network, subnet netip.Prefix, gateway netip.Addr) error
	// Publish publishes sb's ports as the engine's publish does;
	// ForgetPorts gives back the host ports of removed publications.
	Publish     func(tx *store.Tx, undo *store.Undo, sb store.Sandbox, specs []ports.Mapping, sources ports.Sources, balance bool) ([]store.Publication, error)
	ForgetPorts func(sandbox string, pubs []store.Publication)
	// ClusterAddress takes, before the engine's lock, the address of an
	// endpoint on network ref when the cluster hands out its addresses
	// (an overlay's, unique across hosts): static when valid. allocate
	// gives the endpoint its address in the change, undone by undo; done
	// ends the taking, giving back what no endpoint took. Removed tells
	// the cluster's follower that endpoints went, whose addresses it
	// gives back.
	ClusterAddress func(ref string, static netip.Addr) (allocate Allocate, done func(), err error)
	Removed        func()
}

// Allocate gives ep, of sandbox sb, its address on network n of the
// cluster, in the change of tx.
type Allocate func(tx *store.Tx, undo *store.Undo, n store.Network, sb store.Sandbox, ep *store.Endpoint) error

// Endpoints are the runtimes' endpoints.
type Endpoints struct{ cfg Config }

// New is the runtimes' endpoints, kept with cfg.
func New(cfg Config) *Endpoints { return &Endpoints{cfg: cfg} }

// Request is a runtime's request for an endpoint.
type Request struct {
	Frontend string // the runtime's frontend: "docker", "cni"
	ID       string // the endpoint's ID, also its sandbox's
	Name     string // its sandbox's name; "" names it after the frontend and the ID
	Network  string
	// Addr is the endpoint's address. On a network whose pool was
	// requested on its own it must have been requested (RequestAddress);
	// otherwise it is taken here, the next free one when zero.
	Addr netip.Addr
	// Addr6 is its IPv6 address on a network with IPv6, taken likewise.
	Addr6 netip.Addr
	// MAC is the endpoint's MAC; "" derives it from the address.
	MAC     string
	Aliases []string // names the runtime gives it, shown in inspect
	Group   string   // the runtime's grouping of its attachments (a CNI network's name)
	// HandOver leaves the sandbox end of the veth in the dataplane's
	// namespace, for the runtime to move and configure (Docker). Otherwise
	// it goes into the namespace as Interface, configured here.
	HandOver  bool
	Interface string
	// Chained, when set, puts the endpoint on a network another CNI
	// plugin built (Network names it; it is made on first use and goes
	// with its last endpoint), whose host side HostSide that plugin made
	// and whose interface it configured.
	Chained  *ChainedNetwork
	HostSide string
	// EgressAllow is where the endpoint may send (none: anywhere, or as
	// its network's list says). Its runtime resolves names, so it holds
	// prefixes alone.
	EgressAllow egress.List
	// Bandwidth is the limits of the endpoint's sandbox (CNI's bandwidth
	// capability), which the runtime gives when it makes it.
	Bandwidth api.Bandwidth
}

// ChainedNetwork is what a plugin chained before ebpfnet built: a bridge
// and a subnet whose addresses its IPAM hands out.
type ChainedNetwork struct {
	Bridge  string
	Subnet  netip.Prefix
	Gateway netip.Addr
}

// Joined is what a runtime needs to finish a join: the endpoint, whose
// Interface is the sandbox end to move into its namespace, and the
// network's gateway.
type Joined struct {
	Endpoint store.Endpoint
	Gateway  netip.Addr // zero on an internal network, which leads nowhere
	Gateway6 netip.Addr // likewise, and zero on a network without IPv6
}

// externalPeer names the sandbox end of a handed-over veth until the
// runtime moves it.
func externalPeer(id string) string { return "ebc" + id[:12] }

// CreateEndpoint stores an external endpoint; asked again, it answers the
// endpoint it has.
func (x *Endpoints) CreateEndpoint(req Request) (store.Endpoint, error) {
	if err := checkExternal(req); err != nil {
		return store.Endpoint{}, err
	}
	allocate, done, err := x.clusterAddress(req)
	if err != nil {
		return store.Endpoint{}, err
	}
	defer done()
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	var sb store.Sandbox
	err = x.cfg.Update(func(tx *store.Tx, undo *store.Undo) (err error) {
		sb, _, err = x.createEndpoint(tx, undo, req, allocate)
		return err
	})
	if err != nil {
		return store.Endpoint{}, err
	}
	return sb.Endpoints[0], nil
}

func checkExternal(req Request) error {
	if len(req.ID) < 12 || store.CheckName("endpoint ID", req.ID) != nil {
		return errdefs.Invalidf("invalid endpoint ID %q: want at least 12 letters and digits", req.ID)
	}
	if mac, err := net.ParseMAC(req.MAC); req.MAC != "" && (err != nil || len(mac) != 6 || mac[0]&1 != 0) {
		return errdefs.Invalidf("invalid MAC address %q: want a unicast Ethernet address such as 02:42:ac:11:00:02", req.MAC)
	}
	if !req.HandOver {
		if err := store.CheckName("interface", req.Interface); err != nil || len(req.Interface) > 15 {
			return errdefs.Invalidf("invalid interface name %q: want 1-15 letters, digits, '_', '.', '-'", req.Interface)
		}
	}
	return nil
}

// clusterAddress takes req's address in the cluster before the engine's
// lock (Config.ClusterAddress), unless its endpoint exists already: asked
// again, it keeps the address it has.
func (x *Endpoints) clusterAddress(req Request) (Allocate, func(), error) {
	var exists bool
	x.cfg.Store.View(func(tx *store.Tx) error {
		_, err := tx.Sandbox(req.ID)
		exists = err == nil
		return nil
	})
	if exists {
		return nil, func() {}, nil
	}
	return x.cfg.ClusterAddress(req.Network, req.Addr)
}

// createEndpoint stores an external endpoint's sandbox, or finds the one
// stored already; n is its network. allocate gives it its address on a
// network of the cluster.
func (x *Endpoints) createEndpoint(tx *store.Tx, undo *store.Undo, req Request, allocate Allocate) (store.Sandbox, store.Network, error) {
	n, err := tx.Network(req.Network)
	if req.Chained != nil {
		n, err = x.chainedNetwork(tx, undo, req.Frontend, req.Network, *req.Chained)
	}
	if err != nil {
		return store.Sandbox{}, n, err
	}
	if sb, err := tx.Sandbox(req.ID); err == nil {
		if !sb.External() || sb.ID != req.ID || len(sb.Endpoints) != 1 || sb.Endpoints[0].NetworkID != n.ID {
			return sb, n, errdefs.Conflictf("endpoint %s exists on another network", req.ID)
		}
		return sb, n, nil
	}
	if !drivers.TraitsOf(n).Datapath {
		return store.Sandbox{}, n, errdefs.Invalidf("network %s (%s) has no endpoints of its own", n.Name, n.Driver)
	}
	sb := store.Sandbox{ID: req.ID, Name: req.Name, Frontend: req.Frontend, HandOver: req.HandOver, Group: req.Group,
		Created: time.Now().UTC(), Mode: store.ModeNetworks, EgressAllow: req.EgressAllow, Bandwidth: req.Bandwidth}
	if sb.Name == "" {
		sb.Name = req.Frontend + "-" + req.ID[:12]
	}
	if err := sb.EgressOn(n).CheckPrefixesOnly(req.Frontend + " containers"); err != nil {
		return sb, n, err
	}
	ep := store.Endpoint{ID: req.ID, NetworkID: n.ID, Interface: req.Interface, MAC: req.MAC, HostSide: req.HostSide, Aliases: req.Aliases}
	if drivers.TraitsOf(n).Global {
		// The other hosts know an endpoint's MAC from its address.
		if req.MAC != "" {
			return store.Sandbox{}, n, errdefs.Invalidf("MAC address %s: the endpoints of overlay network %s have the MACs of their addresses", req.MAC, n.Name)
		}
		if allocate == nil {
			return store.Sandbox{}, n, errdefs.Conflictf("endpoint %s went while it was asked for again; try again", req.ID)
		}
		if err := allocate(tx, undo, n, sb, &ep); err != nil {
			return store.Sandbox{}, n, err
		}
	} else if ep.Addr, err = takeAddress(tx, n, req.Addr, false); err != nil {
		return store.Sandbox{}, n, err
	}
	if req.Addr6.IsValid() && !n.EnableIPv6 {
		return store.Sandbox{}, n, errdefs.Invalidf("IPv6 address %s: network %s has no IPv6", req.Addr6, n.Name)
	}
	if n.EnableIPv6 {
		if ep.Addr6, err = takeAddress(tx, n, req.Addr6, true); err != nil {
			return store.Sandbox{}, n, err
		}
	}
	for _, a := range req.Aliases {
		if err := store.CheckName("alias", a); err != nil {
			return store.Sandbox{}, n, err
		}
	}
	ep.MAC = driver.EndpointMAC(ep).String()
	if err := uniqueOnHost(tx, n, ep); err != nil {
		return store.Sandbox{}, n, err
	}
	if req.HandOver && req.Interface == "" {
		ep.Interface = externalPeer(req.ID) // until the runtime names it
	}
	sb.Endpoints = []store.Endpoint{ep}
	if _, err := tx.Sandbox(sb.Name); err == nil {
		return sb, n, errdefs.Conflictf("sandbox %s already exists", sb.Name)
	}
	return sb, n, tx.PutSandbox(sb)
}

// chainedNetwork finds the chained network name, or makes it: the datapath
// serves it as Docker's nat-unprotected mode would a bridge (no masquerade
// of its own, which the other plugin does; every port routable), and it
// keeps its own isolation from other networks.
func (x *Endpoints) chainedNetwork(tx *store.Tx, undo *store.Undo, frontend, name string, c ChainedNetwork) (store.Network, error) {
	if n, err := tx.Network(name); err == nil {
		if !drivers.TraitsOf(n).Implicit || n.Pool.Subnet != c.Subnet || n.Bridge != c.Bridge {
			return n, errdefs.Conflictf("network %s exists, and is not the chained network of bridge %s and subnet %s", name, c.Bridge, c.Subnet)
		}
		return n, nil
	}
	if err := store.CheckName("network", name); err != nil {
		return store.Network{}, err
	}
	n := store.Network{ID: store.NewID(), Name: name, Driver: store.DriverChained, Bridge: c.Bridge, Created: time.Now().UTC(),
		ICC: true, GatewayMode: store.GatewayNATUnprotected, Frontend: frontend}
	return n, x.cfg.AddNetwork(tx, undo, &n, c.Subnet, c.Gateway)
}

// takeAddress makes addr an address of n's IPv4 or IPv6 (v6) pool: one
// requested already from a pool requested on its own, one a runtime's
// IPAM gave, or one taken now.
func takeAddress(tx *store.Tx, n store.Network, addr netip.Addr, v6 bool) (netip.Addr, error) {
	id, pool := n.PoolID, n.Pool
	if v6 {
		id, pool = n.PoolID6, n.Pool6
	}
	if drivers.TraitsOf(n).RuntimeAddresses {
		if !addr.IsValid() || !pool.Subnet.Contains(addr) || pool.Reserved(addr) {
			return addr, errdefs.Invalidf("address %q is not one of network %s's subnet %s that a container may hold", addr, n.Name, pool.Subnet)
		}
		return addr, nil // held once: uniqueOnHost
	}
	if !n.RequestedPool {
		a, err := ipam.Allocate(tx, id, addr)
		if err != nil {
			return a, fmt.Errorf("network %s: %w", n.Name, err)
		}
		return a, nil
	}
	if !addr.IsValid() || !pool.InUse(addr) {
		return addr, errdefs.Invalidf("address %q was not requested from network %s's pool %s", addr, n.Name, pool.Subnet)
	}
	return addr, nil // requested once, held once: uniqueOnHost
}

// uniqueOnHost refuses an endpoint whose address or MAC another endpoint
// of n has, or whose given host side (a chained attachment's veth) another
// endpoint holds: the datapath knows an endpoint by each of them. An
// address the engine allocated is unique already; one requested on its
// own or given by a runtime's IPAM is checked here.
func uniqueOnHost(tx *store.Tx, n store.Network, ep store.Endpoint) error {
	for _, a := range []netip.Addr{ep.Addr, ep.Addr6} {
		if holder, ok := tx.AddressHolder(n.ID, a); a.IsValid() && ok {
			return errdefs.Conflictf("address %s of network %s is held by %s already", a, n.Name, holder)
		}
	}
	if holder, ok := tx.MACHolder(n.ID, ep.MAC); ok {
		return errdefs.Conflictf("MAC address %s on network %s is %s's already", ep.MAC, n.Name, holder)
	}
	if holder, ok := tx.HostSideHolder(ep.HostSide); ep.HostSide != "" && ok {
		return errdefs.Conflictf("host interface %s is %s's already", ep.HostSide, holder)
	}
	return nil
}

// join builds an external endpoint's interfaces for the namespace at netns
// and attaches the datapath to them; joined already to netns, it does
// nothing.
func (x *Endpoints) join(tx *store.Tx, undo *store.Undo, sb *store.Sandbox, n store.Network, netns string) error {
	if sb.NetNS == netns {
		return nil
	}
	if sb.NetNS != "" {
		return errdefs.Conflictf("endpoint %s is joined to %s already", sb.ID, sb.NetNS)
	}
	// Docker joins before it makes the namespace; a namespace the engine
	// configures must be there.
	if !sb.HandOver && !namespace.IsNamespace(netns) {
		return errdefs.Invalidf("%s is not a network namespace", netns)
	}
	sb.NetNS = netns
	ep := sb.Endpoints[0]
	if err := x.cfg.Wiring.AttachEndpoint(n, *sb, &ep); err != nil {
		return err
	}
	undo.Add(func() error { return x.cfg.Wiring.DetachEndpoint(n, netns, ep) })
	sb.Endpoints = []store.Endpoint{ep}
	return tx.PutSandbox(*sb)
}

// JoinEndpoint builds an external endpoint's interfaces for the namespace
// at netns and attaches the datapath to them. Asked again for the same
// namespace, it answers the same.
func (x *Endpoints) JoinEndpoint(id, netns string) (Joined, error) {
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	var j Joined
	err := x.cfg.Update(func(tx *store.Tx, undo *store.Undo) error {
		sb, n, err := externalSandbox(tx, id)
		if err != nil {
			return err
		}
		if err := x.join(tx, undo, &sb, n, netns); err != nil {
			return err
		}
		j = Joined{Endpoint: sb.Endpoints[0], Gateway: n.DefaultGateway(false), Gateway6: n.DefaultGateway(true)}
		return nil
	})
	return j, err
}

// Attach attaches a runtime's namespace to a network in one step (CNI's
// ADD): the endpoint, its interface configured in netns, and its published
// ports, open to sources (none: the network's lists, or everyone),
// balanced or not. Either all of it is done or none. Asked again for the same namespace, it
// answers what it did.
func (x *Endpoints) Attach(req Request, netns string, publish []ports.Mapping, sources ports.Sources, balance bool) (store.Sandbox, store.Network, []store.Publication, error) {
	if err := checkExternal(req); err != nil {
		return store.Sandbox{}, store.Network{}, nil, err
	}
	if err := cmp.Or(ports.CheckPublications(publish), sources.Check(), req.Bandwidth.Check()); err != nil {
		return store.Sandbox{}, store.Network{}, nil, err
	}
	allocate, done, err := x.clusterAddress(req)
	if err != nil {
		return store.Sandbox{}, store.Network{}, nil, err
	}
	defer done()
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	var (
		sb   store.Sandbox
		n    store.Network
		pubs []store.Publication
	)
	err = x.cfg.Update(func(tx *store.Tx, undo *store.Undo) (err error) {
		if sb, n, err = x.createEndpoint(tx, undo, req, allocate); err != nil {
			return err
		}
		if sb.NetNS == netns {
			pubs, err = tx.Publications(sb.Name) // asked again
			return err
		}
		if err := x.join(tx, undo, &sb, n, netns); err != nil {
			return err
		}
		pubs, err = x.cfg.Publish(tx, undo, sb, publish, sources, balance)
		return err
	})
	return sb, n, pubs, err
}

// CheckAttachment fails, saying what is wrong, when an attachment's
// record, host side, published ports or interface in netns (its address,
// and the default route it was given) is not as it was made.
func (x *Endpoints) CheckAttachment(id, netns string) error {
	var (
		sb   store.Sandbox
		n    store.Network
		pubs []store.Publication
	)
	err := x.cfg.Store.View(func(tx *store.Tx) (err error) {
		if sb, n, err = externalSandbox(tx, id); err != nil {
			return err
		}
		pubs, err = tx.Publications(sb.Name)
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range desired.Publications(sb, pubs) {
		if ok, err := x.cfg.Maps.HasPublication(p); err != nil || !ok {
			return errors.Join(fmt.Errorf("the datapath lost published port %s:%d of endpoint %s", p.HostAddr, p.HostPort, id), err)
		}
	}
	if sb.NetNS != netns {
		return errdefs.Conflictf("endpoint %s is attached to %q, not %s", id, sb.NetNS, netns)
	}
	return x.cfg.Wiring.CheckEndpoint(n, sb)
}

// LeaveEndpoint removes an external endpoint's interfaces and map entries;
// one that is not joined is fine.
func (x *Endpoints) LeaveEndpoint(id string) error {
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	var (
		left store.Sandbox
		n    store.Network
	)
	err := x.cfg.Commit(func(tx *store.Tx) error {
		sb, net, err := externalSandbox(tx, id)
		if err != nil || sb.NetNS == "" {
			return err
		}
		left, n = sb, net
		ep := sb.Endpoints[0]
		ep.HostSide = ""
		sb.NetNS, sb.Endpoints = "", []store.Endpoint{ep} // left keeps the host side to remove
		return tx.PutSandbox(sb)
	})
	if err != nil || left.NetNS == "" {
		return err
	}
	return x.cfg.Wiring.RemoveEndpoint(n, left.NetNS, left.Endpoints[0])
}

// DeleteEndpoint forgets an external endpoint: its publications, its
// interfaces if it is still joined, and the address it took. One that is
// gone already is fine.
func (x *Endpoints) DeleteEndpoint(id string) error {
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	return x.deleteEndpoint(id)
}

func (x *Endpoints) deleteEndpoint(id string) error {
	var (
		gone          store.Sandbox
		n             store.Network
		pubs          []store.Publication
		was, now      []maps.Publication // the entries of the ports it balances with others
		lastOnChained bool
	)
	err := x.cfg.Commit(func(tx *store.Tx) error {
		sb, net, err := externalSandbox(tx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		gone, n = sb, net
		if pubs, err = tx.Publications(sb.Name); err != nil {
			return err
		}
		// A requested address is released on its own; a runtime's IPAM
		// keeps its own.
		if !n.RequestedPool && !drivers.TraitsOf(n).RuntimeAddresses {
			if err := tx.ReleaseAddresses(n, sb.Endpoints[0]); err != nil {
				return err
			}
		}
		if was, err = desired.Balanced(tx, desired.Publications(sb, pubs)); err != nil {
			return err
		}
		if err := tx.DeleteSandbox(sb.Name); err != nil {
			return err
		}
		if now, err = desired.Balanced(tx, desired.Publications(sb, pubs)); err != nil {
			return err
		}
		if len(tx.NetworkUsers(n.ID)) > 0 || !drivers.TraitsOf(n).Implicit {
			return nil
		}
		lastOnChained = true // the chained network goes with its last endpoint
		return errors.Join(tx.DeletePool(n.PoolID), tx.DeleteNetwork(n.Name))
	})
	if err != nil || gone.ID == "" {
		return err
	}
	if drivers.TraitsOf(n).Global {
		x.cfg.Removed() // its address goes back to the cluster
	}
	if lastOnChained {
		defer func() { x.cfg.Maps.DeleteNetwork(desired.Network(n)) }()
	}
	x.cfg.ForgetPorts(gone.Name, pubs)
	errs := []error{x.cfg.Maps.DeletePublications(maps.Unbalanced(desired.Publications(gone, pubs))...), x.cfg.Maps.ReplaceBalanced(was, now)}
	if gone.NetNS != "" {
		errs = append(errs, x.cfg.Wiring.RemoveEndpoint(n, gone.NetNS, gone.Endpoints[0]))
	}
	return errors.Join(errs...)
}

// CollectEndpoints deletes a frontend's external endpoints on a network,
// made in its group, whose IDs keep does not hold (CNI's GC: the
// attachments of one CNI network that its runtime no longer names), and
// returns the names of those it deleted.
func (x *Endpoints) CollectEndpoints(frontend, network, group string, keep map[string]bool) ([]string, error) {
	x.cfg.Lock.Lock()
	defer x.cfg.Lock.Unlock()
	var (
		sbs []store.Sandbox
		n   store.Network
	)
	err := x.cfg.Store.View(func(tx *store.Tx) (err error) {
		if n, err = tx.Network(network); err != nil {
			return err
		}
		sbs, err = tx.Sandboxes()
		return err
	})
	if err != nil {
		return nil, err
	}
	var (
		gone []string
		errs []error
	)
	for _, sb := range sbs {
		if sb.Frontend == frontend && sb.Group == group && len(sb.Endpoints) == 1 && sb.Endpoints[0].NetworkID == n.ID && !keep[sb.ID] {
			if err := x.deleteEndpoint(sb.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			gone = append(gone, sb.Name)
		}
	}
	return gone, errors.Join(errs...)
}

// externalSandbox finds the sandbox of external endpoint id and its network.
func externalSandbox(tx *store.Tx, id string) (store.Sandbox, store.Network, error) {
	sb, err := tx.Sandbox(id)
	if err != nil {
		return sb, store.Network{}, fmt.Errorf("endpoint %s: %w", id, store.ErrNotFound)
	}
	if !sb.External() || sb.ID != id || len(sb.Endpoints) != 1 {
		return sb, store.Network{}, errdefs.NotFoundf("endpoint %s: no such external endpoint", id)
	}
	n, err := tx.NetworkOf(sb.Endpoints[0])
	return sb, n, err
}

package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// External endpoints serve container runtimes that own their namespaces
// and configure the interfaces in them (Docker's remote driver protocol).
// Each is kept as a sandbox of its own (store.Sandbox.Frontend set) with
// one endpoint: created with its address, joined to the runtime's
// namespace, which gets a veth whose sandbox end the runtime moves in, left
// and deleted. Every step may be asked twice: a runtime that restarts
// replays what it is unsure of.

// ExternalEndpoint is a runtime's request for an endpoint.
type ExternalEndpoint struct {
	Frontend string // the runtime's frontend: "docker"
	ID       string // the runtime's endpoint ID, also the sandbox's
	Network  string
	// Addr is the endpoint's address. On a network whose pool was
	// requested on its own it must have been requested (RequestAddress);
	// otherwise it is taken here, the next free one when zero.
	Addr netip.Addr
}

// Joined is what a runtime needs to finish a join: the sandbox end to move
// into its namespace, and the network's gateway.
type Joined struct {
	Interface string
	Gateway   netip.Addr // zero on an internal network, which leads nowhere
	Endpoint  store.Endpoint
}

// externalName names an external endpoint's sandbox, and externalPeer the
// sandbox end of its veth until the runtime moves it.
func externalName(frontend, id string) string { return frontend + "-" + id[:12] }
func externalPeer(id string) string           { return "ebc" + id[:12] }

// CreateEndpoint stores an external endpoint; asked again, it answers the
// endpoint it has.
func (e *Engine) CreateEndpoint(req ExternalEndpoint) (store.Endpoint, error) {
	if len(req.ID) < 12 || checkName("endpoint ID", req.ID) != nil {
		return store.Endpoint{}, errdefs.Invalidf("invalid endpoint ID %q: want at least 12 letters and digits", req.ID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var ep store.Endpoint
	err := e.update(func(tx *store.Tx, undo *rollback) error {
		n, err := tx.Network(req.Network)
		if err != nil {
			return err
		}
		if sb, err := tx.Sandbox(req.ID); err == nil {
			if len(sb.Endpoints) != 1 || sb.Endpoints[0].NetworkID != n.ID || sb.ID != req.ID {
				return errdefs.Conflictf("endpoint %s exists on another network", req.ID)
			}
			ep = sb.Endpoints[0]
			return nil
		}
		if !servedByDatapath(n) {
			return errdefs.Invalidf("network %s (%s) has no endpoints of its own", n.Name, n.Driver)
		}
		if req.Addr, err = takeAddress(tx, n, req.Addr); err != nil {
			return err
		}
		ep = store.Endpoint{ID: req.ID, NetworkID: n.ID, Interface: externalPeer(req.ID), Addr: req.Addr,
			MAC: driver.MACFor(req.Addr).String()}
		sb := store.Sandbox{ID: req.ID, Name: externalName(req.Frontend, req.ID), Frontend: req.Frontend,
			Created: time.Now().UTC(), Mode: store.ModeNetworks, Endpoints: []store.Endpoint{ep}}
		if _, err := tx.Sandbox(sb.Name); err == nil {
			return errdefs.Conflictf("sandbox %s already exists", sb.Name)
		}
		return tx.PutSandbox(sb)
	})
	return ep, err
}

// takeAddress makes addr an address of n's: one requested already from a
// pool requested on its own, or one taken now.
func takeAddress(tx *store.Tx, n store.Network, addr netip.Addr) (netip.Addr, error) {
	if !n.RequestedPool {
		a, err := ipam.Allocate(tx, n.PoolID, addr)
		if err != nil {
			return a, fmt.Errorf("network %s: %w", n.Name, err)
		}
		return a, nil
	}
	if !addr.IsValid() || !n.Pool.InUse(addr) {
		return addr, errdefs.Invalidf("address %q was not requested from network %s's pool %s", addr, n.Name, n.Pool.Subnet)
	}
	return addr, nil
}

// JoinEndpoint builds an external endpoint's interfaces for the namespace
// at netns and attaches the datapath to them. Asked again for the same
// namespace, it answers the same.
func (e *Engine) JoinEndpoint(id, netns string) (Joined, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var j Joined
	err := e.update(func(tx *store.Tx, undo *rollback) error {
		sb, n, err := externalSandbox(tx, id)
		if err != nil {
			return err
		}
		ep := sb.Endpoints[0]
		if sb.NetNS != "" && sb.NetNS != netns {
			return errdefs.Conflictf("endpoint %s is joined to %s already", id, sb.NetNS)
		}
		if sb.NetNS == "" {
			sb.NetNS = netns
			if err := e.attachEndpoint(n, sb, &ep); err != nil {
				return err
			}
			undo.add(func() error { return e.detachEndpoint(n, sb.NetNS, ep) })
			sb.Endpoints[0] = ep
			if err := tx.PutSandbox(sb); err != nil {
				return err
			}
		}
		j = Joined{Interface: ep.Interface, Endpoint: ep}
		if !n.Internal && n.HostOnNetwork() {
			j.Gateway = n.Pool.Gateway
		}
		return nil
	})
	return j, err
}

// LeaveEndpoint removes an external endpoint's interfaces and map entries;
// one that is not joined is fine.
func (e *Engine) LeaveEndpoint(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		left store.Sandbox
		n    store.Network
	)
	err := e.commit(func(tx *store.Tx) error {
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
	return e.detachEndpoint(n, left.NetNS, left.Endpoints[0])
}

// DeleteEndpoint forgets an external endpoint: its publications, its
// interfaces if it is still joined, and the address it took. One that is
// gone already is fine.
func (e *Engine) DeleteEndpoint(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		gone store.Sandbox
		n    store.Network
		pubs []store.Publication
	)
	err := e.commit(func(tx *store.Tx) error {
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
		if !n.RequestedPool { // a requested address is released on its own
			if err := ipam.Release(tx, n.PoolID, sb.Endpoints[0].Addr); err != nil {
				return err
			}
		}
		return tx.DeleteSandbox(sb.Name)
	})
	if err != nil || gone.ID == "" {
		return err
	}
	e.forgetPorts(gone.Name, pubs)
	errs := []error{e.maps.DeletePublications(publicationMaps(gone, pubs)...)}
	if gone.NetNS != "" {
		errs = append(errs, e.detachEndpoint(n, gone.NetNS, gone.Endpoints[0]))
	}
	return errors.Join(errs...)
}

// externalSandbox finds the sandbox of external endpoint id and its network.
func externalSandbox(tx *store.Tx, id string) (store.Sandbox, store.Network, error) {
	sb, err := tx.Sandbox(id)
	if err != nil {
		return sb, store.Network{}, errdefs.NotFound(fmt.Errorf("endpoint %s: %w", id, store.ErrNotFound))
	}
	if !sb.External() || sb.ID != id || len(sb.Endpoints) != 1 {
		return sb, store.Network{}, errdefs.NotFoundf("endpoint %s: no such external endpoint", id)
	}
	n, err := networkByID(tx, sb.Endpoints[0].NetworkID)
	return sb, n, err
}

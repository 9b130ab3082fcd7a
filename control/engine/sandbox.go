package engine

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/clustersync"
	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/publications"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/control/wiring"
	"github.com/ebpfnet/ebpfnet/maps"
)

// SandboxSpec is a request for a new sandbox.
type SandboxSpec struct {
	Name string
	// Networks to attach to, or exactly one of host, none and
	// container:NAME. Empty means the default network, as with docker run.
	Networks []string
	IP       netip.Addr      // static address on the first network
	IP6      netip.Addr      // static IPv6 address on the first network (one with IPv6)
	Aliases  []string        // names on every user-defined network
	Publish  []ports.Mapping // ports to publish, as with docker run -p
	// PublishSources are who may open flows to them (none: the network's
	// lists, or everyone).
	PublishSources ports.Sources
	// PublishBalance shares the host ports of Publish with the other
	// sandboxes that publish them balanced (Engine.Publish).
	PublishBalance bool
	DNS            []netip.Addr // upstream servers of its resolver, or of its resolv.conf
	Links          []store.Link // legacy --link entries
	// EgressAllow is where it may send (none: anywhere, or its networks'
	// lists).
	EgressAllow egress.List
	// Bandwidth is the limits the datapath holds its endpoints to.
	Bandwidth api.Bandwidth
}

// EndpointSpec is what a connect request may choose.
type EndpointSpec struct {
	IP      netip.Addr
	IP6     netip.Addr // on a network with IPv6
	Aliases []string
}

// CreateSandbox creates a sandbox and its endpoints.
func (e *Engine) CreateSandbox(spec SandboxSpec) (store.Sandbox, error) {
	if err := cmp.Or(ports.CheckPublications(spec.Publish), spec.PublishSources.Check(), spec.Bandwidth.Check()); err != nil {
		return store.Sandbox{}, err
	}
	if err := store.CheckName("sandbox", spec.Name); err != nil {
		return store.Sandbox{}, err
	}
	for _, a := range spec.Aliases {
		if err := store.CheckName("alias", a); err != nil {
			return store.Sandbox{}, err
		}
	}
	if len(spec.Networks) == 0 {
		spec.Networks = []string{NetworkBridge}
	}
	taken, done, err := e.takeOverlayAddresses(spec.Networks, spec.Name, spec.Aliases, spec.IP)
	if err != nil {
		return store.Sandbox{}, err
	}
	defer done()
	e.mu.Lock()
	defer e.mu.Unlock()
	// Under the lock: no other change takes what the check found free.
	if err := checkDescriptors("create sandbox " + spec.Name); err != nil {
		return store.Sandbox{}, err
	}
	sb := store.Sandbox{ID: store.NewID(), Name: spec.Name, Created: time.Now().UTC(), Mode: store.ModeNetworks, DNS: spec.DNS,
		NetNS: e.cfg.Runtime.NamespacePath(spec.Name), EgressAllow: spec.EgressAllow, Bandwidth: spec.Bandwidth}
	unmark, err := e.markNamespace(sb)
	if err != nil {
		return store.Sandbox{}, err
	}
	defer unmark()
	err = e.update(func(tx *store.Tx, undo *store.Undo) error {
		if _, taken, err := tx.SandboxNamed(spec.Name); err != nil {
			return err
		} else if taken {
			return errdefs.Conflictf("sandbox %s already exists", spec.Name)
		}
		shares, nets, err := e.resolveMode(tx, &sb, spec)
		if err != nil {
			return err
		}
		if err := checkEgressNames(sb, nets); err != nil {
			return err
		}
		if sb.Links, err = checkLinks(tx, spec.Links); err != nil {
			return err
		}
		if err := e.cfg.Runtime.CreateNamespace(sb, shares); err != nil {
			return err
		}
		undo.Add(func() error { return e.cfg.Runtime.RemoveNamespace(sb) })
		if err := failpoint.Hit("engine.namespace"); err != nil {
			return err
		}
		for i, n := range nets {
			ep := EndpointSpec{Aliases: spec.Aliases}
			if i == 0 {
				ep.IP, ep.IP6 = spec.IP, spec.IP6
			}
			if err := e.addEndpoint(tx, undo, &sb, n, ep, taken); err != nil {
				return err
			}
		}
		// Recorded before its ports: a balanced port's entry is made from
		// the records of every sandbox that shares it, this one's included.
		if err := tx.PutSandbox(sb); err != nil {
			return err
		}
		_, err = e.publications.Add(tx, undo, sb, spec.Publish, spec.PublishSources, spec.PublishBalance)
		return err
	})
	return sb, err
}

// resolveMode sets the sandbox's mode from the requested networks and
// returns the namespace it shares (host and container mode) or the
// networks to attach to.
func (e *Engine) resolveMode(tx *store.Tx, sb *store.Sandbox, spec SandboxSpec) (shares string, nets []store.Network, err error) {
	first := spec.Networks[0]
	if api.IsNetworkMode(first) {
		if len(spec.Networks) > 1 {
			return "", nil, errdefs.Invalidf("network mode %s cannot be combined with other networks", first)
		}
		if spec.IP.IsValid() || spec.IP6.IsValid() || len(spec.Aliases) > 0 || len(spec.Publish) > 0 {
			return "", nil, errdefs.Invalidf("a static address, aliases and published ports need a bridge or macvlan network, not %s", first)
		}
		if len(spec.EgressAllow) > 0 {
			return "", nil, errdefs.Invalidf("an egress list needs a bridge network, not %s", first)
		}
		if !spec.Bandwidth.IsZero() {
			return "", nil, errdefs.Invalidf("bandwidth limits need a bridge network, not %s", first)
		}
	}
	switch {
	case first == NetworkHost:
		sb.Mode = store.ModeHost
		return e.cfg.NetNS, nil, nil
	case first == NetworkNone:
		return "", nil, nil
	case strings.HasPrefix(first, api.ContainerPrefix):
		target, err := tx.Sandbox(strings.TrimPrefix(first, api.ContainerPrefix))
		if err != nil {
			return "", nil, err
		}
		sb.Mode, sb.Shares = store.ModeContainer, target.Name
		if target.Mode == store.ModeContainer {
			sb.Shares = target.Shares // join the namespace's owner, not a chain
		}
		return target.NetNS, nil, nil
	}
	for _, ref := range spec.Networks {
		n, err := tx.Network(ref)
		if err != nil {
			return "", nil, err
		}
		if !drivers.TraitsOf(n).OwnAddresses {
			return "", nil, errdefs.Invalidf("network %s cannot be combined with other networks", n.Name)
		}
		if err := limitable(sb.Bandwidth, n); err != nil {
			return "", nil, err
		}
		for _, m := range nets {
			if m.ID == n.ID {
				return "", nil, errdefs.Invalidf("network %s is listed twice", n.Name)
			}
		}
		nets = append(nets, n)
	}
	return "", nets, nil
}

// addEndpoint allocates an address on n, and an IPv6 one when n has IPv6,
// builds the endpoint in the kernel and appends it to sb; the caller
// stores sb.
func (e *Engine) addEndpoint(tx *store.Tx, undo *store.Undo, sb *store.Sandbox, n store.Network, spec EndpointSpec, taken clustersync.Taken) error {
	if spec.IP6.IsValid() && !n.EnableIPv6 {
		return errdefs.Invalidf("IPv6 address %s: network %s has no IPv6 (create it with --ipv6)", spec.IP6, n.Name)
	}
	ep := store.Endpoint{ID: store.NewID(), NetworkID: n.ID, Interface: nextInterface(sb.Endpoints), Aliases: spec.Aliases}
	if drivers.TraitsOf(n).Global {
		if err := e.allocateOverlay(tx, undo, n, *sb, &ep, spec.IP, taken); err != nil {
			return err
		}
	} else {
		a, err := allocateOn(tx, n, n.PoolID, spec.IP)
		if err != nil {
			return err
		}
		ep.Addr, ep.MAC = a, driver.MACFor(a).String()
	}
	var err error
	if n.EnableIPv6 {
		if ep.Addr6, err = allocateOn(tx, n, n.PoolID6, spec.IP6); err != nil {
			return err
		}
	}
	if err := e.wiring.AttachEndpoint(n, *sb, &ep); err != nil {
		return err
	}
	undo.Add(func() error { return e.wiring.DetachEndpoint(n, sb.NetNS, ep) })
	sb.Endpoints = append(sb.Endpoints, ep)
	return nil
}

// allocateOn takes an address of n's pool poolID: static when it is valid,
// the next free one otherwise.
func allocateOn(tx *store.Tx, n store.Network, poolID string, static netip.Addr) (netip.Addr, error) {
	a, err := ipam.Allocate(tx, poolID, static)
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return a, fmt.Errorf("network %s has no free address left (%w)", n.Name, err)
	case err != nil && static.IsValid():
		return a, fmt.Errorf("network %s: %w", n.Name, err)
	}
	return a, err
}

// nextInterface is the lowest ethN the sandbox does not use.
func nextInterface(eps []store.Endpoint) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("eth%d", i)
		if !slices.ContainsFunc(eps, func(ep store.Endpoint) bool { return ep.Interface == name }) {
			return name
		}
	}
}

// RemoveSandbox removes a sandbox. Without force it refuses one that still
// has processes; with force it kills them.
func (e *Engine) RemoveSandbox(ref string, force bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		sb       store.Sandbox
		pubs     []store.Publication
		was, now []maps.Publication // the entries of the ports sb balances with others
		// unmarkRemoved unmarks sb's namespace once it is removed.
		unmarkRemoved = func() {}
	)
	nets := map[string]store.Network{}
	// Who shares a namespace comes from the names' index, not from a read
	// of every sandbox: a removal costs what it touches.
	if err := e.names.Load(); err != nil {
		return err
	}
	err := e.commit(func(tx *store.Tx) error {
		var err error
		if sb, err = tx.Sandbox(ref); err != nil {
			return err
		}
		if err := ownSandbox(sb); err != nil {
			return err
		}
		if pubs, err = tx.Publications(sb.Name); err != nil {
			return err
		}
		if users := e.names.Sharers(sb.Name); len(users) > 0 {
			o := users[0]
			return errdefs.Conflictf("sandbox %s is in use by %s (container:%s): remove %s first", sb.Name, o, sb.Name, o)
		}
		if err := e.cfg.Runtime.StopProcesses(sb, force); err != nil {
			return err
		}
		unmark, err := e.markNamespace(sb)
		if err != nil {
			return err
		}
		defer func() { unmarkRemoved = unmark }()
		for _, ep := range sb.Endpoints {
			n, err := tx.NetworkOf(ep)
			if err != nil {
				return err
			}
			nets[n.ID] = n
			if err := tx.ReleaseAddresses(n, ep); err != nil {
				return err
			}
		}
		if was, err = desired.Balanced(tx, desired.Publications(sb, pubs)); err != nil {
			return err
		}
		if err := tx.DeleteSandbox(sb.Name); err != nil {
			return err
		}
		now, err = desired.Balanced(tx, desired.Publications(sb, pubs))
		return err
	})
	if err != nil {
		unmarkRemoved() // the record is there: its namespace is no orphan
		return err
	}
	// The record is gone; leftovers are the reconciler's to remove, so the
	// teardown keeps going and reports what it could not do.
	failpoint.Hit("engine.removed")
	e.nudgeCluster() // overlay addresses go back to the cluster
	e.publications.Forget(sb.Name, pubs)
	errs := []error{e.maps.DeletePublications(maps.Unbalanced(desired.Publications(sb, pubs))...), e.maps.ReplaceBalanced(was, now)}
	for _, ep := range sb.Endpoints {
		errs = append(errs, e.wiring.RemoveEndpoint(nets[ep.NetworkID], sb.NetNS, ep))
	}
	err = e.cfg.Runtime.RemoveNamespace(sb)
	if err == nil {
		unmarkRemoved()
	}
	return errors.Join(append(errs, err)...)
}

// Connect attaches a sandbox to one more network.
func (e *Engine) Connect(networkRef, sandboxRef string, spec EndpointSpec) error {
	for _, a := range spec.Aliases {
		if err := store.CheckName("alias", a); err != nil {
			return err
		}
	}
	name := sandboxRef // as the cluster's records name it: by name, not by a reference
	e.store.View(func(tx *store.Tx) error {
		if sb, err := tx.Sandbox(sandboxRef); err == nil {
			name = sb.Name
		}
		return nil
	})
	taken, done, err := e.takeOverlayAddresses([]string{networkRef}, name, spec.Aliases, spec.IP)
	if err != nil {
		return err
	}
	defer done()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := checkDescriptors("connect " + sandboxRef + " to " + networkRef); err != nil {
		return err
	}
	return e.update(func(tx *store.Tx, undo *store.Undo) error {
		n, err := tx.Network(networkRef)
		if err != nil {
			return err
		}
		sb, err := tx.Sandbox(sandboxRef)
		if err != nil {
			return err
		}
		if err := ownSandbox(sb); err != nil {
			return err
		}
		if sb.Mode != store.ModeNetworks || !drivers.TraitsOf(n).OwnAddresses {
			mode := store.NetworkMode(sb, func(id string) string { m, _ := tx.Network(id); return m.Name })
			return errdefs.Invalidf("cannot connect sandbox %s (%s) to network %s (%s): only sandboxes with their own namespace join bridge or macvlan networks",
				sb.Name, mode, n.Name, n.Driver)
		}
		if _, ok := endpointOn(sb, n.ID); ok {
			return errdefs.Conflictf("sandbox %s is already connected to network %s", sb.Name, n.Name)
		}
		if err := e.addEndpoint(tx, undo, &sb, n, spec, taken); err != nil {
			return err
		}
		return tx.PutSandbox(sb)
	})
}

// Disconnect detaches a sandbox from a network.
func (e *Engine) Disconnect(networkRef, sandboxRef string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		sb      store.Sandbox
		removed store.Endpoint
		nets    = map[string]store.Network{}
	)
	err := e.commit(func(tx *store.Tx) error {
		n, err := tx.Network(networkRef)
		if err != nil {
			return err
		}
		if sb, err = tx.Sandbox(sandboxRef); err != nil {
			return err
		}
		if err := ownSandbox(sb); err != nil {
			return err
		}
		i := slices.IndexFunc(sb.Endpoints, func(ep store.Endpoint) bool { return ep.NetworkID == n.ID })
		if i < 0 {
			return errdefs.Conflictf("sandbox %s is not connected to network %s", sb.Name, n.Name)
		}
		removed = sb.Endpoints[i]
		pubs, err := tx.Publications(sb.Name)
		if err != nil {
			return err
		}
		for _, p := range pubs {
			if p.EndpointID == removed.ID {
				return errdefs.Conflictf("sandbox %s publishes %s through network %s: unpublish it first", sb.Name, publications.Describe(p), n.Name)
			}
		}
		sb.Endpoints = slices.Delete(sb.Endpoints, i, i+1)
		if err := tx.ReleaseAddresses(n, removed); err != nil {
			return err
		}
		for _, ep := range sb.Endpoints {
			if nets[ep.NetworkID], err = tx.NetworkOf(ep); err != nil {
				return err
			}
		}
		nets[n.ID] = n
		return tx.PutSandbox(sb)
	})
	if err != nil {
		return err
	}
	e.nudgeCluster()
	return errors.Join(e.wiring.RemoveEndpoint(nets[removed.NetworkID], sb.NetNS, removed),
		wiring.EnsureDefaultRoute(sb.NetNS, sb.Endpoints, nets))
}

// endpointOn is sb's endpoint on the network networkID, if any.
func endpointOn(sb store.Sandbox, networkID string) (store.Endpoint, bool) {
	i := slices.IndexFunc(sb.Endpoints, func(ep store.Endpoint) bool { return ep.NetworkID == networkID })
	if i < 0 {
		return store.Endpoint{}, false
	}
	return sb.Endpoints[i], true
}

// limitable refuses bandwidth limits bw on network n when the datapath
// does not carry n's traffic (macvlan).
func limitable(bw api.Bandwidth, n store.Network) error {
	if !bw.IsZero() && !drivers.TraitsOf(n).Datapath {
		return errdefs.Invalidf("network %s (%s) takes no bandwidth limits: its endpoints' traffic bypasses the datapath", n.Name, n.Driver)
	}
	return nil
}

// setBandwidth gives sb the bandwidth limits bw (checked already), in its
// record, then each endpoint's entries. The buckets of limits that stay
// keep what they hold, so that a change lets no burst through.
func (e *Engine) setBandwidth(tx *store.Tx, undo *store.Undo, sb store.Sandbox, bw api.Bandwidth) (store.Sandbox, error) {
	if sb.Mode != store.ModeNetworks && !bw.IsZero() {
		return sb, errdefs.Invalidf("sandbox %s has no endpoints of its own (%s mode): bandwidth limits need a bridge network", sb.Name, sb.Mode)
	}
	nets := map[string]store.Network{}
	for _, ep := range sb.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return sb, err
		}
		if err := limitable(bw, n); err != nil {
			return sb, err
		}
		nets[ep.NetworkID] = n
	}
	was := sb
	sb.Bandwidth = bw
	if err := tx.PutSandbox(sb); err != nil {
		return sb, err
	}
	for _, ep := range sb.Endpoints {
		undo.Add(func() error { return e.wiring.RefreshIface(nets[ep.NetworkID], was, ep) })
		if err := e.wiring.RefreshIface(nets[ep.NetworkID], sb, ep); err != nil {
			return sb, fmt.Errorf("set bandwidth of sandbox %s: %w", sb.Name, err)
		}
	}
	return sb, nil
}

// ownSandbox refuses to change the endpoints of an external sandbox, which
// only its runtime may do.
func ownSandbox(sb store.Sandbox) error {
	if sb.External() {
		return errdefs.Conflictf("sandbox %s is an endpoint of a %s container: change it with %s", sb.Name, sb.Frontend, sb.Frontend)
	}
	return nil
}

// checkLinks resolves --link targets, which must exist.
func checkLinks(tx *store.Tx, links []store.Link) ([]store.Link, error) {
	var out []store.Link
	for _, l := range links {
		target, err := tx.Sandbox(l.Sandbox)
		if err != nil {
			return nil, fmt.Errorf("link to %s: %w", l.Sandbox, err)
		}
		if l.Alias == "" {
			l.Alias = target.Name
		}
		if err := store.CheckName("link alias", l.Alias); err != nil {
			return nil, err
		}
		out = append(out, store.Link{Sandbox: target.Name, Alias: l.Alias})
	}
	return out, nil
}

// SandboxUpdate is a change of a running sandbox's settings; a nil field
// is left as it is.
type SandboxUpdate struct {
	// EgressAllow replaces its egress list; an empty one clears it (its
	// networks' lists then hold, if any).
	EgressAllow *egress.List
	// Bandwidth replaces its limits, all of them: a rate of 0 lifts one.
	Bandwidth *api.Bandwidth
}

// UpdateSandbox changes a sandbox's settings live, all of u or none: new
// flows meet them at once. Flows conntrack already holds go on.
func (e *Engine) UpdateSandbox(ref string, u SandboxUpdate) (store.Sandbox, error) {
	if u.Bandwidth != nil {
		if err := u.Bandwidth.Check(); err != nil {
			return store.Sandbox{}, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var sb store.Sandbox
	err := e.update(func(tx *store.Tx, undo *store.Undo) error {
		var err error
		if sb, err = tx.Sandbox(ref); err != nil {
			return err
		}
		if u.EgressAllow != nil {
			if sb, err = e.setEgress(tx, undo, sb, *u.EgressAllow); err != nil {
				return err
			}
		}
		if u.Bandwidth != nil {
			sb, err = e.setBandwidth(tx, undo, sb, *u.Bandwidth)
		}
		return err
	})
	return sb, err
}

// setEgress gives sb the egress list allow, in its record and its
// endpoints' entries.
func (e *Engine) setEgress(tx *store.Tx, undo *store.Undo, sb store.Sandbox, allow egress.List) (store.Sandbox, error) {
	if len(allow) > 0 && sb.Mode != store.ModeNetworks {
		return sb, errdefs.Invalidf("sandbox %s: an egress list needs a bridge network, not %s mode", sb.Name, sb.Mode)
	}
	was := sb
	sb.EgressAllow = allow
	var nets []store.Network
	for _, ep := range sb.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return sb, err
		}
		nets = append(nets, n)
	}
	if err := checkEgressNames(sb, nets); err != nil {
		return sb, err
	}
	if err := tx.PutSandbox(sb); err != nil {
		return sb, err
	}
	return sb, e.replaceEgress(tx, undo, was, sb)
}

// checkEgressNames refuses names in the egress list of a sandbox that
// does not ask ebpfnet's resolver: a container runtime's (which resolves
// for it), or one of the default network alone, which has no resolver,
// as with Docker. No answer would ever let it reach them.
func checkEgressNames(sb store.Sandbox, nets []store.Network) error {
	if sb.External() {
		return sb.EgressAllow.CheckPrefixesOnly(sb.Frontend + " containers")
	}
	if len(nets) > 0 && !slices.ContainsFunc(nets, func(n store.Network) bool { return !n.Predefined }) {
		return sb.EgressAllow.CheckPrefixesOnly("sandboxes of the default network alone")
	}
	return nil
}

// replaceEgress writes the egress lists of now's endpoints over was's.
func (e *Engine) replaceEgress(tx *store.Tx, undo *store.Undo, was, now store.Sandbox) error {
	for _, ep := range now.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return err
		}
		before, _ := desired.Egress(n, was, ep)
		after, _ := desired.Egress(n, now, ep)
		if err := e.maps.ReplaceEgress(after, before); err != nil {
			return fmt.Errorf("sandbox %s: %w", now.Name, err)
		}
		undo.Add(func() error { return e.maps.ReplaceEgress(before, after) })
		if err := e.wiring.ForgetEgressAnswers(ep.Addrs(), now.EgressOn(n).Allows); err != nil {
			return fmt.Errorf("sandbox %s: %w", now.Name, err)
		}
	}
	return nil
}

// EgressAnswers are the addresses sources may reach by name now.
func (e *Engine) EgressAnswers(sources ...netip.Addr) ([]wiring.EgressAnswer, error) {
	return e.wiring.EgressAnswers(sources...)
}

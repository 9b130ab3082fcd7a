// Package wiring builds and removes the kernel side of networks and
// endpoints: the devices their drivers make, the endpoint programs on host
// sides and the maps' entries for them, the configuration of a sandbox's
// interfaces, and the conntrack entries of removed endpoints. The engine
// decides what is made, in its transactions; wiring makes it, and undoes
// what it half made when a step fails. Reconcile uses it to repair.
package wiring

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config is what wiring works with.
type Config struct {
	// NetNS is the dataplane's namespace, where a runtime that configures
	// its interfaces itself (HandOver) finds the sandbox side.
	NetNS    string
	Datapath *loader.Datapath
	Maps     *maps.Maps
	// Drivers finds the driver of a network (drivers.For, or a test's).
	Drivers func(name string) (driver.Driver, bool)
	// InHost runs fn in the dataplane's namespace.
	InHost func(fn func() error) error
	Log    *slog.Logger
}

// Wiring makes networks' and endpoints' kernel objects. Its methods may
// be called from several goroutines; the engine serialises the changes of
// one record.
type Wiring struct {
	cfg Config
	// reclaimed counts the expired conntrack entries ReclaimConntrack
	// removed.
	reclaimed atomic.Uint64
	// flushes are the conntrack flushes of removed endpoints under way.
	flushes     conntrackFlushes
	egressNames egressNames
}

// New is wiring with cfg.
func New(cfg Config) *Wiring { return &Wiring{cfg: cfg} }

// Reclaimed is how many expired conntrack entries ReclaimConntrack removed.
func (w *Wiring) Reclaimed() uint64 { return w.reclaimed.Load() }

// Wait waits for the conntrack flushes under way: they use the maps.
func (w *Wiring) Wait() { w.flushes.running.Wait() }

// SetupNetwork makes the network's host side exist (idempotent).
func (w *Wiring) SetupNetwork(n *store.Network) error {
	d, ok := w.cfg.Drivers(n.Driver)
	if !ok {
		return nil // host and none: nothing of their own
	}
	return w.cfg.InHost(func() error {
		if err := d.Setup(n); err != nil {
			return err
		}
		return failpoint.Hit("wiring.network")
	})
}

// TeardownNetwork removes the network's host side, its tunnel's programs
// included; a missing one is fine.
func (w *Wiring) TeardownNetwork(n store.Network) error {
	d, ok := w.cfg.Drivers(n.Driver)
	if !ok {
		return nil
	}
	return w.cfg.InHost(func() error {
		var errs []error
		if dev, ok := drivers.Tunnel(n); ok {
			errs = append(errs, w.cfg.Datapath.Detach(dev))
		}
		return errors.Join(append(errs, d.Teardown(n))...)
	})
}

// AttachEndpoint creates an endpoint's interfaces with its network's
// driver, names its host side in ep, attaches the endpoint programs there
// and registers it in the maps, and configures the sandbox side. A
// runtime that moves and configures the sandbox side itself (HandOver)
// finds it in the dataplane's namespace, named ep.Interface. On failure
// it removes what it made.
func (w *Wiring) AttachEndpoint(n store.Network, sb store.Sandbox, ep *store.Endpoint) (err error) {
	defer func() {
		if err != nil {
			w.DetachEndpoint(n, sb.NetNS, *ep)
		}
	}()
	d, ok := w.cfg.Drivers(n.Driver)
	if !ok {
		return errdefs.Invalidf("driver %s has no endpoints", n.Driver)
	}
	peerNS := sb.NetNS
	if sb.HandOver {
		peerNS = w.cfg.NetNS
	}
	fd, err := unix.Open(peerNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open sandbox namespace %s: %w", peerNS, err)
	}
	defer unix.Close(fd)
	err = w.cfg.InHost(func() error {
		ifindex, err := d.Attach(n, ep, netlink.NsFd(fd))
		if err == nil {
			err = failpoint.Hit("wiring.link")
		}
		if err != nil || ep.HostSide == "" {
			return err
		}
		return w.attachDatapath(n, sb, *ep, ifindex)
	})
	if err != nil || sb.HandOver {
		return err
	}
	lo6 := ep.Addr6.IsValid() || HasIPv6(sb.Endpoints)
	return namespace.Do(sb.NetNS, func() error { return configureInside(n, *ep, !sb.External(), lo6) })
}

// attachPrograms puts the endpoint programs on a host side (ifindex), in
// the dataplane's namespace, and lets the datapath route IPv6 from it:
// the kernel's FIB lookup for BPF answers only for an input interface that
// forwards, and the replies of IPv6 clients of IPv4-only sandboxes are
// routed from there.
func (w *Wiring) attachPrograms(hostSide string, ifindex int) error {
	if _, err := w.cfg.Datapath.AttachEndpoint(hostSide, ifindex); err != nil {
		return err
	}
	return namespace.ForwardIPv6On(hostSide)
}

// attachDatapath puts the endpoint programs on an endpoint's host side
// (ifindex) and registers it in the maps; it runs in the dataplane's
// namespace.
func (w *Wiring) attachDatapath(n store.Network, sb store.Sandbox, ep store.Endpoint, ifindex int) error {
	w.awaitFlush(ep.Addrs())
	if err := w.attachPrograms(ep.HostSide, ifindex); err != nil {
		return err
	}
	if err := failpoint.Hit("wiring.programs"); err != nil {
		return err
	}
	// Listed before the endpoint is known: its first packet meets its list.
	if e, ok := desired.Egress(n, sb, ep); ok {
		if err := w.cfg.Maps.ReplaceEgress(e, maps.Egress{}); err != nil {
			return err
		}
	}
	if err := w.cfg.Maps.PutIface(desired.Iface(n, sb, ep, ifindex)); err != nil {
		return err
	}
	for _, m := range desired.Endpoints(n, ep, ifindex) {
		if err := failpoint.Hit("wiring.endpoint"); err != nil {
			return err
		}
		if err := w.cfg.Maps.PutEndpoint(m); err != nil {
			return err
		}
	}
	return nil
}

// RemoveEndpoint removes an endpoint for good (a sandbox removed, a
// network disconnected, a runtime's Leave or DEL): DetachEndpoint, and its
// flows' conntrack entries go too, so that the next endpoint on its
// addresses starts with none. A repair detaches without it: the endpoint's
// flows move to its new veth (ct_owner).
func (w *Wiring) RemoveEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) error {
	err := w.DetachEndpoint(n, sandboxNS, ep)
	w.flushConntrack(ep.Addrs())
	return err
}

// DetachEndpoint removes an endpoint's interfaces and map entries, best
// effort: it keeps going and joins its errors. The programs leave the host
// side here; the driver removes what it made, the host side included.
func (w *Wiring) DetachEndpoint(n store.Network, sandboxNS string, ep store.Endpoint) error {
	var errs []error
	if ep.HostSide != "" {
		errs = append(errs, w.cfg.InHost(func() error { return w.DetachHostSide(ep.HostSide) }))
		for _, a := range ep.Addrs() {
			errs = append(errs, w.cfg.Maps.DeleteEndpoint(a))
		}
		errs = append(errs, w.cfg.Maps.DeleteEgress(ep.Addrs()...))
	}
	if d, ok := w.cfg.Drivers(n.Driver); ok {
		errs = append(errs, w.cfg.InHost(func() error { return d.Detach(n, sandboxNS, ep) }))
	}
	return errors.Join(errs...)
}

// DetachHostSide detaches programs from a host side and forgets it in the
// maps.
func (w *Wiring) DetachHostSide(name string) error {
	var errs []error
	if l, err := netlink.LinkByName(name); err == nil {
		errs = append(errs, w.cfg.Maps.DeleteIface(uint32(l.Attrs().Index)))
	}
	return errors.Join(append(errs, w.cfg.Datapath.Detach(name))...)
}

// AttachTunnel attaches from_tunnel to a network's tunnel device, if it
// has one, and returns the device's ifindex (0: none). It runs in the
// dataplane's namespace.
func (w *Wiring) AttachTunnel(n store.Network) (int, error) {
	dev, ok := drivers.Tunnel(n)
	if !ok {
		return 0, nil
	}
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("look up tunnel device %s of network %s: %w", dev, n.Name, err)
	}
	if _, err := w.cfg.Datapath.AttachTunnel(dev, l.Attrs().Index); err != nil {
		return 0, fmt.Errorf("attach to tunnel device %s of network %s: %w", dev, n.Name, err)
	}
	return l.Attrs().Index, nil
}

// EndpointIntact reports whether the endpoint's interface exists in the
// sandbox and its driver finds the rest intact.
func (w *Wiring) EndpointIntact(n store.Network, sandboxNS string, ep store.Endpoint) bool {
	inside := namespace.Do(sandboxNS, func() error {
		_, err := netlink.LinkByName(ep.Interface)
		return err
	}) == nil
	d, ok := w.cfg.Drivers(n.Driver)
	if !ok {
		return inside
	}
	return inside && w.cfg.InHost(func() error { return d.Check(n, ep) }) == nil
}

// RefreshEndpoint re-applies an intact endpoint's configuration: the
// programs (this binary's) on its host side, the addresses and the
// default routes; lo6 is whether its sandbox has IPv6.
func (w *Wiring) RefreshEndpoint(n store.Network, sandboxNS string, ep store.Endpoint, lo6 bool) error {
	if err := w.RefreshPrograms(ep); err != nil {
		return err
	}
	return namespace.Do(sandboxNS, func() error { return configureInside(n, ep, true, lo6) })
}

// RefreshPrograms attaches this binary's endpoint programs to an
// endpoint's host side, if it has one.
func (w *Wiring) RefreshPrograms(ep store.Endpoint) error {
	if ep.HostSide == "" {
		return nil
	}
	return w.cfg.InHost(func() error {
		host, err := netlink.LinkByName(ep.HostSide)
		if err != nil {
			return err
		}
		return w.attachPrograms(ep.HostSide, host.Attrs().Index)
	})
}

// RefreshIface rewrites what the maps know of an endpoint's host side, if
// it has one, from its records (its sandbox's bandwidth limits, say).
func (w *Wiring) RefreshIface(n store.Network, sb store.Sandbox, ep store.Endpoint) error {
	if ep.HostSide == "" {
		return nil
	}
	return w.cfg.InHost(func() error {
		host, err := netlink.LinkByName(ep.HostSide)
		if err != nil {
			return fmt.Errorf("find host side %s of sandbox %s: %w", ep.HostSide, sb.Name, err)
		}
		return w.cfg.Maps.PutIface(desired.Iface(n, sb, ep, host.Attrs().Index))
	})
}

// checkRates fails when the maps do not hold the bandwidth limits of an
// endpoint's host side that its sandbox's record asks for.
func (w *Wiring) checkRates(n store.Network, sb store.Sandbox, ep store.Endpoint) error {
	if ep.HostSide == "" {
		return nil
	}
	return w.cfg.InHost(func() error {
		host, err := netlink.LinkByName(ep.HostSide)
		if err != nil {
			return fmt.Errorf("find host side %s of endpoint %s: %w", ep.HostSide, sb.ID, err)
		}
		want := desired.Iface(n, sb, ep, host.Attrs().Index)
		egress, ingress, err := w.cfg.Maps.Rates(uint32(host.Attrs().Index))
		if err != nil {
			return err
		}
		if egress != want.Egress || ingress != want.Ingress {
			return fmt.Errorf("the datapath lost the bandwidth limits of endpoint %s (egress %+v, ingress %+v; want %+v, %+v)",
				sb.ID, egress, ingress, want.Egress, want.Ingress)
		}
		return nil
	})
}

// FlushOrphanedConntrack removes the flows of endpoints whose conntrack
// flush never finished (the daemon stopped or crashed during one), once
// the maps name every live endpoint.
func (w *Wiring) FlushOrphanedConntrack() error {
	n, err := w.cfg.Maps.FlushOrphanedConntrack()
	if err != nil {
		return fmt.Errorf("flush the conntrack entries of removed endpoints: %w", err)
	}
	if n > 0 {
		w.cfg.Log.Info("flushed the conntrack entries of endpoints removed before a flush finished", "entries", n)
	}
	return nil
}

// CheckEndpoint fails, saying what is wrong, when the host side of a
// runtime's endpoint (sb's one), its bandwidth limits in the maps, or its
// interface in sb's namespace (its addresses, and the default route
// wiring gave it), is not as it was made.
func (w *Wiring) CheckEndpoint(n store.Network, sb store.Sandbox) error {
	ep := sb.Endpoints[0]
	if d, ok := w.cfg.Drivers(n.Driver); ok {
		if err := w.cfg.InHost(func() error { return d.Check(n, ep) }); err != nil {
			return fmt.Errorf("host side %s of endpoint %s: %w", ep.HostSide, sb.ID, err)
		}
	}
	if err := w.checkRates(n, sb, ep); err != nil {
		return err
	}
	return namespace.Do(sb.NetNS, func() error {
		l, err := netlink.LinkByName(ep.Interface)
		if err != nil {
			return fmt.Errorf("interface %s in %s: %w", ep.Interface, sb.NetNS, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("addresses of %s in %s: %w", ep.Interface, sb.NetNS, err)
		}
		for _, want := range ep.Addrs() {
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { got, _ := netip.AddrFromSlice(a.IP); return got.Unmap() == want }) {
				return fmt.Errorf("interface %s in %s lost its address %s", ep.Interface, sb.NetNS, want)
			}
		}
		if sb.HandOver {
			return nil // its runtime routes
		}
		// The first network attached gave the default route of each family.
		for _, c := range []struct {
			family int
			gw     netip.Addr
		}{{netlink.FAMILY_V4, n.DefaultGateway(false)}, {netlink.FAMILY_V6, n.DefaultGateway(true)}} {
			if !c.gw.IsValid() || c.family == netlink.FAMILY_V6 && !ep.Addr6.IsValid() {
				continue // nowhere to route to
			}
			routes, err := netlink.RouteList(nil, c.family)
			if err != nil {
				return fmt.Errorf("routes in %s: %w", sb.NetNS, err)
			}
			if !slices.ContainsFunc(routes, IsDefaultRoute) {
				return fmt.Errorf("no default route in %s (via %s)", sb.NetNS, c.gw)
			}
		}
		return nil
	})
}

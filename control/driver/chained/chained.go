// Package chained is the driver of networks another CNI plugin built: a
// bridge and veths the reference bridge plugin (or another) made, or the
// routed veths of the reference ptp plugin, which ebpfnet, chained after
// it in place of portmap, serves with its datapath without owning any of
// them. The network exists in the store so that the
// datapath knows its subnet and endpoints; its devices stay the other
// plugin's to make and remove.
package chained

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver serves chained networks.
type Driver struct{}

// Configure refuses every option: the other plugin's configuration is
// the network's.
func (Driver) Configure(n *store.Network, opts map[string]string) error {
	for k := range opts {
		return errdefs.Invalidf("option %s: a chained network takes no options", k)
	}
	return nil
}

func (Driver) Validate(store.Network) error { return nil }

// Traits: the other plugin routes and masquerades; the network comes and
// goes with its endpoints.
func (Driver) Traits() driver.Traits {
	return driver.Traits{Datapath: true, StackRoutes: true, Implicit: true, RuntimeAddresses: true}
}

func (Driver) Tunnel(store.Network) (string, bool)      { return "", false }
func (Driver) Inspect(store.Network, map[string]string) {}
func (Driver) Setup(*store.Network) error               { return nil }
func (Driver) Teardown(store.Network) error             { return nil }

// Attach finds the host side the other plugin made.
func (Driver) Attach(n store.Network, ep *store.Endpoint, _ netlink.NsFd) (int, error) {
	l, err := hostSide(n, *ep)
	if err != nil {
		return 0, err
	}
	if l.Type() != "veth" {
		return 0, errdefs.Invalidf("host side %s is a %s, not a veth", ep.HostSide, l.Type())
	}
	return l.Attrs().Index, nil
}

// hostSide finds an endpoint's host side: on the network's bridge, or on
// none when the other plugin made no bridge (ptp: a veth per container,
// routed by the host).
func hostSide(n store.Network, ep store.Endpoint) (netlink.Link, error) {
	if n.Bridge != "" {
		return driver.HostSideOnBridge(ep.HostSide, n.Bridge)
	}
	l, err := netlink.LinkByName(ep.HostSide)
	if err != nil {
		return nil, fmt.Errorf("host side %s: %w", ep.HostSide, err)
	}
	if l.Attrs().MasterIndex != 0 {
		return nil, errdefs.Invalidf("host side %s is on a bridge, and network %s has none", ep.HostSide, n.Name)
	}
	return l, nil
}

// Detach leaves the host side to the plugin that made it.
func (Driver) Detach(store.Network, string, store.Endpoint) error { return nil }

// Check fails when the host side is gone or hangs off another bridge.
func (Driver) Check(n store.Network, ep store.Endpoint) error {
	_, err := hostSide(n, ep)
	return err
}

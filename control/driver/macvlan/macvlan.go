package macvlan

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver makes an endpoint a macvlan child (bridge mode) of a
// parent interface, created in the sandbox. The network has no host side
// and the datapath does not serve it: its traffic never crosses the host's
// stack.
type Driver struct{}

// options are the macvlan driver's, named as Docker's macvlan driver
// names them.
var options = []driver.Option{
	{Key: driver.OptParent, Set: func(n *store.Network, v string) error {
		n.Parent = v
		return driver.CheckIfname(v)
	}},
	{Key: driver.OptMacvlanMode, Set: func(_ *store.Network, v string) error {
		if v != "bridge" {
			return fmt.Errorf("mode %q is not supported (only bridge)", v)
		}
		return nil
	}},
	driver.EnableIPv6,
	driver.MTU,
}

func (Driver) Configure(n *store.Network, opts map[string]string) error {
	if err := driver.ApplyOptions(n, opts, options); err != nil {
		return err
	}
	if n.Parent == "" {
		return errdefs.Invalidf("a macvlan network needs a parent interface (option %s)", driver.OptParent)
	}
	return nil
}

func (Driver) Validate(n store.Network) error { return checkParent(n.Parent) }

// Traits: the parent's network carries macvlan endpoints, past the
// datapath.
func (Driver) Traits() driver.Traits { return driver.Traits{OwnAddresses: true} }

func (Driver) Tunnel(store.Network) (string, bool)      { return "", false }
func (Driver) Inspect(store.Network, map[string]string) {}

// Setup checks the parent is still there: the network has nothing else.
func (Driver) Setup(n *store.Network) error { return checkParent(n.Parent) }

func (Driver) Teardown(store.Network) error { return nil }

func (Driver) Attach(n store.Network, ep *store.Endpoint, sandbox netlink.NsFd) (int, error) {
	parent, err := netlink.LinkByName(n.Parent)
	if err != nil {
		return 0, fmt.Errorf("look up parent interface %s of network %s: %w", n.Parent, n.Name, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.Interface
	attrs.MTU = n.MTU
	attrs.ParentIndex = parent.Attrs().Index
	attrs.HardwareAddr = driver.EndpointMAC(*ep)
	attrs.Namespace = sandbox
	if err := netlink.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		return 0, fmt.Errorf("create macvlan %s on %s: %w", ep.Interface, n.Parent, err)
	}
	return 0, nil
}

// Detach deletes the child in the sandbox, unless the namespace is gone
// (and the child with it).
func (Driver) Detach(_ store.Network, sandboxNS string, ep store.Endpoint) error {
	if !namespace.IsNamespace(sandboxNS) {
		return nil
	}
	return namespace.Do(sandboxNS, func() error { return driver.DeleteLink(ep.Interface) })
}

func (Driver) Check(store.Network, store.Endpoint) error { return nil }

func checkParent(parent string) error {
	if _, err := netlink.LinkByName(parent); err != nil {
		if driver.IsNotFound(err) {
			return errdefs.Invalidf("parent interface %s does not exist", parent)
		}
		return fmt.Errorf("look up parent interface %s: %w", parent, err)
	}
	return nil
}

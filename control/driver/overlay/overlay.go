package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/bridge"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Overhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20), UDP
// (8), VXLAN (8) and the inner Ethernet header (14). An overlay's MTU is
// its underlay's less this, so no encapsulated packet is fragmented.
const Overhead = 50

// Driver makes an overlay network a bridge with a VXLAN port, and its
// endpoints veths on the bridge, as the bridge driver does.
type Driver struct{ bridge.Driver }

// options are Docker's overlay driver's that ebpfnet has.
var options = append([]driver.Option{driver.MTU, driver.Egress}, driver.PublishSources...)

// Configure names the bridge after the network.
func (Driver) Configure(n *store.Network, opts map[string]string) error {
	if err := driver.ApplyOptions(n, opts, options); err != nil {
		return err
	}
	n.Bridge = "ebo-" + n.ID[:min(11, len(n.ID))]
	return nil
}

// Device is the name of an overlay network's VXLAN device.
func Device(n store.Network) string { return fmt.Sprintf("ebx-%d", n.VNI) }

// Traits: a bridge's, on every host of the cluster, whose frames cross
// the tunnel, past the uplinks' XDP path.
func (Driver) Traits() driver.Traits {
	return driver.Traits{Datapath: true, Global: true, OwnMAC: true, OwnAddresses: true}
}

// Tunnel is the network's VXLAN device.
func (Driver) Tunnel(n store.Network) (string, bool) { return Device(n), true }

// OptVXLANIDs is how Docker's inspect shows an overlay network's VNI.
const OptVXLANIDs = "com.docker.network.driver.overlay.vxlanid_list"

// Inspect shows the network's VNI, as Docker's does; not its bridge's
// options, which Docker's overlay networks have none of.
func (Driver) Inspect(n store.Network, options map[string]string) {
	options[OptVXLANIDs] = fmt.Sprint(n.VNI)
}

// Validate refuses a network whose devices exist already, or whose VTEP
// address no interface of the host has.
func (d Driver) Validate(n store.Network) error {
	if err := d.Driver.Validate(n); err != nil {
		return err
	}
	if _, err := netlink.LinkByName(Device(n)); err == nil {
		return errdefs.Conflictf("interface %s already exists: VNI %d is in use on this host", Device(n), n.VNI)
	}
	_, err := underlay(n.VTEP)
	return err
}

// underlay is the interface holding the VTEP address.
func underlay(vtep netip.Addr) (netlink.Link, error) {
	addrs, err := driver.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vtep {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, errdefs.Invalidf("no interface has the cluster advertise address %s", vtep)
}

// MTU is what an overlay network's MTU is when no option sets it: its
// underlay's, the interface holding the VTEP address, less the overhead.
func MTU(vtep netip.Addr) (int, error) {
	under, err := underlay(vtep)
	if err != nil {
		return 0, err
	}
	return under.Attrs().MTU - Overhead, nil
}

// Setup makes the bridge and the VXLAN device on it.
func (d Driver) Setup(n *store.Network) error {
	under, err := underlay(n.VTEP)
	if err != nil {
		return err
	}
	if err := d.Driver.Setup(n); err != nil {
		return err
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", n.Bridge, err)
	}
	name := Device(*n)
	l, err := netlink.LinkByName(name)
	switch {
	case driver.IsNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.MasterIndex = name, n.MTU, br.Attrs().Index
		vx := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(n.VNI), VtepDevIndex: under.Attrs().Index,
			SrcAddr: n.VTEP.AsSlice(), Port: int(maps.VXLANPort), Learning: false, Proxy: true}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("create VXLAN device %s (VNI %d): %w", name, n.VNI, err)
		}
		if l, err = netlink.LinkByName(name); err == nil {
			err = netlink.LinkSetAlias(l, driver.AliasNetwork+n.ID)
		}
		if err != nil {
			netlink.LinkDel(vx)
			return fmt.Errorf("label VXLAN device %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look up VXLAN device %s: %w", name, err)
	case l.Attrs().Alias != driver.AliasNetwork+n.ID:
		return errdefs.Conflictf("interface %s exists and is not this network's VXLAN device", name)
	case l.Attrs().MasterIndex != br.Attrs().Index:
		if err := netlink.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("put VXLAN device %s on bridge %s: %w", name, n.Bridge, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring VXLAN device %s up: %w", name, err)
	}
	return nil
}

// Teardown removes the VXLAN device and the bridge; missing ones are fine.
func (d Driver) Teardown(n store.Network) error {
	return errors.Join(driver.DeleteLink(Device(n)), d.Driver.Teardown(n))
}

// Peer is an endpoint of the network on another host.
type Peer struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
	VTEP netip.Addr // the host it is on
}

// SyncPeers makes the VXLAN device know exactly peers: each MAC's VTEP
// and each address's MAC. Only what differs is written, so a cluster of
// thousands of endpoints costs a change one netlink request or two. It
// runs in the dataplane's namespace.
func SyncPeers(n store.Network, peers []Peer) error {
	vx, err := netlink.LinkByName(Device(n))
	if err != nil {
		return fmt.Errorf("look up VXLAN device of network %s: %w", n.Name, err)
	}
	index := vx.Attrs().Index
	fdb, err := driver.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(index, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", Device(n), err)
	}
	neigh, err := driver.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(index, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", Device(n), err)
	}
	// What the device has and what it should have, as MAC→VTEP and
	// address→MAC.
	type entry struct{ key, value string }
	has, want := map[entry]netlink.Neigh{}, map[entry]netlink.Neigh{}
	for _, f := range fdb {
		if f.IP != nil && !f.IP.IsUnspecified() {
			has[entry{"fdb " + f.HardwareAddr.String(), f.IP.String()}] = f
		}
	}
	for _, nb := range neigh {
		has[entry{"neigh " + nb.IP.String(), nb.HardwareAddr.String()}] = nb
	}
	for _, p := range peers {
		want[entry{"fdb " + p.MAC.String(), p.VTEP.String()}] = netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE,
			Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: p.VTEP.AsSlice(), HardwareAddr: p.MAC}
		want[entry{"neigh " + p.Addr.String(), p.MAC.String()}] = netlink.Neigh{LinkIndex: index, Family: unix.AF_INET,
			State: netlink.NUD_PERMANENT, IP: p.Addr.AsSlice(), HardwareAddr: p.MAC}
	}
	var errs []error
	for e, nb := range has {
		if _, ok := want[e]; !ok {
			errs = append(errs, wrap(ignoreGone(netlink.NeighDel(&nb)), "remove "+e.key, e.value))
		}
	}
	for e, nb := range want {
		if _, ok := has[e]; !ok {
			errs = append(errs, wrap(netlink.NeighSet(&nb), "add "+e.key, e.value))
		}
	}
	return errors.Join(errs...)
}

func wrap(err error, what, value string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", what, value, err)
}

func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

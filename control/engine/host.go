package engine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// hostView is the dataplane namespace's interfaces and their addresses,
// as readHost reads them.
type hostView struct {
	seq    uint64 // which read (Engine.hostReads)
	links  []netlink.Link
	byLink map[int][]netlink.Addr
	// partial: interfaces came and went through every try of the read,
	// which may lack some or name some gone. Good enough to look names up
	// by and to find leftovers by, which are looked at again; not to
	// apply (applyHost), which would detach an uplink it lacks.
	partial bool
}

// readHost reads the dataplane namespace's interfaces and addresses. It
// needs no lock, and it reads through a netlink socket of its own in that
// namespace, not on the thread kept there (inHost): a host with thousands
// of sandboxes has as many veths, and a read of them all takes longer
// than a change, which must wait for neither. Changes that make and
// remove interfaces all the while make it partial (readWholeHost).
func (e *Engine) readHost() (hostView, error) {
	seq := e.hostReads.Add(1)
	ns, err := netns.GetFromPath(e.cfg.NetNS)
	if err != nil {
		return hostView{}, fmt.Errorf("open the dataplane namespace %s: %w", e.cfg.NetNS, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return hostView{}, fmt.Errorf("netlink socket in the dataplane namespace: %w", err)
	}
	defer nl.Close()
	beforeHostRead()
	h, err := dumpHost(nl)
	h.seq = seq
	return h, err
}

// readWholeHost is readHost, made again on the dataplane namespace's
// thread when it was partial: the changes make their interfaces there,
// and wait for the read.
func (e *Engine) readWholeHost() (hostView, error) {
	h, err := e.readHost()
	if err != nil || !h.partial {
		return h, err
	}
	seq := e.hostReads.Add(1)
	err = e.inHost(func() (err error) { h, err = dumpHost(&netlink.Handle{}); return err })
	if err == nil && h.partial {
		err = fmt.Errorf("list interfaces: %w", netlink.ErrDumpInterrupted)
	}
	h.seq = seq
	return h, err
}

// dumpHost reads the interfaces and addresses of nl's namespace; partial
// when they changed through every try.
func dumpHost(nl *netlink.Handle) (hostView, error) {
	var h hostView
	links, err := driver.Dump(nl.LinkList)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		h.partial, err = true, nil
	}
	if err != nil {
		return hostView{}, fmt.Errorf("list interfaces: %w", err)
	}
	// One dump of every address, not one per interface: the kernel
	// dumps them all either way, and per interface that cost the square
	// of the interfaces, a veth per sandbox among them.
	all, err := driver.Dump(func() ([]netlink.Addr, error) { return nl.AddrList(nil, netlink.FAMILY_ALL) })
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		h.partial, err = true, nil
	}
	if err != nil {
		return hostView{}, fmt.Errorf("list addresses: %w", err)
	}
	h.links, h.byLink = links, map[int][]netlink.Addr{}
	for _, a := range all {
		h.byLink[a.LinkIndex] = append(h.byLink[a.LinkIndex], a)
	}
	return h, nil
}

// beforeHostRead runs as readHost begins its read: the tests hold a read
// there.
var beforeHostRead = func() {}

// applyHost brings the datapath in line with the dataplane namespace's
// addresses and uplinks as readHost read them, unless a later read was
// applied: it attaches the uplink program where it belongs and rewrites
// host_addrs and uplinks. Callers hold e.mu.
func (e *Engine) applyHost(h hostView) error {
	if h.seq < e.hostApplied {
		return nil // a later read was applied
	}
	e.hostApplied = h.seq
	var (
		addrs   []netip.Addr
		foreign []netip.Prefix
		uplinks = map[uint32]maps.Uplink{}
		// The addresses flows leave from, by uplink name.
		addrsOut = map[netip.Addr]string{}
		names    = map[string]bool{}
		choices  = map[string]loader.UplinkChoice{}
		refused  = map[string]bool{}
		errs     []error
	)
	err := e.inHost(func() error {
		toOutside := bridgesToOutside(h.links)
		for _, l := range h.links {
			attrs := l.Attrs()
			list := h.byLink[attrs.Index]
			isForeign := containerBridge(l, toOutside) && !slices.Contains(e.cfg.Uplinks, attrs.Name)
			// The first address of each family is what flows leaving
			// through the interface are masqueraded to; an IPv6 one must
			// be routable beyond the link.
			var first maps.Uplink
			for _, a := range list {
				ip, ok := datapathHostAddr(a)
				if !ok {
					continue
				}
				addrs = append(addrs, ip)
				switch {
				case ip.Is4() && !first.Addr.IsValid():
					first.Addr = ip
				case ip.Is6() && !first.Addr6.IsValid():
					first.Addr6 = ip
				}
				if isForeign {
					foreign = append(foreign, netip.PrefixFrom(ip, maskBits(a.IPNet.Mask)).Masked())
				}
			}
			if isForeign {
				continue // another runtime's network, not a way out
			}
			ok, err := e.isUplink(l, first)
			if err != nil {
				// Said once per interface, not on every sync.
				refused[attrs.Name] = true
				if !e.refusedUplinks[attrs.Name] {
					e.logRefusedUplink(err)
				}
			}
			if !ok {
				continue
			}
			if _, err := e.dp.AttachUplink(attrs.Name, attrs.Index); err != nil {
				errs = append(errs, err)
				continue
			}
			// Without its fast path an uplink still serves, on TC.
			choice := e.cfg.UplinkModes.Choose(attrs.Name, nicDriver(attrs.Name))
			mode := choice.Mode
			if choice.Auto && mode == loader.UplinkXDP {
				mode = loader.UplinkAuto
			}
			if err := e.dp.AttachUplinkXDP(attrs.Name, attrs.Index, mode); err != nil {
				errs = append(errs, err)
			}
			names[attrs.Name] = true
			choices[attrs.Name] = choice
			uplinks[uint32(attrs.Index)] = first
			for _, a := range []netip.Addr{first.Addr, first.Addr6} {
				if a.IsValid() {
					addrsOut[a] = attrs.Name
				}
			}
		}
		// Interfaces that stopped being uplinks lose the program.
		for name := range e.uplinks {
			if !names[name] {
				errs = append(errs, e.dp.Detach(name))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.uplinks = names
	e.uplinkChoices = choices
	e.uplinkAddrs = addrsOut
	e.refusedUplinks = refused
	errs = append(errs, e.maps.SyncHost(addrs, uplinks, foreign))
	return errors.Join(errs...)
}

// nicDriver is the driver of interface ifname, as ethtool names it
// (veth, virtio_net, i40e…), or "" when it cannot be read. It runs in the
// dataplane's namespace: the socket asked is opened there.
func nicDriver(ifname string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return ""
	}
	return unix.ByteSliceToString(info.Driver[:])
}

// bridgesToOutside lists, by ifindex, the bridges with a port that is no
// veth and no tap (a NIC, a bond, a VLAN): ways out, where a bridge whose
// ports are all veths or taps holds nothing but containers and VMs.
func bridgesToOutside(links []netlink.Link) map[int]bool {
	out := map[int]bool{}
	for _, port := range links {
		if master := port.Attrs().MasterIndex; master != 0 && port.Type() != "veth" && port.Type() != "tuntap" {
			out[master] = true
		}
	}
	return out
}

// containerBridge reports whether l is another container runtime's bridge
// (Docker's docker0 and br-…, Podman's, libvirt's): a bridge not ebpfnet's
// and no way out (bridgesToOutside). A bridge holding a NIC (br0 over
// eth0) is a way out.
func containerBridge(l netlink.Link, toOutside map[int]bool) bool {
	return l.Type() == "bridge" && !strings.HasPrefix(l.Attrs().Alias, driver.AliasPrefix) && !toOutside[l.Attrs().Index]
}

func maskBits(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// isUplink decides whether an interface carries published ports and
// masqueraded flows: a named one, or any with an address (IPv4, or IPv6
// beyond the link) that is not loopback and not ebpfnet's own. One that
// would be an uplink but has no Ethernet header is not, and the error
// says why.
func (e *Engine) isUplink(l netlink.Link, addrs maps.Uplink) (bool, error) {
	attrs := l.Attrs()
	addressed := addrs.Addr.IsValid() || addrs.Addr6.IsValid()
	var candidate bool
	if len(e.cfg.Uplinks) > 0 {
		candidate = slices.Contains(e.cfg.Uplinks, attrs.Name) && addressed
	} else {
		candidate = addressed && !addrs.Addr.IsLoopback() && !addrs.Addr6.IsLoopback() &&
			attrs.Flags&net.FlagLoopback == 0 && !strings.HasPrefix(attrs.Alias, driver.AliasPrefix)
	}
	if !candidate {
		return false, nil
	}
	if err := checkEthernet(l); err != nil {
		return false, err
	}
	return true, nil
}

// checkEthernet refuses an uplink without an Ethernet header (WireGuard,
// tun, PPP): the uplink program parses one, and would read the IP header
// as if it were one.
func checkEthernet(l netlink.Link) error {
	if encap := l.Attrs().EncapType; encap != "ether" {
		return fmt.Errorf("uplink %s has no Ethernet header (encap %s): not supported", l.Attrs().Name, encap)
	}
	return nil
}

// logRefusedUplink says why an interface is not an uplink: an error when
// the user named it, news otherwise.
func (e *Engine) logRefusedUplink(err error) {
	if len(e.cfg.Uplinks) > 0 {
		e.log.Error("refuse uplink", "err", err)
		return
	}
	e.log.Info("skip uplink", "reason", err)
}

// checkNamedUplinks refuses to start with a named uplink that exists and
// has no Ethernet header. One that appears later is refused when it does.
func checkNamedUplinks(netns string, names []string) error {
	return namespace.Do(netns, func() error {
		for _, name := range names {
			l, err := netlink.LinkByName(name)
			if err != nil {
				continue // not there yet
			}
			if err := checkEthernet(l); err != nil {
				return err
			}
		}
		return nil
	})
}

// watchHost reads the host and applies what it read whenever an address or interface of the
// dataplane namespace changes, so new host addresses serve published ports
// at once. The returned function stops it.
func (e *Engine) watchHost() (func(), error) {
	ns, err := netns.GetFromPath(e.cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("open dataplane namespace %s: %w", e.cfg.NetNS, err)
	}
	done := make(chan struct{})
	addrCh := make(chan netlink.AddrUpdate, 64)
	linkCh := make(chan netlink.LinkUpdate, 64)
	opts := netlink.AddrSubscribeOptions{Namespace: &ns}
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, opts); err != nil {
		ns.Close()
		return nil, fmt.Errorf("watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		close(done)
		ns.Close()
		return nil, fmt.Errorf("watch interfaces: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var settle <-chan time.Time
		pause := hostSettle
		for {
			select {
			case <-done:
				return
			case u, ok := <-addrCh:
				if !ok {
					return
				}
				if ip, _ := netip.AddrFromSlice(u.LinkAddress.IP); ip.Is6() && ip.IsLinkLocalUnicast() {
					continue // never a host address of the datapath's (datapathHostAddr)
				}
			case u, ok := <-linkCh:
				if !ok {
					return
				}
				if e.ownPort(u.Link) {
					continue
				}
			case <-settle:
				settle = nil
				began := time.Now()
				h, err := e.readWholeHost()
				if err == nil {
					e.mu.Lock()
					err = e.applyHost(h)
					e.mu.Unlock()
				}
				if err != nil {
					e.log.Warn("sync host addresses and uplinks", "err", err)
				}
				// A host whose every interface takes long to read (thousands
				// of veths) is read again no more than a fifth of the time.
				pause = max(hostSettle, 4*time.Since(began))
				continue
			}
			// Changes come in bursts (an interface and its addresses): settle first.
			if settle == nil {
				settle = time.After(pause)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		ns.Close()
	}, nil
}

// hostSettle is how long watchHost lets a burst of changes (an interface
// and its addresses) settle before it syncs the host.
const hostSettle = 50 * time.Millisecond

// ownPort says whether an interface event is of a port of a bridge (a
// sandbox's veth, also before it is one) or of an interface ebpfnet made
// (labelled): neither is
// an uplink, and their addresses, if any, come with events of their own,
// so they need no read of the host, which reads every interface and would
// make every create cost what the host holds. An
// uplink stays watched whatever happens to it.
func (e *Engine) ownPort(l netlink.Link) bool {
	attrs := l.Attrs()
	own := attrs.MasterIndex != 0 || strings.HasPrefix(attrs.Alias, driver.AliasPrefix) || strings.HasPrefix(attrs.Name, driver.HostSidePrefix)
	if !own {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.uplinks[attrs.Name]
}

// hostAddresses lists the IPv4 addresses of the namespace it runs in.
func hostAddresses() ([]netip.Addr, error) {
	list, err := driver.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := datapathHostAddr(a); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// datapathHostAddr is a host address as the datapath knows it (host_addrs)
// and publications may name it. IPv6 link-local addresses are none: every
// interface has one, the host sides of veths included, coming and going
// with them, and no publication is reached through them.
func datapathHostAddr(a netlink.Addr) (netip.Addr, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	ip = ip.Unmap()
	return ip, ok && !(ip.Is6() && ip.IsLinkLocalUnicast())
}

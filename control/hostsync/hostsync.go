// Package hostsync keeps the datapath in line with the dataplane
// namespace's own interfaces and addresses: the uplink programs on the
// uplinks and the addresses masqueraded flows leave from (uplinks),
// every host address (host_addrs), and the subnets of other runtimes'
// bridges. It reads the namespace without the engine's lock and applies
// what it read under it, whenever an address or an interface not
// ebpfnet's changes (Watch) and at each reconcile.
package hostsync

import (
	"errors"
	"fmt"
	"log/slog"
	stdmaps "maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config is the namespace a Syncer reads and the datapath it writes.
type Config struct {
	NetNS string // the dataplane's namespace
	// Uplinks name the interfaces that may be uplinks; none: any with an
	// address ebpfnet did not make. UplinkModes is whether they get the
	// XDP fast path.
	Uplinks     []string
	UplinkModes loader.UplinkModes
	Datapath    *loader.Datapath
	Maps        *maps.Maps
	// InHost runs fn on the thread kept in the dataplane's namespace.
	InHost func(fn func() error) error
	// Locked runs fn under the engine's lock, which Apply needs held.
	Locked func(fn func())
	// BeforeRead runs as a read begins: the tests hold one there.
	BeforeRead func()
	Log        *slog.Logger
}

// Syncer reads the host and applies what it read. What it applied is
// guarded by the lock Config.Locked takes.
type Syncer struct {
	cfg Config
	// reads numbers the reads of the host, and applied is the number of
	// the read last applied: a read that a later one overtook is not
	// applied over it.
	reads   atomic.Uint64
	applied uint64
	// uplinks are the interfaces the uplink program is on, by name;
	// choices the datapath chosen for each, and why; addrsOut the
	// addresses masqueraded flows leave from, to the uplink that has each.
	uplinks  map[string]bool
	choices  map[string]loader.UplinkChoice
	addrsOut map[netip.Addr]string
	// refused are the interfaces last found unfit to be uplinks, so that
	// each is logged once.
	refused map[string]bool
}

// New is a Syncer of cfg.
func New(cfg Config) *Syncer {
	if cfg.BeforeRead == nil {
		cfg.BeforeRead = func() {}
	}
	return &Syncer{cfg: cfg}
}

// IsUplink reports whether the uplink program is on interface name.
// Callers hold the lock Config.Locked takes.
func (s *Syncer) IsUplink(name string) bool { return s.uplinks[name] }

// Uplinks are the uplinks, the datapath chosen for each, and the
// addresses masqueraded flows leave from, to the uplink that has each:
// copies, taken under the lock Config.Locked takes.
func (s *Syncer) Uplinks() (choices map[string]loader.UplinkChoice, addrs map[netip.Addr]string) {
	s.cfg.Locked(func() { choices, addrs = stdmaps.Clone(s.choices), stdmaps.Clone(s.addrsOut) })
	return choices, addrs
}

// View is the dataplane namespace's interfaces and their addresses, as
// Read reads them.
type View struct {
	seq    uint64 // which read (Syncer.reads)
	Links  []netlink.Link
	byLink map[int][]netlink.Addr
	// Partial: interfaces came and went through every try of the read,
	// which may lack some or name some gone. Good enough to look names up
	// by and to find leftovers by, which are looked at again; not to
	// apply, which would detach an uplink it lacks.
	Partial bool
}

// Whole reports whether h was read, and whole: what Apply may apply.
func (h View) Whole() bool { return h.Links != nil && !h.Partial }

// Read reads the dataplane namespace's interfaces and addresses. It
// needs no lock, and it reads through a netlink socket of its own in that
// namespace, not on the thread kept there (inHost): a host with thousands
// of sandboxes has as many veths, and a read of them all takes longer
// than a change, which must wait for neither. Changes that make and
// remove interfaces all the while make it partial (ReadWhole).
func (s *Syncer) Read() (View, error) {
	seq := s.reads.Add(1)
	ns, err := netns.GetFromPath(s.cfg.NetNS)
	if err != nil {
		return View{}, fmt.Errorf("open the dataplane namespace %s: %w", s.cfg.NetNS, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return View{}, fmt.Errorf("netlink socket in the dataplane namespace: %w", err)
	}
	defer nl.Close()
	s.cfg.BeforeRead()
	h, err := dumpHost(nl)
	h.seq = seq
	return h, err
}

// ReadWhole is Read, made again on the dataplane namespace's
// thread when it was partial: the changes make their interfaces there,
// and wait for the read.
func (s *Syncer) ReadWhole() (View, error) {
	h, err := s.Read()
	if err != nil || !h.Partial {
		return h, err
	}
	seq := s.reads.Add(1)
	err = s.cfg.InHost(func() (err error) { h, err = dumpHost(&netlink.Handle{}); return err })
	if err == nil && h.Partial {
		err = fmt.Errorf("list interfaces: %w", netlink.ErrDumpInterrupted)
	}
	h.seq = seq
	return h, err
}

// dumpHost reads the interfaces and addresses of nl's namespace; Partial
// when they changed through every try.
func dumpHost(nl *netlink.Handle) (View, error) {
	var h View
	links, err := driver.Dump(nl.LinkList)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		h.Partial, err = true, nil
	}
	if err != nil {
		return View{}, fmt.Errorf("list interfaces: %w", err)
	}
	// One dump of every address, not one per interface: the kernel
	// dumps them all either way, and per interface that cost the square
	// of the interfaces, a veth per sandbox among them.
	all, err := driver.Dump(func() ([]netlink.Addr, error) { return nl.AddrList(nil, netlink.FAMILY_ALL) })
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		h.Partial, err = true, nil
	}
	if err != nil {
		return View{}, fmt.Errorf("list addresses: %w", err)
	}
	h.Links, h.byLink = links, map[int][]netlink.Addr{}
	for _, a := range all {
		h.byLink[a.LinkIndex] = append(h.byLink[a.LinkIndex], a)
	}
	return h, nil
}

// Apply brings the datapath in line with the dataplane namespace's
// addresses and uplinks as Read read them, unless a later read was
// applied: it attaches the uplink program where it belongs and rewrites
// host_addrs and uplinks. Callers hold the lock Config.Locked takes.
func (s *Syncer) Apply(h View) error {
	if h.seq < s.applied {
		return nil // a later read was applied
	}
	s.applied = h.seq
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
	err := s.cfg.InHost(func() error {
		toOutside := bridgesToOutside(h.Links)
		for _, l := range h.Links {
			attrs := l.Attrs()
			list := h.byLink[attrs.Index]
			isForeign := containerBridge(l, toOutside) && !slices.Contains(s.cfg.Uplinks, attrs.Name)
			// The first address of each family is what flows leaving
			// through the interface are masqueraded to; an IPv6 one must
			// be routable beyond the link.
			var first maps.Uplink
			for _, a := range list {
				ip, ok := DatapathAddr(a)
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
			if routedContainerVeth(l, list) && !slices.Contains(s.cfg.Uplinks, attrs.Name) {
				continue // a container's way in, not out
			}
			ok, err := s.isUplink(l, first)
			if err != nil {
				// Said once per interface, not on every sync.
				refused[attrs.Name] = true
				if !s.refused[attrs.Name] {
					s.logRefusedUplink(err)
				}
			}
			if !ok {
				continue
			}
			if _, err := s.cfg.Datapath.AttachUplink(attrs.Name, attrs.Index); err != nil {
				errs = append(errs, err)
				continue
			}
			// Without its fast path an uplink still serves, on TC.
			choice := s.cfg.UplinkModes.Choose(attrs.Name, nicDriver(attrs.Name))
			mode := choice.Mode
			if choice.Auto && mode == loader.UplinkXDP {
				mode = loader.UplinkAuto
			}
			if err := s.cfg.Datapath.AttachUplinkXDP(attrs.Name, attrs.Index, mode); err != nil {
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
		for name := range s.uplinks {
			if !names[name] {
				errs = append(errs, s.cfg.Datapath.Detach(name))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.uplinks = names
	s.choices = choices
	s.addrsOut = addrsOut
	s.refused = refused
	errs = append(errs, s.cfg.Maps.SyncHost(addrs, uplinks, foreign))
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

// routedContainerVeth reports whether l is the host side of a container's
// routed veth (the ptp plugin's, Calico's): a veth whose addresses are
// all host addresses (/32, /128), the container's gateway. An uplink's
// address has a subnet beyond it; a named uplink is one all the same.
func routedContainerVeth(l netlink.Link, list []netlink.Addr) bool {
	host := false
	for _, a := range list {
		ip, ok := DatapathAddr(a)
		if !ok {
			continue
		}
		if maskBits(a.IPNet.Mask) != ip.BitLen() {
			return false
		}
		host = true
	}
	return host && l.Type() == "veth"
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
func (s *Syncer) isUplink(l netlink.Link, addrs maps.Uplink) (bool, error) {
	attrs := l.Attrs()
	addressed := addrs.Addr.IsValid() || addrs.Addr6.IsValid()
	var candidate bool
	if len(s.cfg.Uplinks) > 0 {
		candidate = slices.Contains(s.cfg.Uplinks, attrs.Name) && addressed
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
func (s *Syncer) logRefusedUplink(err error) {
	if len(s.cfg.Uplinks) > 0 {
		s.cfg.Log.Error("refuse uplink", "err", err)
		return
	}
	s.cfg.Log.Info("skip uplink", "reason", err)
}

// CheckNamedUplinks refuses to start with a named uplink that exists and
// has no Ethernet header. One that appears later is refused when it does.
func CheckNamedUplinks(netns string, names []string) error {
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

// Watch reads the host and applies what it read whenever an address or interface of the
// dataplane namespace changes, so new host addresses serve published ports
// at once. The returned function stops it.
func (s *Syncer) Watch() (func(), error) {
	ns, err := netns.GetFromPath(s.cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("open dataplane namespace %s: %w", s.cfg.NetNS, err)
	}
	w, err := subscribe(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer func() { w.close() }()
		var settle <-chan time.Time
		pause := hostSettle
		for {
			select {
			case <-done:
				return
			case u, ok := <-w.addrs:
				if !ok {
					w = s.resubscribe(ns, w, done)
					break // what was missed is read with the rest
				}
				if ip, _ := netip.AddrFromSlice(u.LinkAddress.IP); ip.Is6() && ip.IsLinkLocalUnicast() {
					continue // never a host address of the datapath's (DatapathAddr)
				}
			case u, ok := <-w.links:
				if !ok || w.failed() {
					w = s.resubscribe(ns, w, done)
					break
				}
				if s.ownPort(u.Link) {
					continue
				}
			case <-settle:
				settle = nil
				began := time.Now()
				h, err := s.ReadWhole()
				if err == nil {
					s.cfg.Locked(func() { err = s.Apply(h) })
				}
				if err != nil {
					s.cfg.Log.Warn("sync host addresses and uplinks", "err", err)
				}
				// A host whose every interface takes long to read (thousands
				// of veths) is read again no more than a fifth of the time.
				pause = max(hostSettle, 4*time.Since(began))
				continue
			}
			if w == nil {
				return // stopped while subscribing again
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

// subscription is one subscription to a namespace's address and interface
// changes.
type subscription struct {
	addrs chan netlink.AddrUpdate
	links chan netlink.LinkUpdate
	done  chan struct{}
	// lost is why the kernel ended it: a socket that overflowed (ENOBUFS)
	// has dropped changes.
	lost atomic.Pointer[error]
}

// watchBuffer is the receive buffer of each watch socket. While the watch
// reads the whole host (a second or more with a thousand sandboxes'
// veths), the kernel keeps the changes made meanwhile in it; the default
// (rmem_default, about 200 KiB) held a hundred or so interface changes,
// and a host under churn overflowed it every few seconds, each time read
// whole again. It takes memory only while changes wait.
const watchBuffer = 32 << 20

func subscribe(ns netns.NsHandle) (*subscription, error) {
	w := &subscription{addrs: make(chan netlink.AddrUpdate, 64), links: make(chan netlink.LinkUpdate, 64), done: make(chan struct{})}
	lost := func(err error) { w.lost.CompareAndSwap(nil, &err) }
	if err := netlink.AddrSubscribeWithOptions(w.addrs, w.done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: lost,
		ReceiveBufferSize: watchBuffer, ReceiveBufferForceSize: true}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(w.links, w.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: lost,
		ReceiveBufferSize: watchBuffer, ReceiveBufferForceSize: true}); err != nil {
		w.close()
		return nil, fmt.Errorf("watch interfaces: %w", err)
	}
	return w, nil
}

// failed ends the subscription as the kernel does when its socket
// overflows, at the failpoint of the tests that take the watch through
// that: a big enough burst, against watchBuffer, would take far longer.
func (w *subscription) failed() bool {
	err := failpoint.Fault("hostsync.watch")
	if err != nil {
		w.lost.CompareAndSwap(nil, &err)
	}
	return err != nil
}

// close ends the subscription, and drains its channels until the
// library's readers, which may be blocked sending on them, are gone.
func (w *subscription) close() {
	if w == nil {
		return
	}
	close(w.done)
	go func() {
		for range w.addrs {
		}
	}()
	go func() {
		for range w.links {
		}
	}()
}

// resubscribe replaces a subscription the kernel ended, trying again every
// second until it can or done closes (nil then). The changes it missed are
// the caller's to read.
func (s *Syncer) resubscribe(ns netns.NsHandle, old *subscription, done <-chan struct{}) *subscription {
	var why error
	if err := old.lost.Load(); err != nil {
		why = *err
	}
	s.cfg.Log.Warn("watching the host's changes again, and reading the whole host for those missed", "err", why)
	old.close()
	for {
		w, err := subscribe(ns)
		if err == nil {
			return w
		}
		s.cfg.Log.Error("watch the host's changes", "err", err)
		select {
		case <-done:
			return nil
		case <-time.After(time.Second):
		}
	}
}

// hostSettle is how long Watch lets a burst of changes (an interface
// and its addresses) settle before it syncs the host.
const hostSettle = 50 * time.Millisecond

// ownPort says whether an interface event is of a port of a bridge (a
// sandbox's veth, also before it is one) or of an interface ebpfnet made
// (labelled): neither is
// an uplink, and their addresses, if any, come with events of their own,
// so they need no read of the host, which reads every interface and would
// make every create cost what the host holds. An
// uplink stays watched whatever happens to it.
func (s *Syncer) ownPort(l netlink.Link) bool {
	attrs := l.Attrs()
	own := attrs.MasterIndex != 0 || strings.HasPrefix(attrs.Alias, driver.AliasPrefix) || strings.HasPrefix(attrs.Name, driver.HostSidePrefix)
	if !own {
		return false
	}
	var uplink bool
	s.cfg.Locked(func() { uplink = s.uplinks[attrs.Name] })
	return !uplink
}

// Addresses lists the IPv4 addresses of the namespace it runs in.
func Addresses() ([]netip.Addr, error) {
	list, err := driver.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := DatapathAddr(a); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// DatapathAddr is a host address as the datapath knows it (host_addrs)
// and publications may name it. IPv6 link-local addresses are none: every
// interface has one, the host sides of veths included, coming and going
// with them, and no publication is reached through them.
func DatapathAddr(a netlink.Addr) (netip.Addr, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	ip = ip.Unmap()
	return ip, ok && !(ip.Is6() && ip.IsLinkLocalUnicast())
}

// owned maps the aliases of the interfaces in h that ebpfnet made to
// their names.
func (h View) Owned() map[string]string {
	owned := map[string]string{}
	for _, l := range h.Links {
		if a := l.Attrs().Alias; strings.HasPrefix(a, driver.AliasPrefix) {
			owned[a] = l.Attrs().Name
		}
	}
	return owned
}

// ifindexes looks interfaces up by name: as h has them, read before the
// lock (one lookup each would hold it for thousands), or for one made
// since, as the kernel says. A host side keeps its name for its
// endpoint's life. It runs in the dataplane's namespace.
func (h View) Ifindexes() func(name string) (int, bool) {
	byName := make(map[string]int, len(h.Links))
	for _, l := range h.Links {
		byName[l.Attrs().Name] = l.Attrs().Index
	}
	return func(name string) (int, bool) {
		if i, ok := byName[name]; ok {
			return i, true
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return 0, false // reported by the endpoint repair
		}
		return l.Attrs().Index, true
	}
}

package control

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
)

// syncHost brings the datapath in line with the dataplane namespace's
// addresses and uplinks: it attaches the uplink program where it belongs
// and rewrites host_addrs and uplinks. Callers hold e.mu.
func (e *Engine) syncHost() error {
	var (
		addrs   []netip.Addr
		uplinks = map[uint32]netip.Addr{}
		names   = map[string]bool{}
		errs    []error
	)
	err := e.inHost(func() error {
		links, err := dump(netlink.LinkList)
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			attrs := l.Attrs()
			list, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", attrs.Name, err)
			}
			var first netip.Addr
			for _, a := range list {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					addrs = append(addrs, ip)
					if !first.IsValid() {
						first = ip
					}
				}
			}
			if !e.isUplink(l, first) {
				continue
			}
			if _, err := e.dp.AttachUplink(attrs.Name, attrs.Index); err != nil {
				errs = append(errs, err)
				continue
			}
			names[attrs.Name] = true
			uplinks[uint32(attrs.Index)] = first
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
	errs = append(errs, e.maps.SyncHost(addrs, uplinks))
	return errors.Join(errs...)
}

// isUplink decides whether an interface carries published ports and
// masqueraded flows: a named one, or any with an IPv4 address that is not
// loopback and not ebpfnet's own.
func (e *Engine) isUplink(l netlink.Link, addr netip.Addr) bool {
	attrs := l.Attrs()
	if len(e.cfg.Uplinks) > 0 {
		return slices.Contains(e.cfg.Uplinks, attrs.Name) && addr.IsValid()
	}
	return addr.IsValid() && !addr.IsLoopback() && attrs.Flags&net.FlagLoopback == 0 &&
		!strings.HasPrefix(attrs.Alias, aliasPrefix)
}

// watchHost re-runs syncHost whenever an address or interface of the
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
		for {
			select {
			case <-done:
				return
			case _, ok := <-addrCh:
				if !ok {
					return
				}
			case _, ok := <-linkCh:
				if !ok {
					return
				}
			case <-settle:
				settle = nil
				e.mu.Lock()
				if err := e.syncHost(); err != nil {
					e.log.Warn("sync host addresses and uplinks", "err", err)
				}
				e.mu.Unlock()
				continue
			}
			// Changes come in bursts (an interface and its addresses): settle first.
			if settle == nil {
				settle = time.After(50 * time.Millisecond)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		ns.Close()
	}, nil
}

// hostAddresses lists the IPv4 addresses of the namespace it runs in.
func hostAddresses() ([]netip.Addr, error) {
	list, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

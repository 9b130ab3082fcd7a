package monitor

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// StoreNames names the monitor's events from the store and the dataplane
// namespace's interfaces, which InHost lists.
type StoreNames struct {
	Store  *store.Store
	InHost func(fn func() error) error
	// Answers names what the resolver answered (Namer.Answered).
	Answers func(src, dst netip.Addr) string
}

func (m StoreNames) Answered(src, dst netip.Addr) string {
	if m.Answers == nil {
		return ""
	}
	return m.Answers(src, dst)
}

func (m StoreNames) Filter(f api.EventFilter) (api.EventFilter, error) {
	err := m.Store.View(func(tx *store.Tx) error {
		if f.Sandbox != "" {
			sb, err := tx.Sandbox(f.Sandbox)
			if err != nil {
				return err
			}
			f.Sandbox = sb.Name
		}
		if f.Network != "" {
			n, err := tx.Network(f.Network)
			if err != nil {
				return err
			}
			f.Network = n.Name
		}
		return nil
	})
	return f, err
}

func (m StoreNames) Names() (Names, error) {
	names := Names{Interfaces: map[uint32]string{}, HostSides: map[uint32]Endpoint{},
		Addrs: map[netip.Addr]Endpoint{}}
	hostSides := map[string]Endpoint{}
	nets, sbs, storeErr := m.Store.Snapshot()
	if storeErr != nil {
		storeErr = fmt.Errorf("read the store: %w", storeErr)
	}
	byID := store.ByID(nets)
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			name := Endpoint{Sandbox: sb.Name, Network: byID[ep.NetworkID].Name}
			for _, a := range []netip.Addr{ep.Addr, ep.Addr6} {
				if a.IsValid() {
					names.Addrs[a] = name
				}
			}
			if ep.HostSide != "" {
				hostSides[ep.HostSide] = name
			}
		}
	}
	linkErr := m.InHost(func() error {
		links, err := driver.Dump(netlink.LinkList)
		for _, l := range links {
			a := l.Attrs()
			names.Interfaces[uint32(a.Index)] = a.Name
			if name, ok := hostSides[a.Name]; ok {
				names.HostSides[uint32(a.Index)] = name
			}
		}
		return err
	})
	if linkErr != nil {
		linkErr = fmt.Errorf("list interfaces: %w", linkErr)
	}
	return names, errors.Join(storeErr, linkErr)
}

package engine

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/monitor"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Events opens a stream of the datapath's events that f picks (package
// monitor). While a stream is open, the datapath writes events; Close it
// when done.
func (e *Engine) Events(f api.EventFilter) (api.EventStream, error) { return e.monitor.Events(f) }

// monitorNames names the monitor's events from the store and the
// dataplane namespace's interfaces.
type monitorNames struct{ e *Engine }

func (m monitorNames) Filter(f api.EventFilter) (api.EventFilter, error) {
	err := m.e.store.View(func(tx *store.Tx) error {
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

func (m monitorNames) Names() (monitor.Names, error) {
	names := monitor.Names{Interfaces: map[uint32]string{}, HostSides: map[uint32]monitor.Endpoint{},
		Addrs: map[netip.Addr]monitor.Endpoint{}}
	hostSides := map[string]monitor.Endpoint{}
	nets, sbs, storeErr := m.e.store.Snapshot()
	if storeErr != nil {
		storeErr = fmt.Errorf("read the store: %w", storeErr)
	}
	byID := store.ByID(nets)
	for _, sb := range sbs {
		for _, ep := range sb.Endpoints {
			name := monitor.Endpoint{Sandbox: sb.Name, Network: byID[ep.NetworkID].Name}
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
	linkErr := m.e.inHost(func() error {
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

// Package drivers is the one dispatch from a network's driver name to its
// driver: the engine builds networks through it, and what shows a network
// (its scope, its options) asks it too. Host and none have no driver.
package drivers

import (
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/bridge"
	"github.com/ebpfnet/ebpfnet/control/driver/chained"
	"github.com/ebpfnet/ebpfnet/control/driver/macvlan"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// For is the driver of networks of a driver name; host and none
// (store.DriverHost, store.DriverNull) have none.
func For(name string) (driver.Driver, bool) {
	switch name {
	case store.DriverBridge:
		return bridge.Driver{}, true
	case store.DriverMacvlan:
		return macvlan.Driver{}, true
	case store.DriverChained:
		return chained.Driver{}, true
	case store.DriverOverlay:
		return overlay.Driver{}, true
	}
	return nil, false
}

// TraitsOf are the traits of n's driver; host and none have none.
func TraitsOf(n store.Network) driver.Traits {
	if d, ok := For(n.Driver); ok {
		return d.Traits()
	}
	return driver.Traits{}
}

// Tunnel is the name of the device that carries a network's frames to its
// endpoints on other hosts, if it has one: an overlay's VXLAN device.
func Tunnel(n store.Network) (string, bool) {
	if d, ok := For(n.Driver); ok {
		return d.Tunnel(n)
	}
	return "", false
}

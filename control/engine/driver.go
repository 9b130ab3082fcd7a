package engine

import (
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// servedByDatapath reports whether the datapath serves n.
func servedByDatapath(n store.Network) bool { return drivers.TraitsOf(n).Datapath }

// singleInstance reports whether a driver's network is the one of its
// kind the engine makes (host and none): one more is refused.
func singleInstance(driverName string) bool {
	return driverName == store.DriverHost || driverName == store.DriverNull || driverName == NetworkNone
}

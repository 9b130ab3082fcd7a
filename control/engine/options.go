package engine

import (
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver options, named as Docker names them so existing scripts carry over.
const (
	OptBridgeName  = driver.OptBridgeName
	OptEnableICC   = driver.OptEnableICC
	OptMasquerade  = driver.OptMasquerade
	OptMTU         = driver.OptMTU
	OptGatewayMode = driver.OptGatewayMode
	OptParent      = driver.OptParent
	OptMacvlanMode = driver.OptMacvlanMode
)

// NetworkSpec is a request for a new network.
type NetworkSpec struct {
	Name     string
	Driver   string // bridge (default) or macvlan
	Subnet   netip.Prefix
	IPRange  netip.Prefix
	Gateway  netip.Addr
	Internal bool
	Options  map[string]string
	Labels   map[string]string
	DNS      []netip.Addr // upstream servers of its sandboxes' resolvers
	// ID is the network's ID when its frontend chose one (Docker's).
	ID string
	// PoolID names a pool requested on its own (RequestPool) to take the
	// network's addresses from, in place of a new one.
	PoolID string
	// Frontend names the frontend creating the network for its runtime.
	Frontend string
}

// applyOptions records the spec's driver options on n: the driver reads
// the keys it owns and refuses the rest.
func applyOptions(n *store.Network, opts map[string]string) error {
	d, ok := driverFor(n.Driver)
	if !ok {
		return errdefs.Invalidf("unknown driver %q (want bridge or macvlan)", n.Driver)
	}
	if err := d.Configure(n, opts); err != nil {
		return err
	}
	n.Options = opts
	return nil
}

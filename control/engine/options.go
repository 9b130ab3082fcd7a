package engine

import (
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Driver options, named as Docker names them so existing scripts carry over.
const (
	OptBridgeName   = driver.OptBridgeName
	OptEnableICC    = driver.OptEnableICC
	OptMasquerade   = driver.OptMasquerade
	OptMTU          = driver.OptMTU
	OptGatewayMode  = driver.OptGatewayMode
	OptGatewayMode6 = driver.OptGatewayMode6
	OptEnableIPv6   = driver.OptEnableIPv6
	OptParent       = driver.OptParent
	OptMacvlanMode  = driver.OptMacvlanMode
	OptPublishAllow = driver.OptPublishAllow
	OptPublishDeny  = driver.OptPublishDeny
	OptBalance      = driver.OptBalance
	OptEgressAllow  = driver.OptEgressAllow
)

// NetworkSpec is a request for a new network.
type NetworkSpec struct {
	Name   string
	Driver string // bridge (default), macvlan or overlay
	// IPv4 and IPv6 are each family's pool; IPv6 is read only when the
	// network has IPv6 (EnableIPv6, or the driver option OptEnableIPv6).
	IPv4, IPv6 pools.Spec
	// EnableIPv6, when set, says whether the network has IPv6, over the
	// driver option OptEnableIPv6 (as Docker's EnableIPv6 does).
	EnableIPv6 *bool
	Internal   bool
	Attachable bool // Docker's; kept for inspect
	Options    map[string]string
	Labels     map[string]string
	DNS        []netip.Addr // upstream servers of its sandboxes' resolvers
	// ID is the network's ID when its frontend chose one (Docker's).
	ID string
	// Frontend names the frontend creating the network for its runtime.
	Frontend string
}

// applyOptions records the spec's driver options on n: the driver reads
// the keys it owns and refuses the rest.
func applyOptions(n *store.Network, opts map[string]string) error {
	d, ok := drivers.For(n.Driver)
	if !ok {
		return errdefs.Invalidf("unknown driver %q (want bridge, macvlan or overlay)", n.Driver)
	}
	if err := d.Configure(n, opts); err != nil {
		return err
	}
	n.Options = opts
	return nil
}

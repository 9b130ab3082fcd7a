package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

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
}

// applyOptions checks the spec's driver options and records them on n.
func applyOptions(n *store.Network, opts map[string]string) error {
	d, hasDriver := driverFor(n.Driver)
	var allowed []string
	if hasDriver {
		allowed = d.Options()
	}
	for k, v := range opts {
		known := false
		for _, a := range allowed {
			known = known || a == k
		}
		if !known {
			return errdefs.Invalidf("unknown option %q for driver %s (known: %s)", k, n.Driver, strings.Join(allowed, ", "))
		}
		switch k {
		case OptBridgeName:
			if err := checkIfname(v); err != nil {
				return errdefs.Invalidf("option %s: %w", k, err)
			}
			n.Bridge = v
		case OptEnableICC, OptMasquerade:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errdefs.Invalidf("option %s: %q is not true or false", k, v)
			}
			if k == OptEnableICC {
				n.ICC = b
			} else {
				n.Masquerade = b
			}
		case OptGatewayMode:
			modes := []string{store.GatewayNAT, store.GatewayNATUnprotected, store.GatewayRouted, store.GatewayIsolated}
			if !slices.Contains(modes, v) {
				return errdefs.Invalidf("option %s: unknown gateway mode %q (valid: %s)", k, v, strings.Join(modes, ", "))
			}
			n.GatewayMode = v
		case OptMTU:
			mtu, err := strconv.Atoi(v)
			if err != nil || mtu < 68 || mtu > 65535 {
				return errdefs.Invalidf("option %s: %q is not an MTU between 68 and 65535", k, v)
			}
			n.MTU = mtu
		case OptParent:
			if err := checkIfname(v); err != nil {
				return errdefs.Invalidf("option %s: %w", k, err)
			}
			n.Parent = v
		case OptMacvlanMode:
			if v != "bridge" {
				return errdefs.Invalidf("option %s: mode %q is not supported (only bridge)", k, v)
			}
		}
	}
	if err := checkGatewayMode(n, opts); err != nil {
		return err
	}
	if hasDriver {
		if err := d.Configure(n); err != nil {
			return err
		}
	}
	n.Options = opts
	return nil
}

// checkGatewayMode applies what the gateway mode implies for the other
// settings, once every option is read (map order is random).
func checkGatewayMode(n *store.Network, opts map[string]string) error {
	switch n.GatewayMode {
	case store.GatewayRouted:
		// Routed means the outside sees sandboxes by their own addresses:
		// masquerading them would undo the mode, so asking for both is a
		// mistake rather than a preference.
		if n.Masquerade && opts[OptMasquerade] != "" {
			return errdefs.Invalidf("option %s=%s conflicts with %s=%s: a routed network is not masqueraded",
				OptMasquerade, opts[OptMasquerade], OptGatewayMode, n.GatewayMode)
		}
		n.Masquerade = false
	case store.GatewayIsolated:
		if !n.Internal {
			return errdefs.Invalidf("option %s=%s needs --internal: an isolated network has no gateway, so it leads nowhere", OptGatewayMode, n.GatewayMode)
		}
	}
	return nil
}

// checkIfname applies the kernel's rules for interface names.
func checkIfname(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

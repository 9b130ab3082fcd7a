package driver

import (
	"errors"
	"fmt"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"slices"
	"strconv"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// An Option is a driver option a driver accepts and how it records one
// on a network. Drivers own their options: a key is read by the drivers
// that list it, and any other driver refuses it.
type Option struct {
	Key string
	// Set checks v and records it on n. Its error names the bad value;
	// ApplyOptions adds the key.
	Set func(n *store.Network, v string) error
}

// ApplyOptions records opts on n through a driver's options, refusing a
// key that none of them has. A slice, not a map, so that the keys a
// refusal lists come in the same order every time.
func ApplyOptions(n *store.Network, opts map[string]string, options []Option) error {
	for k, v := range opts {
		i := slices.IndexFunc(options, func(o Option) bool { return o.Key == k })
		if i < 0 {
			known := make([]string, len(options))
			for j, o := range options {
				known[j] = o.Key
			}
			return errdefs.Invalidf("unknown option %q for driver %s (known: %s)", k, n.Driver, strings.Join(known, ", "))
		}
		if err := options[i].Set(n, v); err != nil {
			return errdefs.Invalidf("option %s: %w", k, err)
		}
	}
	return nil
}

// MTU is the MTU option, the same for every driver.
var MTU = Option{Key: OptMTU, Set: func(n *store.Network, v string) error {
	mtu, err := strconv.Atoi(v)
	if err != nil || mtu < 68 || mtu > 65535 {
		return fmt.Errorf("%q is not an MTU between 68 and 65535", v)
	}
	n.MTU = mtu
	return nil
}}

// EnableIPv6 is the option form of --ipv6, for the drivers whose
// endpoints take IPv6 addresses.
var EnableIPv6 = Option{Key: OptEnableIPv6, Set: func(n *store.Network, v string) (err error) {
	n.EnableIPv6, err = ParseBool(v)
	return err
}}

// ParseBool reads an option that is on or off.
func ParseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%q is not true or false", v)
	}
	return b, nil
}

// CheckIfname applies the kernel's rules for interface names.
func CheckIfname(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// MasqueradeIPv6 reports whether flows of a network's IPv6 sandboxes to
// the outside leave from the uplink's address (NAT66), as Docker's
// ip6tables do: unless masquerading is off, or the IPv6 gateway mode
// routes them. The IPv4 gateway mode has no say in it.
func MasqueradeIPv6(n store.Network) bool {
	if on, err := ParseBool(n.Options[OptMasquerade]); err == nil && !on {
		return false
	}
	mode := n.IPv6GatewayMode()
	return mode == store.GatewayNAT || mode == store.GatewayNATUnprotected
}

// PublishSources are the options of a network's published ports, for
// the drivers whose networks publish ports: the source lists every port
// published on the network without lists of its own takes, and whether
// its sandboxes share the host ports they all publish (OptBalance).
var PublishSources = []Option{
	{Key: OptPublishAllow, Set: func(n *store.Network, v string) (err error) {
		n.PublishSources.Allow, err = ports.ParsePrefixes(v)
		return errors.Join(err, n.PublishSources.Check())
	}},
	{Key: OptPublishDeny, Set: func(n *store.Network, v string) (err error) {
		n.PublishSources.Deny, err = ports.ParsePrefixes(v)
		return errors.Join(err, n.PublishSources.Check())
	}},
	{Key: OptBalance, Set: func(n *store.Network, v string) (err error) {
		n.PublishBalance, err = ParseBool(v)
		return err
	}},
}

// Egress is the option of the egress list of a network's sandboxes, for
// the drivers whose endpoints the datapath serves.
var Egress = Option{Key: OptEgressAllow, Set: func(n *store.Network, v string) (err error) {
	n.EgressAllow, err = egress.Parse(v)
	return err
}}

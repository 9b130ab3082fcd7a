package api

import (
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Addresses arrive as text: on the command line, in a runtime's JSON, in a
// CNI configuration. Each way in decodes them once, with these, into the
// requests' netip types, and an error names the bad value; the daemon
// decodes the API's JSON into the same types.

// ParseAddr reads an address of either family; "" is none. what names the
// value in the error: "gateway", "IP address".
func ParseAddr(what, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errdefs.Invalidf("invalid %s %q: want an IPv4 or IPv6 address", what, s)
	}
	return a, nil
}

// ParseAddress is ParseAddr for an address given bare or with a prefix
// length, as runtimes hand them over.
func ParseAddress(what, s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, errdefs.Invalidf("invalid %s %q: want an IPv4 or IPv6 address", what, s)
		}
		return p.Addr(), nil
	}
	return ParseAddr(what, s)
}

// ParsePrefix reads a CIDR of either family; "" is none.
func ParsePrefix(what, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errdefs.Invalidf("invalid %s %q: want a CIDR such as 172.19.0.0/16 or fd12:3456:789a::/64", what, s)
	}
	return p, nil
}

// ParseIPv4 is ParseAddr for a value that only an IPv4 address may be.
func ParseIPv4(what, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errdefs.Invalidf("invalid %s %q: want an IPv4 address", what, s)
	}
	return a, CheckFamily(what, a, false)
}

// CheckFamily refuses a decoded address of the other family (v6 or not)
// than what its field takes, and an IPv6 one with a zone or mapping an
// IPv4 address; none is fine. The JSON decoder takes either family, so
// the daemon checks what its fields want with this too.
func CheckFamily(what string, a netip.Addr, v6 bool) error {
	if !a.IsValid() || a.Is6() == v6 && !a.Is4In6() && a.Zone() == "" {
		return nil
	}
	if v6 {
		return errdefs.Invalidf("invalid %s %q: want an IPv6 address such as fd12:3456:789a::10", what, a)
	}
	return errdefs.Invalidf("invalid %s %q: want an IPv4 address", what, a)
}

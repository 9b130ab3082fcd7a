package main

import (
	"net/netip"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Address flags are decoded as they are given, into the requests' netip
// types: a bad value is refused before any request, in the API's words
// (api.ParseAddr, api.ParsePrefix).

// addrFlag is a flag of one address.
type addrFlag struct {
	to    *netip.Addr
	parse func(string) (netip.Addr, error)
}

func (f addrFlag) Set(s string) (err error) { *f.to, err = f.parse(s); return err }
func (f addrFlag) Type() string             { return "ip" }
func (f addrFlag) String() string {
	if f.to == nil || !f.to.IsValid() {
		return ""
	}
	return f.to.String()
}

// listFlag is a repeatable flag whose values add up, in order; parse
// reads one value as one item or several.
type listFlag[T interface{ String() string }] struct {
	to    *[]T
	parse func(string) ([]T, error)
	kind  string
}

func (f listFlag[T]) Set(s string) error {
	v, err := f.parse(s)
	if err == nil {
		*f.to = append(*f.to, v...)
	}
	return err
}

// one makes a parser of one value a parser of lists.
func one[T any](parse func(string) (T, error)) func(string) ([]T, error) {
	return func(s string) ([]T, error) {
		v, err := parse(s)
		if err != nil {
			return nil, err
		}
		return []T{v}, nil
	}
}

func (f listFlag[T]) Type() string { return f.kind }

// String is what --help shows as the default: nothing for an empty list,
// which pflag would otherwise print as "(default [])".
func (f listFlag[T]) String() string {
	if f.to == nil || len(*f.to) == 0 {
		return ""
	}
	var out []string
	for _, v := range *f.to {
		out = append(out, v.String())
	}
	return "[" + strings.Join(out, ",") + "]"
}

// egressFlag is a repeatable flag of egress rules, checked as they are
// given and kept in canonical form.
type egressFlag struct{ to *[]string }

func (f egressFlag) Set(s string) error {
	l, err := egress.Parse(s)
	if err == nil {
		*f.to = append(*f.to, l...)
	}
	return err
}
func (f egressFlag) Type() string   { return "rule" }
func (f egressFlag) String() string { return strings.Join(*f.to, ",") } // "" for none, as listFlag

// egressVar defines the flag of an egress list.
func egressVar(f *pflag.FlagSet, to *[]string) {
	f.Var(egressFlag{to}, "egress-allow",
		"where the sandbox may send: CIDR (either family), DNS name or *.domain (repeatable; without it, anywhere)")
}

// addrVar defines a flag of one address read with parse (api.ParseAddr,
// api.ParseIPv4), what in its errors.
func addrVar(f *pflag.FlagSet, to *netip.Addr, parse func(what, s string) (netip.Addr, error), name, what, usage string) {
	f.Var(addrFlag{to, func(s string) (netip.Addr, error) { return parse(what, s) }}, name, usage)
}

// addrsVar defines a repeatable flag of addresses read with parse.
func addrsVar(f *pflag.FlagSet, to *[]netip.Addr, parse func(what, s string) (netip.Addr, error), name, what, usage string) {
	f.Var(listFlag[netip.Addr]{to, one(func(s string) (netip.Addr, error) { return parse(what, s) }), "ip"}, name, usage)
}

// prefixesVar defines a repeatable flag of CIDRs.
func prefixesVar(f *pflag.FlagSet, to *[]netip.Prefix, name, what, usage string) {
	f.Var(listFlag[netip.Prefix]{to, one(func(s string) (netip.Prefix, error) { return api.ParsePrefix(what, s) }), "cidr"}, name, usage)
}

// sourcesVar defines the two flags of source lists, named allow and deny,
// for what they limit: prefixes, each flag repeatable or comma-separated,
// a bare address its own /32 or /128 (ports.ParsePrefixes). The daemon
// checks them and names a bad one.
func sourcesVar(f *pflag.FlagSet, to *api.Sources, allow, deny, what string) {
	f.Var(listFlag[netip.Prefix]{&to.Allow, ports.ParsePrefixes, "cidr"}, allow, "allow sources of "+what+": CIDR or address (repeatable)")
	f.Var(listFlag[netip.Prefix]{&to.Deny, ports.ParsePrefixes, "cidr"}, deny, "deny sources of "+what+": CIDR or address (repeatable)")
}

package main

import (
	"errors"

	"github.com/spf13/pflag"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// unitFlag is a flag of a rate or a size with its unit, decoded into the
// numbers a request holds (api.ParseRate, api.ParseSize); it sets every
// field of to.
type unitFlag struct {
	to    []*uint64
	parse func(what, s string) (uint64, error)
	what  string
	kind  string
	text  string
}

func (f *unitFlag) Set(s string) error {
	v, err := f.parse(f.what, s)
	if err != nil {
		return err
	}
	for _, to := range f.to {
		*to = v
	}
	f.text = s
	return nil
}

func (f *unitFlag) Type() string   { return f.kind }
func (f *unitFlag) String() string { return f.text }

// bandwidthFlags adds the flags of a sandbox's bandwidth limits, which
// set bw; checkBandwidthFlags completes it once they are parsed.
func bandwidthFlags(f *pflag.FlagSet, bw *api.Bandwidth) {
	f.Var(&unitFlag{to: []*uint64{&bw.EgressRate}, parse: api.ParseRate, what: "egress rate", kind: "rate"}, "egress-rate",
		"limit what the sandbox sends to this rate (50mbit, 1gbit, 500kbit; 0: no limit)")
	f.Var(&unitFlag{to: []*uint64{&bw.IngressRate}, parse: api.ParseRate, what: "ingress rate", kind: "rate"}, "ingress-rate",
		"limit what reaches the sandbox to this rate")
	f.Var(&unitFlag{to: []*uint64{&bw.EgressBurst, &bw.IngressBurst}, parse: api.ParseSize, what: "burst", kind: "size"}, "burst",
		"bytes a limit lets through at once (64kb, 1mb; default: 250 ms of the rate, at least 128kb)")
}

// checkBandwidthFlags keeps --burst for the directions with a rate, and
// refuses it without any.
func checkBandwidthFlags(bw *api.Bandwidth) error {
	if bw.EgressRate == 0 && bw.IngressRate == 0 && bw.EgressBurst != 0 {
		return errors.New("--burst needs --egress-rate or --ingress-rate")
	}
	if bw.EgressRate == 0 {
		bw.EgressBurst = 0
	}
	if bw.IngressRate == 0 {
		bw.IngressBurst = 0
	}
	return nil
}

// limitFlags says which of the bandwidth flags an update gave.
type limitFlags struct{ egress, ingress, burst bool }

func (g limitFlags) any() bool { return g.egress || g.ingress || g.burst }

// update is the limits cur changed by the flags given, whose values are
// in flags: a rate given replaces its direction's, with --burst's burst
// or else the default; --burst alone changes the burst of each direction
// that has a rate. The directions not named keep theirs.
func (g limitFlags) update(cur, flags api.Bandwidth) (api.Bandwidth, error) {
	out := cur
	if g.egress {
		out.EgressRate, out.EgressBurst = flags.EgressRate, 0
	}
	if g.ingress {
		out.IngressRate, out.IngressBurst = flags.IngressRate, 0
	}
	if g.burst {
		named := g.egress || g.ingress
		if (g.egress || !named) && out.EgressRate != 0 {
			out.EgressBurst = flags.EgressBurst
		}
		if (g.ingress || !named) && out.IngressRate != 0 {
			out.IngressBurst = flags.IngressBurst
		}
		if out.EgressBurst != flags.EgressBurst && out.IngressBurst != flags.IngressBurst {
			return out, errors.New("--burst needs a limit: give --egress-rate or --ingress-rate")
		}
	}
	err := checkBandwidthFlags(&out)
	return out, err
}

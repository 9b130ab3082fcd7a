package main

import (
	"errors"
	"fmt"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// bandwidthEntry is the bandwidth capability (runtimeConfig.bandwidth,
// CNI's CONVENTIONS.md), or the same keys in the plugin's configuration,
// as the reference bandwidth plugin reads them: rates in bits per second,
// bursts in bits; 0 is none. Ingress is what reaches the container,
// egress what it sends.
type bandwidthEntry struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
	// The reference plugin's lists of destinations to shape or leave
	// alone, which ebpfnet's limits, per sandbox, do not have.
	UnshapedSubnets []string `json:"unshapedSubnets,omitempty"`
	ShapedSubnets   []string `json:"shapedSubnets,omitempty"`
}

// bandwidthOf is the limits conf asks for: those of the plugin's own
// configuration where it has any, else the capability's, as the
// reference plugin takes them. Unlike it, a rate without a burst gets the
// datapath's default burst.
func bandwidthOf(conf *netConf) (api.Bandwidth, error) {
	e := &conf.bandwidthEntry
	if e.isZero() {
		e = conf.RuntimeConfig.Bandwidth
	}
	if e == nil {
		return api.Bandwidth{}, nil
	}
	if len(e.UnshapedSubnets) > 0 || len(e.ShapedSubnets) > 0 {
		return api.Bandwidth{}, errors.New("bandwidth: ebpfnet limits all of a container's traffic: shapedSubnets and unshapedSubnets are not supported")
	}
	bw := api.Bandwidth{EgressRate: e.EgressRate, EgressBurst: bytesOf(e.EgressBurst),
		IngressRate: e.IngressRate, IngressBurst: bytesOf(e.IngressBurst)}
	if err := bw.Check(); err != nil {
		return api.Bandwidth{}, fmt.Errorf("bandwidth: %w", err)
	}
	return bw, nil
}

func (e *bandwidthEntry) isZero() bool {
	return e.IngressRate == 0 && e.IngressBurst == 0 && e.EgressRate == 0 && e.EgressBurst == 0 &&
		len(e.UnshapedSubnets) == 0 && len(e.ShapedSubnets) == 0
}

// bytesOf is a burst of bits in bytes, a bit or more being a byte at
// least.
func bytesOf(bits uint64) uint64 { return (bits + 7) / 8 }

package maps

import (
	"errors"
	"fmt"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Rate is a bandwidth limit of one direction of an endpoint: the zero
// Rate is none.
type Rate struct {
	BytesPerSecond uint64
	Burst          uint64 // bytes the bucket holds: what may pass at once
}

// rateEntries is what the rate_limits map holds for an interface: an
// entry per limited direction.
func rateEntries(i Iface) map[bpf.DatapathRateKey]bpf.DatapathRateLimit {
	out := map[bpf.DatapathRateKey]bpf.DatapathRateLimit{}
	for dir, r := range map[bpf.DatapathRateDirection]Rate{
		bpf.DatapathRateDirectionRATE_EGRESS: i.Egress, bpf.DatapathRateDirectionRATE_INGRESS: i.Ingress} {
		if r.BytesPerSecond != 0 {
			out[rateKey(i.Ifindex, dir)] = bpf.DatapathRateLimit{Rate: r.BytesPerSecond, Burst: r.Burst}
		}
	}
	return out
}

func rateKey(ifindex uint32, dir bpf.DatapathRateDirection) bpf.DatapathRateKey {
	return bpf.DatapathRateKey{Ifindex: ifindex, Direction: uint32(dir)}
}

// putRates makes the rate_limits map hold i's limits. A limit that
// changes keeps its bucket, so that a change lets no burst through; a
// limit that goes takes its bucket with it.
func (m *Maps) putRates(i Iface) error {
	want := rateEntries(i)
	var errs []error
	for _, dir := range []bpf.DatapathRateDirection{bpf.DatapathRateDirectionRATE_EGRESS, bpf.DatapathRateDirectionRATE_INGRESS} {
		k := rateKey(i.Ifindex, dir)
		if v, ok := want[k]; ok {
			if err := m.m.RateLimits.Put(k, v); err != nil {
				errs = append(errs, fmt.Errorf("put rate limit of interface %d: %w", i.Ifindex, err))
			}
			continue
		}
		errs = append(errs, m.deleteRate(k))
	}
	return errors.Join(errs...)
}

// deleteRates removes the limits of an interface and their buckets.
func (m *Maps) deleteRates(ifindex uint32) error {
	return errors.Join(m.deleteRate(rateKey(ifindex, bpf.DatapathRateDirectionRATE_EGRESS)),
		m.deleteRate(rateKey(ifindex, bpf.DatapathRateDirectionRATE_INGRESS)))
}

// deleteRate removes a limit, then its bucket, which the datapath would
// otherwise keep for the next interface with that ifindex.
func (m *Maps) deleteRate(k bpf.DatapathRateKey) error {
	return errors.Join(ignoreMissing(m.m.RateLimits.Delete(k)), ignoreMissing(m.m.RateBuckets.Delete(k)))
}

// applyRates writes a plan's rate limits but for the keys skip picks; the
// buckets of the limits it deletes go with them.
func (p SyncPlan) applyRates(skip func(bpf.DatapathRateKey) bool) (int, error) {
	n, err := p.rates.apply(skip)
	errs := []error{err}
	if p.rates.m == nil {
		return n, err
	}
	for _, k := range p.rates.del {
		if !skip(k) {
			errs = append(errs, ignoreMissing(p.buckets.Delete(k)))
		}
	}
	return n, errors.Join(errs...)
}

// Rates is the limits the maps hold for an interface (the zero Rate:
// none).
func (m *Maps) Rates(ifindex uint32) (egress, ingress Rate, err error) {
	read := func(dir bpf.DatapathRateDirection) (Rate, error) {
		var v bpf.DatapathRateLimit
		if err := m.m.RateLimits.Lookup(rateKey(ifindex, dir), &v); err != nil {
			return Rate{}, ignoreMissing(err)
		}
		return Rate{BytesPerSecond: v.Rate, Burst: v.Burst}, nil
	}
	egress, eerr := read(bpf.DatapathRateDirectionRATE_EGRESS)
	ingress, ierr := read(bpf.DatapathRateDirectionRATE_INGRESS)
	if err := errors.Join(eerr, ierr); err != nil {
		return Rate{}, Rate{}, fmt.Errorf("read rate limits of interface %d: %w", ifindex, err)
	}
	return egress, ingress, nil
}

package api

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Bandwidth is a sandbox's bandwidth limits, enforced by the datapath on
// each of its endpoints: egress is what the sandbox sends, ingress what
// reaches it. Rates are in bits per second, as tc and the CNI bandwidth
// plugin give them; 0 is no limit. Bursts are in bytes; 0 is the
// datapath's default for the rate.
type Bandwidth struct {
	EgressRate   uint64 `json:"EgressRate,omitempty"`
	EgressBurst  uint64 `json:"EgressBurst,omitempty"`
	IngressRate  uint64 `json:"IngressRate,omitempty"`
	IngressBurst uint64 `json:"IngressBurst,omitempty"`
}

// Limits of what a Bandwidth may say: a rate of a byte a second at the
// least (the datapath counts bytes), a burst the datapath's arithmetic
// (nanoseconds in 64 bits) holds.
const (
	MinRate  = 8
	MaxBurst = 1 << 34 // 16 GiB
)

// IsZero reports whether b limits nothing.
func (b Bandwidth) IsZero() bool { return b == Bandwidth{} }

// Check refuses rates below MinRate, bursts over MaxBurst, and a burst of
// a direction without a rate.
func (b Bandwidth) Check() error {
	for _, d := range []struct {
		dir         string
		rate, burst uint64
	}{{"egress", b.EgressRate, b.EgressBurst}, {"ingress", b.IngressRate, b.IngressBurst}} {
		switch {
		case d.rate != 0 && d.rate < MinRate:
			return errdefs.Invalidf("%s rate %d bit/s is below %d bit/s", d.dir, d.rate, MinRate)
		case d.burst != 0 && d.rate == 0:
			return errdefs.Invalidf("%s burst %d bytes without an %s rate", d.dir, d.burst, d.dir)
		case d.burst > MaxBurst:
			return errdefs.Invalidf("%s burst %d bytes is over %d bytes", d.dir, d.burst, uint64(MaxBurst))
		}
	}
	return nil
}

// String shows b as the command line takes it.
func (b Bandwidth) String() string {
	var parts []string
	if b.EgressRate != 0 {
		parts = append(parts, "egress "+FormatRate(b.EgressRate))
	}
	if b.IngressRate != 0 {
		parts = append(parts, "ingress "+FormatRate(b.IngressRate))
	}
	return strings.Join(parts, ", ")
}

// Units as tc(8) reads them: a rate's in bits (bit, kbit…; kibit… for
// powers of two) or bytes (bps, kbps…) per second; a size's in bytes
// (b, k or kb…, powers of two, as tc and Docker have them) or bits
// (kbit…).
var (
	rateUnits = map[string]float64{
		"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
		"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30, "tibit": 1 << 40,
		"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
		"kibps": 8 << 10, "mibps": 8 << 20, "gibps": 8 << 30, "tibps": 8 << 40,
	}
	sizeUnits = map[string]float64{
		"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
		"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
	}
)

// ParseRate reads a rate with its unit ("50mbit", "1gbit", "500kbit",
// "1.5mbit") into bits per second; "0" is no limit. Any other bare number
// is refused: tc takes it for bytes, the bandwidth plugin for bits. what
// names the value in the error: "egress rate".
func ParseRate(what, s string) (uint64, error) {
	if strings.TrimSpace(s) == "0" {
		return 0, nil
	}
	v, err := parseUnits(s, rateUnits)
	if err != nil || v < MinRate {
		return 0, errdefs.Invalidf("invalid %s %q: want a number and a unit, at least %dbit (e.g. 50mbit, 1gbit, 500kbit)", what, s, MinRate)
	}
	return v, nil
}

// ParseSize reads a size ("64kb", "1mb", "1500b"; a bare number is in
// bytes) into bytes, at most MaxBurst.
func ParseSize(what, s string) (uint64, error) {
	v, err := parseUnits(s, sizeUnits)
	if err != nil || v == 0 || v > MaxBurst {
		return 0, errdefs.Invalidf("invalid %s %q: want a size of 1b to 16gb (e.g. 64kb, 1mb)", what, s)
	}
	return v, nil
}

// parseUnits reads a non-negative number followed by a unit of units
// (case-insensitive).
func parseUnits(s string, units map[string]float64) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	unit, ok := units[t[i:]]
	if !ok || i == 0 {
		return 0, fmt.Errorf("no number and unit in %q", s)
	}
	n, err := strconv.ParseFloat(t[:i], 64)
	if err != nil || n*unit >= math.MaxUint64/2 {
		return 0, fmt.Errorf("bad number in %q", s)
	}
	return uint64(math.Round(n * unit)), nil
}

// FormatRate shows a rate in bits per second in the largest unit of
// tc's that says it whole, or with a fraction in mbit.
func FormatRate(bits uint64) string {
	for _, u := range []struct {
		name string
		n    uint64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bits >= u.n && bits%u.n == 0 {
			return strconv.FormatUint(bits/u.n, 10) + u.name
		}
	}
	if bits >= 1e6 {
		return strconv.FormatFloat(float64(bits)/1e6, 'f', -1, 64) + "mbit"
	}
	return strconv.FormatUint(bits, 10) + "bit"
}

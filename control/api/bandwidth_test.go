package api_test

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]uint64{
		"50mbit": 50e6, "1gbit": 1e9, "500kbit": 500e3, "1.5mbit": 1.5e6, "50Mbit": 50e6, "8bit": 8,
		"1mibit": 1 << 20, "10mbps": 80e6, "1kbps": 8000, " 2gbit ": 2e9, "0": 0,
	} {
		got, err := api.ParseRate("egress rate", in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "50", "mbit", "50mb", "-5mbit", "5 mbit x", "1bit", "0mbit", "1e3mbit", "50mbitt", "99999999999999tbit"} {
		_, err := api.ParseRate("egress rate", in)
		if err == nil {
			t.Errorf("ParseRate(%q) took it", in)
			continue
		}
		// One line that names the value.
		if msg := err.Error(); !strings.Contains(msg, `"`+in+`"`) || !strings.Contains(msg, "egress rate") || strings.Contains(msg, "\n") {
			t.Errorf("ParseRate(%q): error %q should name the value and what it is, on one line", in, msg)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"64kb": 64 << 10, "1mb": 1 << 20, "1500b": 1500, "1500": 1500, "64k": 64 << 10, "1MiB": 1 << 20, "800kbit": 100e3, "1.5kb": 1536,
	} {
		got, err := api.ParseSize("burst", in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "kb", "0", "64xb", "-1kb", "17gb"} {
		if _, err := api.ParseSize("burst", in); err == nil || !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseSize(%q): error %v, want one naming the value", in, err)
		}
	}
}

func TestBandwidthCheck(t *testing.T) {
	for _, b := range []api.Bandwidth{{}, {EgressRate: 50e6}, {IngressRate: 8, IngressBurst: 1}, {EgressRate: 1e9, EgressBurst: api.MaxBurst}} {
		if err := b.Check(); err != nil {
			t.Errorf("%+v: %v", b, err)
		}
	}
	for _, b := range []api.Bandwidth{{EgressRate: 7}, {EgressBurst: 100}, {IngressBurst: 1}, {IngressRate: 1e6, IngressBurst: api.MaxBurst + 1}} {
		if err := b.Check(); err == nil {
			t.Errorf("%+v taken", b)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for in, want := range map[uint64]string{50e6: "50mbit", 1e9: "1gbit", 1500e3: "1500kbit", 1234567: "1.234567mbit", 999: "999bit"} {
		if got := api.FormatRate(in); got != want {
			t.Errorf("FormatRate(%d) = %s, want %s", in, got, want)
		}
	}
}

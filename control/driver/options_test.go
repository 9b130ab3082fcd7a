package driver

import (
	"testing"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// NAT66 follows enable_ip_masquerade and the IPv6 gateway mode alone: the
// IPv4 gateway mode has no say in it.
func TestMasqueradeIPv6(t *testing.T) {
	for _, c := range []struct {
		masquerade, mode4, mode6 string
		want                     bool
	}{
		{"", "", "", true},
		{"true", "", "", true},
		{"false", "", "", false},
		{"0", "", "", false},
		{"", "", store.GatewayRouted, false},
		{"", "", store.GatewayIsolated, false},
		{"", "", store.GatewayNATUnprotected, true},
		{"", store.GatewayRouted, "", true},
	} {
		n := store.Network{Options: map[string]string{}, GatewayMode: c.mode4, GatewayMode6: c.mode6}
		if c.masquerade != "" {
			n.Options[OptMasquerade] = c.masquerade
		}
		if got := MasqueradeIPv6(n); got != c.want {
			t.Errorf("enable_ip_masquerade=%q, gateway modes %q/%q: NAT66 %v, want %v", c.masquerade, c.mode4, c.mode6, got, c.want)
		}
	}
}

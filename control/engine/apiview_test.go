package engine

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

func TestNetworkSpecParsing(t *testing.T) {
	spec, err := networkSpec(api.NetworkCreate{Name: "app", Subnet: "172.19.0.0/16", IPRange: "172.19.5.0/24", Gateway: "172.19.0.1"})
	if err != nil || spec.Subnet.String() != "172.19.0.0/16" || spec.IPRange.String() != "172.19.5.0/24" || spec.Gateway.String() != "172.19.0.1" {
		t.Fatalf("%+v, %v", spec, err)
	}
	for _, c := range []struct {
		req  api.NetworkCreate
		want string
	}{
		{api.NetworkCreate{Subnet: "172.19.0.0"}, `invalid subnet "172.19.0.0"`},
		{api.NetworkCreate{Subnet: "172.19.0.0/16", IPRange: "x"}, `invalid ip-range "x"`},
		{api.NetworkCreate{Subnet: "172.19.0.0/16", Gateway: "172.19.0.300"}, `invalid gateway "172.19.0.300"`},
	} {
		if _, err := networkSpec(c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
	if _, err := parseIP("fd00::1"); err == nil || !strings.Contains(err.Error(), `invalid IP address "fd00::1"`) {
		t.Errorf("IPv6 --ip: %v", err)
	}
}

func TestNetworkViewGatewayMode(t *testing.T) {
	pool, err := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	sb := store.Sandbox{ID: "sb1", Name: "web", Endpoints: []store.Endpoint{{NetworkID: "n1", Addr: netip.MustParseAddr("172.19.0.2")}}}
	for _, c := range []struct {
		mode, option, gateway string
	}{
		{"", "", "172.19.0.1"}, // not chosen (or stored before modes existed): not listed, as with Docker
		{"nat", "nat", "172.19.0.1"},
		{"routed", "routed", "172.19.0.1"},
		{"isolated", "isolated", ""}, // no gateway at all
	} {
		n := store.Network{ID: "n1", Name: "app", Driver: store.DriverBridge, Bridge: "br-app", Pool: pool, GatewayMode: c.mode, Internal: c.mode == "isolated"}
		v := networkView(n, []store.Sandbox{sb})
		option, listed := v.Options[OptGatewayMode]
		if option != c.option || listed != (c.option != "") {
			t.Errorf("mode %q: option %q (listed %t), want %q", c.mode, option, listed, c.option)
		}
		if got := v.IPAM.Config[0].Gateway; got != c.gateway {
			t.Errorf("mode %q: IPAM gateway %q, want %q", c.mode, got, c.gateway)
		}
		nets := map[string]store.Network{n.ID: n}
		if got := sandboxView(sb, nil, nets, "", "").NetworkSettings.Networks["app"].Gateway; got != c.gateway {
			t.Errorf("mode %q: endpoint gateway %q, want %q", c.mode, got, c.gateway)
		}
	}
}

package apiengine

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

func TestNetworkSpecParsing(t *testing.T) {
	spec, err := networkSpec(api.NetworkCreate{Name: "app", Subnets: []netip.Prefix{netip.MustParsePrefix("fd12:3456:789a::/64"), netip.MustParsePrefix("172.19.0.0/16")},
		IPRanges: []netip.Prefix{netip.MustParsePrefix("172.19.5.0/24"), netip.MustParsePrefix("fd12:3456:789a::/80")}, Gateways: []netip.Addr{netip.MustParseAddr("fd12:3456:789a::fe"), netip.MustParseAddr("172.19.0.1")}})
	if err != nil || spec.IPv4.Subnet.String() != "172.19.0.0/16" || spec.IPv4.IPRange.String() != "172.19.5.0/24" || spec.IPv4.Gateway.String() != "172.19.0.1" {
		t.Fatalf("%+v, %v", spec, err)
	}
	// Each ip range and gateway goes with the subnet of its family.
	if v6 := spec.IPv6; v6.Subnet.String() != "fd12:3456:789a::/64" || v6.IPRange.String() != "fd12:3456:789a::/80" || v6.Gateway.String() != "fd12:3456:789a::fe" {
		t.Fatalf("IPv6: %+v", v6)
	}
	// Decoded as each way in decodes them (api.ParsePrefix, api.ParseAddr),
	// then given their families.
	decoded := func(subnets, ranges, gateways []string) (err error) {
		var req api.NetworkCreate
		for _, x := range subnets {
			p, err := api.ParsePrefix("subnet", x)
			if err != nil {
				return err
			}
			req.Subnets = append(req.Subnets, p)
		}
		for _, x := range ranges {
			p, err := api.ParsePrefix("ip-range", x)
			if err != nil {
				return err
			}
			req.IPRanges = append(req.IPRanges, p)
		}
		for _, x := range gateways {
			a, err := api.ParseAddr("gateway", x)
			if err != nil {
				return err
			}
			req.Gateways = append(req.Gateways, a)
		}
		_, err = networkSpec(req)
		return err
	}
	for _, c := range []struct {
		subnets, ranges, gateways []string
		want                      string
	}{
		{[]string{"172.19.0.0"}, nil, nil, `invalid subnet "172.19.0.0"`},
		{[]string{"172.19.0.0/16"}, []string{"x"}, nil, `invalid ip-range "x"`},
		{[]string{"172.19.0.0/16"}, nil, []string{"172.19.0.300"}, `invalid gateway "172.19.0.300"`},
		{[]string{"172.19.0.0/16", "172.20.0.0/16"}, nil, nil, "subnet 172.20.0.0/16: the network has subnet 172.19.0.0/16 already (one subnet per family)"},
		{[]string{"fd00::/64", "fd01::/64"}, nil, nil, "subnet fd01::/64: the network has subnet fd00::/64 already"},
		{nil, nil, []string{"fd00::1", "fd00::2"}, "gateway fd00::2: the subnet has gateway fd00::1 already"},
		{nil, nil, []string{"fe80::1%eth0"}, `invalid gateway "fe80::1%eth0"`},
	} {
		if err := decoded(c.subnets, c.ranges, c.gateways); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c, err, c.want)
		}
	}
	// A raw client's JSON decodes a zone all the same.
	if _, err := networkSpec(api.NetworkCreate{Gateways: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}}); err == nil || !strings.Contains(err.Error(), `invalid gateway "fe80::1%eth0"`) {
		t.Errorf("a gateway with a zone: %v", err)
	}
	if err := api.CheckFamily("IP address", netip.MustParseAddr("fd00::1"), false); err == nil || !strings.Contains(err.Error(), `invalid IP address "fd00::1"`) {
		t.Errorf("IPv6 --ip: %v", err)
	}
	if err := api.CheckFamily("IPv6 address", netip.MustParseAddr("172.19.0.2"), true); err == nil || !strings.Contains(err.Error(), `invalid IPv6 address "172.19.0.2"`) {
		t.Errorf("IPv4 --ip6: %v", err)
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
		option, listed := v.Options[driver.OptGatewayMode]
		if option != c.option || listed != (c.option != "") {
			t.Errorf("mode %q: option %q (listed %t), want %q", c.mode, option, listed, c.option)
		}
		if got := v.IPAM.Config[0].Gateway; got != c.gateway {
			t.Errorf("mode %q: IPAM gateway %q, want %q", c.mode, got, c.gateway)
		}
		nets := map[string]store.Network{n.ID: n}
		if got := sandboxView(sb, nil, nets, "").NetworkSettings.Networks["app"].Gateway; got != c.gateway {
			t.Errorf("mode %q: endpoint gateway %q, want %q", c.mode, got, c.gateway)
		}
	}
}

// A request with two bad addresses is refused in one line, naming the
// first: errors are one line each, whatever the request holds.
func TestTwoBadAddressesAreRefusedInOneLine(t *testing.T) {
	a, v4, v6 := adapter{}, netip.MustParseAddr("172.18.0.9"), netip.MustParseAddr("fd00::1")
	for name, err := range map[string]error{
		"connect": a.Connect(ctx, "n", api.Connect{Sandbox: "s", IP: v6, IP6: v4}),
		"create": func() error {
			_, err := a.CreateSandbox(ctx, api.SandboxCreate{Name: "s", IP: v6, IP6: v4})
			return err
		}(),
		"endpoint": func() error {
			_, err := a.CreateEndpoint(ctx, api.EndpointCreate{ID: "e", Address: v6, AddressIPv6: v4})
			return err
		}(),
		"attach": func() error {
			_, err := a.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "c", NetNS: "/n", IP: v6, IP6: v4})
			return err
		}(),
	} {
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), `"fd00::1"`) {
			t.Errorf("%s with IPv4 and IPv6 swapped: %q, want one line naming fd00::1", name, err)
		}
	}
}

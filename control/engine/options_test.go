package engine

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

func TestApplyOptions(t *testing.T) {
	n := store.Network{Driver: store.DriverBridge, ICC: true}
	err := applyOptions(&n, map[string]string{OptBridgeName: "br-app", OptEnableICC: "false", OptMTU: "9000", OptBalance: "true"})
	if err != nil || n.Bridge != "br-app" || n.ICC || n.MTU != 9000 || !n.PublishBalance {
		t.Fatalf("bridge options: %+v, %v", n, err)
	}
	m := store.Network{Driver: store.DriverMacvlan}
	if err := applyOptions(&m, map[string]string{OptParent: "eth1", OptMacvlanMode: "bridge"}); err != nil || m.Parent != "eth1" {
		t.Fatalf("macvlan options: %+v, %v", m, err)
	}
}

func TestApplyOptionsErrors(t *testing.T) {
	for _, c := range []struct {
		driver string
		opts   map[string]string
		want   string
	}{
		{store.DriverBridge, map[string]string{"foo": "1"}, `unknown option "foo" for driver bridge`},
		{store.DriverBridge, map[string]string{OptParent: "eth1"}, `unknown option "parent" for driver bridge`},
		{store.DriverBridge, map[string]string{OptEnableICC: "yes please"}, `"yes please" is not true or false`},
		{store.DriverBridge, map[string]string{OptMTU: "70000"}, `"70000" is not an MTU`},
		{store.DriverBridge, map[string]string{OptBalance: "sometimes"}, `"sometimes" is not true or false`},
		{store.DriverBridge, map[string]string{OptBridgeName: "a-very-long-bridge-name"}, `invalid interface name "a-very-long-bridge-name"`},
		{store.DriverBridge, map[string]string{OptBridgeName: "br/0"}, `invalid interface name "br/0"`},
		{store.DriverMacvlan, nil, "needs a parent interface"},
		{store.DriverMacvlan, map[string]string{OptParent: "eth1", OptMacvlanMode: "vepa"}, `mode "vepa" is not supported`},
	} {
		n := store.Network{Driver: c.driver}
		if err := applyOptions(&n, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want %q", c.driver, c.opts, err, c.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"web", "a", "app_net.v2-1", "0x"} {
		if err := store.CheckName("sandbox", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-web", ".hidden", "a/b", "..", "a b", strings.Repeat("x", 65)} {
		if err := store.CheckName("sandbox", bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestNextInterface(t *testing.T) {
	eps := []store.Endpoint{{Interface: "eth0"}, {Interface: "eth2"}}
	if got := nextInterface(eps); got != "eth1" {
		t.Fatalf("got %s, want eth1 (the lowest free)", got)
	}
}

func TestGatewayModes(t *testing.T) {
	pool, err := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		opts       map[string]string
		internal   bool
		direct     maps.DirectAccess
		masquerade bool
		gateway    string // what the datapath takes for the host's address
	}{
		{"default", nil, false, maps.DirectNone, true, "172.19.0.1"},
		{"nat", map[string]string{OptGatewayMode: "nat"}, false, maps.DirectNone, true, "172.19.0.1"},
		{"nat without masquerade", map[string]string{OptGatewayMode: "nat", OptMasquerade: "false"}, false, maps.DirectNone, false, "172.19.0.1"},
		{"nat-unprotected", map[string]string{OptGatewayMode: "nat-unprotected"}, false, maps.DirectAll, true, "172.19.0.1"},
		{"routed", map[string]string{OptGatewayMode: "routed"}, false, maps.DirectPublished, false, "172.19.0.1"},
		{"routed, masquerade off as well", map[string]string{OptGatewayMode: "routed", OptMasquerade: "false"}, false, maps.DirectPublished, false, "172.19.0.1"},
		{"nat, internal", map[string]string{OptGatewayMode: "nat"}, true, maps.DirectNone, true, "172.19.0.1"},
		{"isolated", map[string]string{OptGatewayMode: "isolated"}, true, maps.DirectNone, true, "0.0.0.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := store.Network{Driver: store.DriverBridge, ICC: true, Masquerade: true, Internal: c.internal, Pool: pool}
			if err := applyOptions(&n, c.opts); err != nil {
				t.Fatal(err)
			}
			m := desired.Network(n)
			if m.Direct != c.direct || m.Masquerade != c.masquerade || m.Internal != c.internal || m.Gateway.String() != c.gateway {
				t.Fatalf("got direct %d, masquerade %t, internal %t, gateway %s; want %d, %t, %t, %s",
					m.Direct, m.Masquerade, m.Internal, m.Gateway, c.direct, c.masquerade, c.internal, c.gateway)
			}
			// The bridge keeps the pool gateway's MAC: frames still come from it.
			if m.GatewayMAC.String() != "02:42:ac:13:00:01" {
				t.Fatalf("gateway MAC %s", m.GatewayMAC)
			}
		})
	}
}

func TestGatewayModeOfStoredNetworks(t *testing.T) {
	// A record written before gateway modes existed has no such field.
	var n store.Network
	if err := json.Unmarshal([]byte(`{"id":"x","name":"old","driver":"bridge","icc":true,"masquerade":true}`), &n); err != nil {
		t.Fatal(err)
	}
	if n.IPv4GatewayMode() != store.GatewayNAT || !n.HostOnNetwork() {
		t.Fatalf("old record: mode %q, host on network %t; want nat with a gateway", n.IPv4GatewayMode(), n.HostOnNetwork())
	}
}

func TestGatewayModeErrors(t *testing.T) {
	for _, c := range []struct {
		driver   string
		opts     map[string]string
		internal bool
		want     string
	}{
		{store.DriverBridge, map[string]string{OptGatewayMode: "bogus"}, false,
			`option com.docker.network.bridge.gateway_mode_ipv4: unknown gateway mode "bogus" (valid: nat, nat-unprotected, routed, isolated)`},
		{store.DriverBridge, map[string]string{OptGatewayMode: "NAT"}, false, `unknown gateway mode "NAT"`},
		{store.DriverBridge, map[string]string{OptGatewayMode: ""}, false, `unknown gateway mode ""`},
		{store.DriverBridge, map[string]string{OptGatewayMode: "isolated"}, false,
			"option com.docker.network.bridge.gateway_mode_ipv4=isolated needs --internal"},
		{store.DriverBridge, map[string]string{OptGatewayMode: "routed", OptMasquerade: "true"}, false,
			"option com.docker.network.bridge.enable_ip_masquerade=true conflicts with com.docker.network.bridge.gateway_mode_ipv4=routed"},
		{store.DriverBridge, map[string]string{OptGatewayMode: "routed", OptMasquerade: "1"}, true,
			"enable_ip_masquerade=1 conflicts with com.docker.network.bridge.gateway_mode_ipv4=routed"},
		{store.DriverMacvlan, map[string]string{OptParent: "eth1", OptGatewayMode: "routed"}, false,
			`unknown option "com.docker.network.bridge.gateway_mode_ipv4" for driver macvlan`},
	} {
		n := store.Network{Driver: c.driver, ICC: true, Masquerade: true, Internal: c.internal}
		err := applyOptions(&n, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %v (internal %t): %v; want one line with %q", c.driver, c.opts, c.internal, err, c.want)
		}
	}
}

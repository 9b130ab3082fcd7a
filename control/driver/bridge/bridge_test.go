package bridge

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The bridge driver reads its own options and names the rest, in the same
// order every time, when it refuses one.
func TestConfigure(t *testing.T) {
	n := store.Network{ID: "0123456789abcdef", Driver: store.DriverBridge, ICC: true, Masquerade: true}
	if err := (Driver{}).Configure(&n, map[string]string{driver.OptMasquerade: "false", driver.OptMTU: "1400"}); err != nil ||
		n.Masquerade || n.MTU != 1400 || n.Bridge != "eb-0123456789ab" {
		t.Fatalf("Configure: %+v, %v", n, err)
	}
	n = store.Network{Driver: store.DriverBridge}
	err := (Driver{}).Configure(&n, map[string]string{driver.OptParent: "eth0"})
	want := `unknown option "parent" for driver bridge (known: com.docker.network.bridge.name, com.docker.network.bridge.enable_icc, ` +
		`com.docker.network.bridge.enable_ip_masquerade, com.docker.network.bridge.gateway_mode_ipv4, ` +
		`com.docker.network.bridge.gateway_mode_ipv6, com.docker.network.enable_ipv6, com.docker.network.driver.mtu, ebpfnet.egress.allow, ebpfnet.publish.allow, ebpfnet.publish.deny, ebpfnet.balance)`
	if err == nil || err.Error() != want {
		t.Errorf("Configure with a macvlan option: %v, want %s", err, want)
	}
}

// gateway_mode_ipv6 takes the values of gateway_mode_ipv4 into its own
// field, isolated needs --internal in either family, and routed
// IPv6 leaves IPv4's masquerading as it is.
func TestConfigureIPv6(t *testing.T) {
	n := store.Network{ID: "0123456789abcdef", Driver: store.DriverBridge, Masquerade: true}
	err := (Driver{}).Configure(&n, map[string]string{driver.OptEnableIPv6: "true", driver.OptGatewayMode6: "routed"})
	if err != nil || !n.EnableIPv6 || n.GatewayMode6 != store.GatewayRouted || n.GatewayMode != "" || !n.Masquerade {
		t.Fatalf("Configure: %+v, %v", n, err)
	}
	for want, opts := range map[string]map[string]string{
		`option com.docker.network.bridge.gateway_mode_ipv6: unknown gateway mode "nat6" (valid: nat, nat-unprotected, routed, isolated)`: {driver.OptGatewayMode6: "nat6"},
		`option com.docker.network.bridge.gateway_mode_ipv6=isolated needs --internal`:                                                    {driver.OptGatewayMode6: "isolated"},
		`option com.docker.network.enable_ipv6: "yes" is not true or false`:                                                               {driver.OptEnableIPv6: "yes"},
	} {
		n := store.Network{ID: "0123456789abcdef", Driver: store.DriverBridge}
		if err := (Driver{}).Configure(&n, opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Configure(%v) = %v, want %q", opts, err, want)
		}
	}
}

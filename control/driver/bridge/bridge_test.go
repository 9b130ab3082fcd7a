package bridge

import (
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
		`com.docker.network.bridge.enable_ip_masquerade, com.docker.network.bridge.gateway_mode_ipv4, com.docker.network.driver.mtu)`
	if err == nil || err.Error() != want {
		t.Errorf("Configure with a macvlan option: %v, want %s", err, want)
	}
}

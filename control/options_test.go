package control

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/store"
)

func TestApplyOptions(t *testing.T) {
	n := store.Network{Driver: store.DriverBridge, ICC: true}
	err := applyOptions(&n, map[string]string{OptBridgeName: "br-app", OptEnableICC: "false", OptMTU: "9000"})
	if err != nil || n.Bridge != "br-app" || n.ICC || n.MTU != 9000 {
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
		if err := checkName("sandbox", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-web", ".hidden", "a/b", "..", "a b", strings.Repeat("x", 65)} {
		if err := checkName("sandbox", bad); err == nil {
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

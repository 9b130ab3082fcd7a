package status

import (
	"testing"

	"github.com/ebpfnet/ebpfnet/loader"
)

func TestUplinkMode(t *testing.T) {
	for _, c := range []struct {
		choice       loader.UplinkChoice
		xdp          bool
		mode, reason string
	}{
		{loader.UplinkChoice{Mode: loader.UplinkTC, Auto: true, Reason: "veth loses TSO under XDP"}, false,
			"tc", "auto: veth loses TSO under XDP"},
		{loader.UplinkChoice{Mode: loader.UplinkXDP, Auto: true, Reason: "ice keeps its offloads under XDP"}, true,
			"xdp", "auto: ice keeps its offloads under XDP"},
		{loader.UplinkChoice{Mode: loader.UplinkXDP, Auto: true, Reason: "mlx5_core keeps its offloads under XDP"}, false,
			"tc", "auto: mlx5_core keeps its offloads under XDP, but the driver refused it here"},
		{loader.UplinkChoice{Mode: loader.UplinkXDP, Reason: "asked for"}, true, "xdp", "asked for"},
		{loader.UplinkChoice{Mode: loader.UplinkXDP, Reason: "asked for"}, false, "tc", "xdp asked for, but not attached: see the daemon's log"},
		{loader.UplinkChoice{Mode: loader.UplinkTC, Reason: "the default"}, false, "tc", "the default"},
	} {
		if mode, reason := uplinkMode(c.choice, c.xdp); mode != c.mode || reason != c.reason {
			t.Errorf("uplinkMode(%+v, xdp %v) = %s (%s), want %s (%s)", c.choice, c.xdp, mode, reason, c.mode, c.reason)
		}
	}
}

package loader

import (
	"strings"
	"testing"
)

func TestParseUplinkModes(t *testing.T) {
	m, err := ParseUplinkModes(nil)
	if err != nil || m.For("eth0") != UplinkTC {
		t.Fatalf("no setting: %v, %v; want tc everywhere", m, err)
	}
	m, err = ParseUplinkModes([]string{"auto", "eth1=xdp", "eth2=tc"})
	if err != nil {
		t.Fatal(err)
	}
	for ifname, want := range map[string]UplinkMode{"eth0": UplinkAuto, "eth1": UplinkXDP, "eth2": UplinkTC} {
		if got := m.For(ifname); got != want {
			t.Errorf("%s: %s, want %s", ifname, got, want)
		}
	}
	for _, bad := range []string{"fast", "eth0=fast", "=xdp", "eth0="} {
		if _, err := ParseUplinkModes([]string{bad}); err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ParseUplinkModes(%q) = %v; want an error naming it", bad, err)
		}
	}
}

func TestChooseUplinkMode(t *testing.T) {
	auto, _ := ParseUplinkModes([]string{"auto", "eth1=xdp", "eth2=tc"})
	none, _ := ParseUplinkModes(nil)
	for _, c := range []struct {
		modes          UplinkModes
		ifname, driver string
		want           UplinkChoice
	}{
		{auto, "eth0", "veth", UplinkChoice{UplinkTC, true, "veth loses TSO under XDP"}},
		{auto, "eth0", "virtio_net", UplinkChoice{UplinkTC, true, "virtio_net turns the guest's LRO/GRO off under XDP"}},
		{auto, "eth0", "e1000e", UplinkChoice{UplinkTC, true, "driver e1000e not known to keep its offloads under XDP"}},
		{auto, "eth0", "bnxt_en", UplinkChoice{UplinkTC, true, "driver bnxt_en not known to keep its offloads under XDP"}},
		{auto, "eth0", "", UplinkChoice{UplinkTC, true, "driver unknown, not known to keep its offloads under XDP"}},
		{auto, "eth0", "i40e", UplinkChoice{UplinkXDP, true, "i40e keeps its offloads under XDP"}},
		{auto, "eth0", "ice", UplinkChoice{UplinkXDP, true, "ice keeps its offloads under XDP"}},
		{auto, "eth0", "mlx5_core", UplinkChoice{UplinkXDP, true, "mlx5_core keeps its offloads under XDP"}},
		// Whoever asks for XDP gets it, on any driver.
		{auto, "eth1", "veth", UplinkChoice{UplinkXDP, false, "asked for"}},
		{auto, "eth2", "i40e", UplinkChoice{UplinkTC, false, "asked for"}},
		{none, "eth0", "i40e", UplinkChoice{UplinkTC, false, "the default"}},
	} {
		if got := c.modes.Choose(c.ifname, c.driver); got != c.want {
			t.Errorf("%s (%s) with %v: %+v, want %+v", c.ifname, c.driver, c.modes, got, c.want)
		}
	}
}

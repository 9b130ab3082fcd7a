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

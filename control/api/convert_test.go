package api

import (
	"strings"
	"testing"
)

func TestNetworkSpecParsing(t *testing.T) {
	spec, err := networkSpec(NetworkCreate{Name: "app", Subnet: "172.19.0.0/16", IPRange: "172.19.5.0/24", Gateway: "172.19.0.1"})
	if err != nil || spec.Subnet.String() != "172.19.0.0/16" || spec.IPRange.String() != "172.19.5.0/24" || spec.Gateway.String() != "172.19.0.1" {
		t.Fatalf("%+v, %v", spec, err)
	}
	for _, c := range []struct {
		req  NetworkCreate
		want string
	}{
		{NetworkCreate{Subnet: "172.19.0.0"}, `invalid subnet "172.19.0.0"`},
		{NetworkCreate{Subnet: "172.19.0.0/16", IPRange: "x"}, `invalid ip-range "x"`},
		{NetworkCreate{Subnet: "172.19.0.0/16", Gateway: "172.19.0.300"}, `invalid gateway "172.19.0.300"`},
	} {
		if _, err := networkSpec(c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
	if _, err := parseIP("fd00::1"); err == nil || !strings.Contains(err.Error(), `invalid IP address "fd00::1"`) {
		t.Errorf("IPv6 --ip: %v", err)
	}
}

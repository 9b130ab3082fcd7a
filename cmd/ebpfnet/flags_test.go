package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// The CLI words in flags what the daemon refuses in values; these are the
// combinations it answers itself.
func TestFlagCombinations(t *testing.T) {
	isolated := map[string]string{api.OptGatewayMode: "isolated"}
	isolated6 := map[string]string{api.OptGatewayMode6: "isolated"}
	for _, c := range []struct {
		req  api.NetworkCreate
		want string
	}{
		{api.NetworkCreate{Gateways: []netip.Addr{netip.MustParseAddr("172.30.0.1")}}, "--ip-range and --gateway need --subnet"},
		{api.NetworkCreate{IPRanges: []netip.Prefix{netip.MustParsePrefix("172.30.5.0/24")}}, "--ip-range and --gateway need --subnet"},
		{api.NetworkCreate{Subnets: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}, Gateways: []netip.Addr{netip.MustParseAddr("172.30.0.1")}, Internal: true, Options: isolated},
			"--gateway 172.30.0.1: a network in gateway mode isolated has no gateway"},
		{api.NetworkCreate{Subnets: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}, Options: isolated},
			"option com.docker.network.bridge.gateway_mode_ipv4=isolated needs --internal: an isolated network has no gateway, so it leads nowhere"},
		{api.NetworkCreate{Options: isolated6},
			"option com.docker.network.bridge.gateway_mode_ipv6=isolated needs --internal: an isolated network has no gateway, so it leads nowhere"},
		{api.NetworkCreate{Subnets: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16"), netip.MustParsePrefix("fd00::/64")}, Gateways: []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("fd00::1")}, Internal: true, Options: isolated6},
			"--gateway fd00::1: a network in gateway mode isolated has no gateway"},
		{api.NetworkCreate{Driver: "macvlan", Options: isolated}, ""}, // the daemon's to refuse: not a macvlan option
		{api.NetworkCreate{Subnets: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}, Gateways: []netip.Addr{netip.MustParseAddr("172.30.0.1")}}, ""},
	} {
		if err := checkNetworkFlags(c.req); (err == nil) != (c.want == "") || err != nil && err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
	for _, c := range []struct {
		req  api.SandboxCreate
		want string
	}{
		{api.SandboxCreate{Networks: []string{"none"}, Publish: []api.PortMapping{{Port: 80}}}, "-p need a bridge or macvlan network, not none"},
		{api.SandboxCreate{Networks: []string{"container:web"}, IP: netip.MustParseAddr("172.17.0.9")}, "not container:web"},
		{api.SandboxCreate{Networks: []string{"host"}, Aliases: []string{"a"}}, "not host"},
		{api.SandboxCreate{Networks: []string{"host"}}, ""},
		{api.SandboxCreate{Networks: []string{"app"}, Publish: []api.PortMapping{{Port: 80}}}, ""},
		{api.SandboxCreate{Publish: []api.PortMapping{{Port: 80}}}, ""}, // the default network
	} {
		err := checkSandboxFlags(c.req)
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
}

// Address flags are decoded as they are given: a bad one is refused in
// one line naming it, before the daemon is asked (there is none here).
func TestAddressFlagsAreDecodedAsGiven(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "--subnet", "nonsense", "x"}, `invalid subnet "nonsense"`},
		{[]string{"network", "create", "--subnet", "172.30.0.0/16", "--gateway", "nope", "x"}, `invalid gateway "nope"`},
		{[]string{"network", "create", "--ip-range", "172.30.5.0", "x"}, `invalid ip-range "172.30.5.0"`},
		{[]string{"network", "create", "--dns", "fd00::53", "x"}, `invalid DNS server "fd00::53": want an IPv4 address`},
		{[]string{"network", "connect", "--ip", "banana", "n", "s"}, `invalid IP address "banana": want an IPv4 address`},
		{[]string{"sandbox", "create", "--ip6", "fd00::zz", "s"}, `invalid IPv6 address "fd00::zz"`},
		{[]string{"sandbox", "create", "--dns", "x", "s"}, `invalid DNS server "x": want an IPv4 address`},
	} {
		cmd := newRootCommand()
		cmd.SetArgs(append(c.args, "--socket", "/nonexistent/ebpfnet.sock"))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line with %q", c.args, err, c.want)
		}
	}
}

package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// The CLI answers itself what the flags cannot say; the daemon refuses
// the rest (TestIsolatedGatewayMode).
func TestFlagCombinations(t *testing.T) {
	for _, c := range []struct {
		req  api.NetworkCreate
		want string
	}{
		{api.NetworkCreate{Gateways: []netip.Addr{netip.MustParseAddr("172.30.0.1")}}, "--ip-range and --gateway need --subnet"},
		{api.NetworkCreate{IPRanges: []netip.Prefix{netip.MustParsePrefix("172.30.5.0/24")}}, "--ip-range and --gateway need --subnet"},
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
		{api.SandboxCreate{PublishSources: api.Sources{Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}, "--publish-allow and --publish-deny need -p"},
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
		{[]string{"sandbox", "create", "--egress-rate", "50", "s"}, `invalid egress rate "50": want a number and a unit`},
		{[]string{"sandbox", "create", "--ingress-rate", "fast", "s"}, `invalid ingress rate "fast"`},
		{[]string{"sandbox", "create", "--egress-rate", "50mbit", "--burst", "64xb", "s"}, `invalid burst "64xb"`},
		{[]string{"sandbox", "create", "--burst", "64kb", "s"}, "--burst needs --egress-rate or --ingress-rate"},
		{[]string{"sandbox", "create", "--network", "host", "--egress-rate", "1mbit", "s"}, "--egress-rate and --ingress-rate need a bridge network, not host"},
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

// A repeatable flag given nothing has no default to show: "--help" says
// nothing of it rather than "(default [])".
func TestHelpShowsNoEmptyListDefaults(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Flags().FlagUsages(), "\n") {
			if strings.Contains(line, "(default [])") {
				t.Errorf("%s: %s", c.CommandPath(), strings.TrimSpace(line))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand())
}

// The bandwidth flags fill the request as the daemon takes it: rates in
// bits per second, --burst in bytes for each direction with a rate.
func TestBandwidthFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want api.Bandwidth
	}{
		{[]string{"--egress-rate", "50mbit", "--ingress-rate", "1gbit"}, api.Bandwidth{EgressRate: 50e6, IngressRate: 1e9}},
		{[]string{"--egress-rate", "500kbit", "--burst", "64kb"}, api.Bandwidth{EgressRate: 500e3, EgressBurst: 64 << 10}},
		{[]string{"--burst", "1mb", "--ingress-rate", "2mbit"}, api.Bandwidth{IngressRate: 2e6, IngressBurst: 1 << 20}},
		{nil, api.Bandwidth{}},
	} {
		var req api.SandboxCreate
		var publish []string
		cmd := &cobra.Command{}
		sandboxFlags(cmd, &req, &publish)
		if err := cmd.Flags().Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if err := sandboxRequest(&req, publish); err != nil || req.Bandwidth != c.want {
			t.Errorf("%v: %+v, %v; want %+v", c.args, req.Bandwidth, err, c.want)
		}
	}
}

// sandbox update's bandwidth flags change what they name and keep the
// rest: a rate replaces its direction's (its burst back to the default
// unless --burst says), --burst alone the bursts of the limited
// directions.
func TestUpdatedLimits(t *testing.T) {
	cur := api.Bandwidth{EgressRate: 50e6, EgressBurst: 1 << 20, IngressRate: 10e6}
	for _, c := range []struct {
		given limitFlags
		flags api.Bandwidth
		want  api.Bandwidth
		err   string
	}{
		{limitFlags{egress: true}, api.Bandwidth{EgressRate: 20e6}, api.Bandwidth{EgressRate: 20e6, IngressRate: 10e6}, ""},
		{limitFlags{ingress: true, burst: true}, api.Bandwidth{IngressRate: 30e6, EgressBurst: 4096, IngressBurst: 4096},
			api.Bandwidth{EgressRate: 50e6, EgressBurst: 1 << 20, IngressRate: 30e6, IngressBurst: 4096}, ""},
		{limitFlags{burst: true}, api.Bandwidth{EgressBurst: 4096, IngressBurst: 4096},
			api.Bandwidth{EgressRate: 50e6, EgressBurst: 4096, IngressRate: 10e6, IngressBurst: 4096}, ""},
		{limitFlags{egress: true, ingress: true}, api.Bandwidth{}, api.Bandwidth{}, ""},
		{limitFlags{egress: true, burst: true}, api.Bandwidth{EgressBurst: 4096, IngressBurst: 4096}, api.Bandwidth{}, "--burst needs a limit"},
	} {
		got, err := c.given.update(cur, c.flags)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v %+v: %+v, %v; want %q", c.given, c.flags, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%+v %+v: %+v, %v; want %+v", c.given, c.flags, got, err, c.want)
		}
	}
}

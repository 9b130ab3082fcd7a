package main

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func TestHostSettings(t *testing.T) {
	docker := api.HostSettings{
		BridgeNetfilter: api.BridgeNetfilter{Active: true, CallIPTables: true, CallIP6Tables: true},
		Forward: api.ForwardPolicy{IPv4: "drop", IPv6: "none", Chains: []api.ForwardChain{
			{Family: "ip", Table: "filter", Chain: "FORWARD", Policy: "drop", Via: "nftables"}}},
		Conntrack: api.HostConntrack{Active: true, Count: 12, Max: 64},
		RPFilter:  api.RPFilter{All: 1, Default: 2},
		Unread:    []string{"read nftables ruleset: nft is not installed"},
	}
	got := hostSettings(docker)
	for _, want := range []string{
		"ebpfnet does not depend on these settings",
		"  br_netfilter:   active, bridge-nf-call-iptables=1 bridge-nf-call-ip6tables=1 bridge-nf-call-arptables=0\n",
		"  FORWARD policy: IPv4 DROP, IPv6 none\n",
		"    ip filter FORWARD: DROP (nftables)\n",
		"  nf_conntrack:   active, 12 of 64 entries\n",
		"  rp_filter:      all=1 (strict) default=2 (loose)\n",
		"  not read: read nftables ruleset: nft is not installed\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("host settings lack %q:\n%s", want, got)
		}
	}
	got = hostSettings(api.HostSettings{Forward: api.ForwardPolicy{IPv4: "none", IPv6: "none"}})
	for _, want := range []string{"br_netfilter:   not active", "FORWARD policy: IPv4 none, IPv6 none", "nf_conntrack:   not active", "all=0 (off) default=0 (off)"} {
		if !strings.Contains(got, want) {
			t.Errorf("pristine host settings lack %q:\n%s", want, got)
		}
	}
}

package main

import (
	"net/netip"
	"testing"
)

// The DOCKER-USER rules of a source list go before the chain's own last
// RETURN, or at the end of the filter table when the chain has none.
func TestDockerUserAllow(t *testing.T) {
	prefixes := allowPrefixes(3, "10.98.0.2")
	if prefixes[0] != netip.MustParsePrefix("100.64.0.0/24") || prefixes[2] != netip.MustParsePrefix("10.98.0.2/32") {
		t.Fatalf("prefixes %v", prefixes)
	}
	want := "-A DOCKER-USER -i uplink1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n" +
		"-A DOCKER-USER -i uplink1 -s 100.64.0.0/24 -j RETURN\n-A DOCKER-USER -i uplink1 -s 100.64.1.0/24 -j RETURN\n" +
		"-A DOCKER-USER -i uplink1 -s 10.98.0.2/32 -j RETURN\n-A DOCKER-USER -i uplink1 -j DROP\n"
	for _, c := range []struct{ rules, want string }{
		{"*nat\n:DOCKER - [0:0]\nCOMMIT\n*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -i eb+ -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT\n",
			"*nat\n:DOCKER - [0:0]\nCOMMIT\n*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -i eb+ -j ACCEPT\n" + want + "-A DOCKER-USER -j RETURN\nCOMMIT\n"},
		{"*nat\nCOMMIT\n*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -i eb+ -j ACCEPT\nCOMMIT\n",
			"*nat\nCOMMIT\n*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -i eb+ -j ACCEPT\n" + want + "COMMIT\n"},
	} {
		if got, err := dockerUserAllow(c.rules, prefixes); err != nil || got != c.want {
			t.Errorf("dockerUserAllow of\n%s=\n%s\nwant\n%s", c.rules, got, c.want)
		}
	}
	if _, err := dockerUserAllow("*filter\nCOMMIT\n", prefixes); err == nil {
		t.Error("rules without DOCKER-USER took a source list")
	}
}

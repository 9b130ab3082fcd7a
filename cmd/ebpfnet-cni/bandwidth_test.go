package main

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// The bandwidth capability, and the same keys in the configuration, are
// read as the reference bandwidth plugin reads them: rates in bits per
// second, bursts in bits (which the daemon takes in bytes).
func TestParseBandwidth(t *testing.T) {
	for _, c := range []struct {
		rest string
		want api.Bandwidth
	}{
		{`,"runtimeConfig":{"bandwidth":{"ingressRate":50000000,"ingressBurst":800000,"egressRate":100000000,"egressBurst":1600000}}`,
			api.Bandwidth{IngressRate: 50e6, IngressBurst: 100e3, EgressRate: 100e6, EgressBurst: 200e3}},
		// A rate without a burst gets the datapath's default burst.
		{`,"runtimeConfig":{"bandwidth":{"egressRate":50000000}}`, api.Bandwidth{EgressRate: 50e6}},
		// A burst of bits that is no whole byte rounds up.
		{`,"runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":9}}`, api.Bandwidth{IngressRate: 1e6, IngressBurst: 2}},
		// The plugin's own keys win over the capability, as with the reference plugin.
		{`,"ingressRate":2000000,"ingressBurst":80000,"runtimeConfig":{"bandwidth":{"ingressRate":50000000,"ingressBurst":800000}}`,
			api.Bandwidth{IngressRate: 2e6, IngressBurst: 10e3}},
		{`,"runtimeConfig":{"bandwidth":{}}`, api.Bandwidth{}},
		{`,"runtimeConfig":{}`, api.Bandwidth{}},
		{``, api.Bandwidth{}},
	} {
		for _, mode := range []string{`,"network":"app"`, ``} { // main and chained mode read it alike
			conf, _, err := parse([]byte(config("1.0.0", "/s", mode+c.rest)))
			if err != nil {
				t.Errorf("%s%s: %v", mode, c.rest, err)
			} else if conf.bandwidth != c.want {
				t.Errorf("%s%s: %+v, want %+v", mode, c.rest, conf.bandwidth, c.want)
			}
		}
	}
	for rest, want := range map[string]string{
		`,"runtimeConfig":{"bandwidth":{"egressBurst":8000}}`:                                                       "bandwidth: egress burst 1000 bytes without an egress rate",
		`,"runtimeConfig":{"bandwidth":{"ingressRate":4,"ingressBurst":8000}}`:                                      "bandwidth: ingress rate 4 bit/s is below 8 bit/s",
		`,"runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":8000,"shapedSubnets":["10.0.0.0/8"]}}`: "shapedSubnets and unshapedSubnets are not supported",
		`,"runtimeConfig":{"bandwidth":{"egressRate":1000000,"egressBurst":800000000000}}`:                          "bandwidth: egress burst 100000000000 bytes is over",
	} {
		if _, _, err := parse([]byte(config("1.0.0", "/s", `,"network":"app"`+rest))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", rest, err, want)
		}
	}
}

// ADD hands the limits to the daemon with the attachment.
func TestAddBandwidth(t *testing.T) {
	d := &daemon{attach: api.Attachment{Sandbox: "c1:eth0", Interface: "eth0", HostInterface: "veth0a1b", MacAddress: "02:42:0a:58:00:09",
		Address: "10.88.0.9/16", Gateway: "10.88.0.1"}}
	socket := serve(t, d)
	if _, err := run(t, addRouted, config("1.0.0", socket, `,"network":"app","runtimeConfig":{"bandwidth":{"ingressRate":50000000,"ingressBurst":1048576,"egressRate":50000000,"egressBurst":1048576}}`)); err != nil {
		t.Fatal(err)
	}
	want := api.Bandwidth{IngressRate: 50e6, IngressBurst: 128 << 10, EgressRate: 50e6, EgressBurst: 128 << 10}
	if len(d.attached) != 1 || d.attached[0].Bandwidth != want {
		t.Errorf("asked %+v, want bandwidth %+v", d.attached, want)
	}
}

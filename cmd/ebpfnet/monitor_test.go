package main

import (
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
)

func TestEventLine(t *testing.T) {
	at := time.Date(2025, 1, 2, 12, 0, 1, 1000, time.Local)
	for _, tt := range []struct {
		ev   api.Event
		want string
	}{
		{api.Event{Time: at, Type: "drop", Program: "from_container", Interface: "ebv1", Verdict: "drop_cross_network", Proto: "icmp",
			Before: api.EventFlow{Src: "172.18.0.2:7", Dst: "172.19.0.2"}, Sandbox: "a", Network: "n1", PeerSandbox: "b", PeerNetwork: "n2"},
			"12:00:01.000001 drop  from_container ebv1 drop_cross_network icmp 172.18.0.2:7 -> 172.19.0.2 [a/n1 <> b/n2]"},
		{api.Event{Time: at, Type: "trace", Program: "uplink", Interface: "eth0", Verdict: "dnat", Proto: "tcp",
			Before: api.EventFlow{Src: "10.0.0.2:40000", Dst: "10.0.0.1:8080"}, After: &api.EventFlow{Src: "10.0.0.2:40000", Dst: "172.17.0.2:80"},
			Sandbox: "web", Network: "bridge"},
			"12:00:01.000001 trace uplink eth0 dnat tcp 10.0.0.2:40000 -> 10.0.0.1:8080 translated 10.0.0.2:40000 -> 172.17.0.2:80 [web/bridge]"},
		{api.Event{Time: at, Type: "trace", Program: "uplink", Interface: "eth0", Verdict: "pass", Proto: "udp",
			Before: api.EventFlow{Src: "10.0.0.2:53", Dst: "10.0.0.1:5353"}},
			"12:00:01.000001 trace uplink eth0 pass udp 10.0.0.2:53 -> 10.0.0.1:5353"},
		{api.Event{Time: at, Type: "drop", Program: "from_container", Interface: "ebv1", Verdict: "drop_egress_policy", Proto: "tcp",
			Before: api.EventFlow{Src: "172.18.0.2:40000", Dst: "192.0.2.10:443"}, DstName: "a.test.", Sandbox: "ci", Network: "n1"},
			"12:00:01.000001 drop  from_container ebv1 drop_egress_policy tcp 172.18.0.2:40000 -> 192.0.2.10:443 (a.test) [ci/n1]"},
	} {
		if got := eventLine(&tt.ev); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

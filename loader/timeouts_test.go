package loader

import (
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/bpf"
)

func TestSetCTTimeout(t *testing.T) {
	def, err := DefaultCTTimeouts()
	if err != nil {
		t.Fatal(err)
	}
	if def.TcpEstablished != 432000 || def.Udp != 30 {
		t.Fatalf("defaults %+v, want netfilter's", def)
	}
	got := def
	for _, s := range []string{"tcp_established=3600", "udp_stream=60", "icmp=5"} {
		if err := SetCTTimeout(&got, s); err != nil {
			t.Fatal(err)
		}
	}
	want := def
	want.TcpEstablished, want.UdpStream, want.Icmp = 3600, 60, 5
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"tcp_established", "tcp_established=0", "tcp_established=-1", "bogus=5", "udp=1h"} {
		err := SetCTTimeout(&got, bad)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("SetCTTimeout(%q) = %v; want an error naming it", bad, err)
		}
	}
	if got != want {
		t.Errorf("bad settings changed the timeouts: %+v", got)
	}
}

// MaxCTSourceMax is every flow the datapath's ct holds: two entries each.
func TestMaxCTSourceMaxIsCTsFlows(t *testing.T) {
	spec, err := bpf.LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps["ct"].MaxEntries / 2; got != MaxCTSourceMax {
		t.Errorf("ct holds %d flows, MaxCTSourceMax says %d", got, MaxCTSourceMax)
	}
}

package loader

import (
	"strconv"
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

// Any --ct-timeout value is applied or refused in one line naming it, and
// a refused one changes nothing.
func FuzzCTTimeout(f *testing.F) {
	for _, s := range []string{"tcp_established=3600", "udp=30", "tcp_established=0", "nosuch=5", "=", "tcp_syn_sent=4294967296", "udp=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var before, after CTTimeouts
		err := SetCTTimeout(&after, s)
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), strconv.Quote(s))) {
			t.Errorf("--ct-timeout %q: %q does not name it on one line", s, err)
		}
		if err != nil && after != before {
			t.Errorf("--ct-timeout %q was refused but changed the timeouts: %+v", s, after)
		}
		if err == nil && after == before {
			t.Errorf("--ct-timeout %q was taken but changed nothing", s)
		}
	})
}

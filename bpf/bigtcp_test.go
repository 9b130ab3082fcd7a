package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/maps"
)

// gsoContext is struct __sk_buff up to gso_size: a packet run as a GSO
// packet of segments of GSOSize bytes, as BIG TCP sends them.
type gsoContext struct {
	skbContext
	_       [33]uint32 // tc_index to sk, which the run must leave zero
	GSOSize uint32
	_       uint32
}

// runGSO runs prog on pkt as a GSO packet.
func (nb *natbed) runGSO(t *testing.T, prog *ebpf.Program, pkt []byte, gsoSize uint32) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+128), Context: gsoContext{GSOSize: gsoSize}}
	var ret uint32
	must(t, namespace.Do(nb.ns, func() (err error) {
		ret, err = prog.Run(opts)
		return err
	}))
	return ret, opts.DataOut
}

// A GSO packet longer than 64 KiB (BIG TCP) says 0 in its IPv4 total
// length, and an IPv6 one 0 in its payload length: a packet that changes
// family keeps its own length, and says 0 again only when it is longer
// than the other family's field can say.
func TestBigTCPChangesFamily(t *testing.T) {
	nb := newNATBed6(t)
	must(t, nb.maps.PutPublication(maps.Publication{HostAddr: netip.IPv6Unspecified(), HostPort: 8080, Proto: 6, Addr: webAddr, Port: 80}))
	syn := segment(6, ap(clientAddr6, 40000), ap(hostAddr6, 8080), false)
	binary.BigEndian.PutUint16(syn[14+4:], 0) // payload length 0
	if ret, out := nb.runGSO(t, nb.dp.Uplink.UplinkIngress, syn, 1400); ret != tcActRedirect {
		t.Fatalf("client's packet: verdict %d, want TC_ACT_REDIRECT", ret)
	} else if got := binary.BigEndian.Uint16(out[14+2:]); int(got) != len(syn)-54+20 {
		t.Errorf("client's packet as IPv4: total length %d, want %d", got, len(syn)-54+20)
	} else {
		verify(t, out)
	}

	reply := fixIPCsum(func() []byte {
		p := segment(6, ap(webAddr, 80), ap(bridgeNet.Gateway, 40000), false)
		binary.BigEndian.PutUint16(p[14+2:], 0) // total length 0
		return p
	}())
	ret, out := nb.runGSO(t, nb.dp.Endpoint.FromContainer, reply, 1400)
	if ret != tcActRedirect {
		t.Fatalf("reply: verdict %d, want TC_ACT_REDIRECT", ret)
	}
	if binary.BigEndian.Uint16(out[12:]) != 0x86dd {
		t.Fatalf("reply not translated to IPv6: %x", out[:54])
	}
	if got := binary.BigEndian.Uint16(out[14+4:]); int(got) != len(reply)-34 {
		t.Fatalf("reply as IPv6: payload length %d, want the packet's %d", got, len(reply)-34)
	}
	verify(t, out)
}

package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

const (
	tcActUnspec = 0xffffffff // TC_ACT_UNSPEC (-1): pass on
	tcActShot   = 2
)

// skbContext is the head of struct __sk_buff up to ifindex; BPF_PROG_RUN
// accepts a prefix. An ifindex of 0 runs the program as if on loopback,
// so the tests register ifindex 1 as the endpoint interface.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

const endpointIfindex = 1

func ipv4Packet(src, dst string, proto uint8) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	var b bytes.Buffer
	b.Write([]byte{2, 0x42, 0, 0, 0, 1, 2, 0x42, 0, 0, 0, 2, 0x08, 0x00})
	ip := []byte{0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, proto, 0, 0}
	ip = append(ip, s[:]...)
	ip = append(ip, d[:]...)
	b.Write(ip)
	b.Write([]byte{0x30, 0x39, 0x00, 0x50, 0, 8, 0, 0}) // 8 bytes of L4
	return b.Bytes()
}

func arpPacket() []byte {
	p := make([]byte, 42)
	copy(p, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x42, 0, 0, 0, 2, 0x08, 0x06})
	return p
}

type testbed struct {
	dp      *loader.Datapath
	maps    *maps.Maps
	ingress uint32 // the ingress_ifindex packets are run with
}

// uplinkIfindex stands for an interface of the host that is no endpoint.
const uplinkIfindex = 99

var (
	appnet = maps.Network{Index: 1, Subnet: netip.MustParsePrefix("172.19.0.0/16"), Gateway: netip.MustParseAddr("172.19.0.1")}
	other  = maps.Network{Index: 2, Subnet: netip.MustParsePrefix("172.20.0.0/16"), Gateway: netip.MustParseAddr("172.20.0.1")}
	// dockerBridge is another runtime's bridge network on the host (docker0).
	dockerBridge = netip.MustParsePrefix("172.17.0.0/16")
)

// newTestbed loads private maps with two networks and the sender on the
// first, flavoured by the given flags.
func newTestbed(t *testing.T, iccDisabled, internal bool) *testbed {
	t.Helper()
	return newTestbedWith(t, func(n *maps.Network) { n.ICCDisabled, n.Internal = iccDisabled, internal })
}

// newTestbedWith is newTestbed with the sender's network as configure
// makes it.
func newTestbedWith(t *testing.T, configure func(*maps.Network)) *testbed {
	t.Helper()
	testenv.RequirePrivileges(t)
	dp := privateDatapath(t, loader.Options{})
	m := maps.New(&dp.Maps)
	net := appnet
	configure(&net)
	for _, n := range []maps.Network{net, other} {
		if err := m.PutNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.PutIface(maps.Iface{Ifindex: endpointIfindex, Network: 1, Addr: netip.MustParseAddr("172.19.5.2")}); err != nil {
		t.Fatal(err)
	}
	if err := m.SyncHost(nil, nil, []netip.Prefix{dockerBridge}); err != nil {
		t.Fatal(err)
	}
	return &testbed{dp: dp, maps: m}
}

// run runs prog on pkt and checks the verdict, that the packet is left
// untouched, and that exactly one counter moved: the one for wantCounter.
func (tb *testbed) run(t *testing.T, prog *ebpf.Program, pkt []byte, want uint32, wantCounter string) {
	t.Helper()
	before := tb.counters(t)
	out := make([]byte, len(pkt))
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbContext{IngressIfindex: tb.ingress}})
	if err != nil {
		t.Fatalf("run %s: %v", prog, err)
	}
	if ret != want {
		t.Errorf("verdict = %#x, want %#x", ret, want)
	}
	if !bytes.Equal(out, pkt) {
		t.Errorf("packet was modified:\n got %x\nwant %x", out, pkt)
	}
	after := tb.counters(t)
	for name, n := range after {
		delta := n - before[name]
		switch {
		case name == wantCounter && delta != 1:
			t.Errorf("counter %s moved by %d, want 1", name, delta)
		case name != wantCounter && delta != 0:
			t.Errorf("counter %s moved by %d, want 0", name, delta)
		}
	}
}

func (tb *testbed) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	cs, err := tb.maps.Counters()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, c := range cs {
		out[c.Program+"/"+c.Verdict] = c.Packets
	}
	return out
}

func TestFromContainer(t *testing.T) {
	const udp, icmp, tcp = 17, 1, 6
	tests := []struct {
		name             string
		iccOff, internal bool
		pkt              []byte
		verdict          uint32
		counter          string
	}{
		{"same network", false, false, ipv4Packet("172.19.5.2", "172.19.5.3", udp), tcActUnspec, "pass"},
		{"to outside", false, false, ipv4Packet("172.19.5.2", "10.1.2.3", tcp), tcActUnspec, "pass"},
		{"to another network", false, false, ipv4Packet("172.19.5.2", "172.20.0.5", icmp), tcActShot, "drop_cross_network"},
		{"to another network's gateway", false, false, ipv4Packet("172.19.5.2", "172.20.0.1", tcp), tcActShot, "drop_cross_network"},
		{"to another runtime's bridge", false, false, ipv4Packet("172.19.5.2", "172.17.0.2", tcp), tcActShot, "drop_cross_network"},
		{"icc off, same network", true, false, ipv4Packet("172.19.5.2", "172.19.5.3", tcp), tcActShot, "drop_icc"},
		{"icc off, broadcast", true, false, ipv4Packet("172.19.5.2", "172.19.255.255", udp), tcActShot, "drop_icc"},
		{"icc off, to gateway", true, false, ipv4Packet("172.19.5.2", "172.19.0.1", tcp), tcActUnspec, "pass"},
		{"icc off, to outside", true, false, ipv4Packet("172.19.5.2", "10.1.2.3", tcp), tcActUnspec, "pass"},
		{"internal, to outside", false, true, ipv4Packet("172.19.5.2", "10.1.2.3", udp), tcActShot, "drop_internal"},
		{"internal, same network", false, true, ipv4Packet("172.19.5.2", "172.19.5.3", udp), tcActUnspec, "pass"},
		// An internal network is decided first: it leads nowhere but to itself.
		{"internal, to another network", false, true, ipv4Packet("172.19.5.2", "172.20.0.5", udp), tcActShot, "drop_internal"},
		{"arp", true, true, arpPacket(), tcActUnspec, "pass"},
		// Link-scope multicast and the limited broadcast stay on the
		// network's link, as on Docker's internal bridge; routed
		// multicast could leave it.
		{"internal, to link-scope multicast", false, true, ipv4Packet("172.19.5.2", "224.0.0.251", udp), tcActUnspec, "pass"},
		{"internal, limited broadcast", false, true, ipv4Packet("172.19.5.2", "255.255.255.255", udp), tcActUnspec, "pass"},
		{"internal, to routed multicast", false, true, ipv4Packet("172.19.5.2", "239.1.2.3", udp), tcActShot, "drop_internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbed(t, tt.iccOff, tt.internal)
			tb.run(t, tb.dp.Endpoint.FromContainer, tt.pkt, tt.verdict, "from_container/"+tt.counter)
		})
	}
}

func TestToContainer(t *testing.T) {
	tests := []struct {
		name     string
		internal bool
		direct   maps.DirectAccess
		ingress  uint32 // where the packet came into the host: 0 the host itself
		pkt      []byte
		verdict  uint32
		counter  string
	}{
		{"from outside, gateway mode nat", false, maps.DirectNone, uplinkIfindex, ipv4Packet("10.1.2.3", "172.19.5.2", 6), tcActShot, "drop_unpublished"},
		{"from outside, gateway mode nat-unprotected", false, maps.DirectAll, uplinkIfindex, ipv4Packet("10.1.2.3", "172.19.5.2", 6), tcActUnspec, "pass"},
		{"from outside, forging a neighbour", false, maps.DirectAll, uplinkIfindex, ipv4Packet("172.19.5.3", "172.19.5.2", 6), tcActShot, "drop_spoofed"},
		{"from outside, forging another network", false, maps.DirectAll, uplinkIfindex, ipv4Packet("172.20.0.5", "172.19.5.2", 6), tcActShot, "drop_spoofed"},
		{"from another runtime's bridge", false, maps.DirectAll, uplinkIfindex, ipv4Packet("172.17.0.2", "172.19.5.2", 6), tcActShot, "drop_cross_network"},
		{"from a neighbour's veth", false, maps.DirectNone, endpointIfindex, ipv4Packet("172.19.5.3", "172.19.5.2", 6), tcActUnspec, "pass"},
		{"from the host", false, maps.DirectNone, 0, ipv4Packet("10.1.2.3", "172.19.5.2", 6), tcActUnspec, "pass"},
		{"internal, from outside", true, maps.DirectNone, uplinkIfindex, ipv4Packet("10.1.2.3", "172.19.5.2", 6), tcActShot, "drop_internal"},
		{"internal, from outside forging a neighbour", true, maps.DirectNone, uplinkIfindex, ipv4Packet("172.19.5.3", "172.19.5.2", 6), tcActShot, "drop_internal"},
		{"internal, from a neighbour's veth", true, maps.DirectNone, endpointIfindex, ipv4Packet("172.19.5.3", "172.19.5.2", 6), tcActUnspec, "pass"},
		{"internal, from its gateway", true, maps.DirectNone, 0, ipv4Packet("172.19.0.1", "172.19.5.2", 1), tcActUnspec, "pass"},
		{"internal, from the host's other addresses", true, maps.DirectNone, 0, ipv4Packet("10.1.2.3", "172.19.5.2", 1), tcActShot, "drop_internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbedWith(t, func(n *maps.Network) { n.Internal, n.Direct = tt.internal, tt.direct })
			tb.ingress = tt.ingress
			tb.run(t, tb.dp.Endpoint.ToContainer, tt.pkt, tt.verdict, "to_container/"+tt.counter)
		})
	}
}

// An interface that is not an ebpfnet endpoint is left alone and not counted.
func TestUnknownInterfacePassesUncounted(t *testing.T) {
	tb := newTestbed(t, true, true)
	if err := tb.maps.DeleteIface(endpointIfindex); err != nil {
		t.Fatal(err)
	}
	for _, prog := range []*ebpf.Program{tb.dp.Endpoint.FromContainer, tb.dp.Endpoint.ToContainer} {
		tb.run(t, prog, ipv4Packet("172.19.5.2", "172.20.0.5", 6), tcActUnspec, "")
	}
}

// Go's view of the shared structs must match the C layout, as the
// object's BTF records it, byte for byte.
func TestSharedLayouts(t *testing.T) {
	spec, err := bpf.LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"network_info":    bpf.DatapathNetworkInfo{},
		"iface_info":      bpf.DatapathIfaceInfo{},
		"endpoint_info":   bpf.DatapathEndpointInfo{},
		"subnet_key":      bpf.DatapathSubnetKey{},
		"counter":         bpf.DatapathCounter{},
		"publication_key": bpf.DatapathPublicationKey{},
		"publication":     bpf.DatapathPublication{},
		"uplink_info":     bpf.DatapathUplinkInfo{},
		"flow":            bpf.DatapathFlow{},
		"ct_entry":        bpf.DatapathCtEntry{},
		"ct_timeouts":     bpf.DatapathCtTimeouts{},
		"target_key":      bpf.DatapathTargetKey{},
		"sock_peer":       bpf.DatapathSockPeer{},
		"sock_peers":      bpf.DatapathSockPeers{},
		"held_port_key":   bpf.DatapathHeldPortKey{},
		"monitor_config":  bpf.DatapathMonitorConfig{},
		"monitor_event":   bpf.DatapathMonitorEvent{},
		"rate_key":        bpf.DatapathRateKey{},
		"rate_limit":      bpf.DatapathRateLimit{},
		"rate_bucket":     bpf.DatapathRateBucket{},
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(name, &st); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := binary.Size(v); got != int(st.Size) {
			t.Errorf("%s: Go size %d, C size %d", name, got, st.Size)
		}
	}
}

// On a network whose flows the host's stack routes and translates (a
// chained network: its plugin's netfilter rules masquerade), untranslated
// flows are left to the stack: passed, never tracked, so that no later
// packet of theirs is delivered around netfilter.
func TestStackRoutedNetworkTracksNothing(t *testing.T) {
	for _, tt := range []struct {
		name    string
		prog    func(*testbed) *ebpf.Program
		ingress uint32
		pkt     []byte
		counter string
	}{
		{"from the container to the outside", func(tb *testbed) *ebpf.Program { return tb.dp.Endpoint.FromContainer }, 0,
			ipv4Packet("172.19.5.2", "10.1.2.3", 17), "from_container/pass"},
		{"from the outside to the container", func(tb *testbed) *ebpf.Program { return tb.dp.Endpoint.ToContainer }, uplinkIfindex,
			ipv4Packet("10.1.2.3", "172.19.5.2", 17), "to_container/pass"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestbedWith(t, func(n *maps.Network) { n.StackRoutes, n.Direct = true, maps.DirectAll })
			tb.ingress = tt.ingress
			tb.run(t, tt.prog(tb), tt.pkt, tcActUnspec, tt.counter)
			for _, table := range []*ebpf.Map{tb.dp.Maps.Ct, tb.dp.Maps.CtNew} {
				var k, v []byte
				it := table.Iterate()
				if it.Next(&k, &v) {
					t.Errorf("%s holds an entry: the flow was tracked", table)
				}
				if err := it.Err(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

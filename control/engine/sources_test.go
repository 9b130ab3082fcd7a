package engine

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Publishing a port again with new lists either gives it the new lists or
// leaves the old ones: the store keeps the old ones when the change
// fails, and so must the datapath. Here source_ranges is full, so the new
// deny list cannot be written: the port must go on refusing everyone its
// old allow list refused, not open to all (its rest, rewritten in place
// to "allow", and its old allow deleted, with no undo registered for a
// ReplaceSources that failed half-way).
func TestRelistThatFailsKeepsTheOldLists(t *testing.T) {
	te := newTestEngine(t)
	app, web := te.name("app"), te.name("web")
	if _, err := te.CreateNetwork(NetworkSpec{Name: app, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: web, Networks: []string{app}}); err != nil {
		t.Fatal(err)
	}
	spec := []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}}
	allow := ports.Sources{Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	if _, err := te.Publish(web, spec, allow, false); err != nil {
		t.Fatal(err)
	}
	stranger := netip.MustParseAddr("192.0.2.1")
	if a := te.sourceAction(t, 8080, stranger); a != bpf.DatapathSourceActionSOURCE_DENY {
		t.Fatalf("under the allow list, %s gets %v, want refused", stranger, a)
	}

	// Fill source_ranges with another publication's prefixes.
	m := te.dp.Maps.SourceRanges
	var n int
	it := m.Iterate()
	var k bpf.DatapathSourceKey
	var v bpf.DatapathSourceAction
	for it.Next(&k, &v) {
		n++
	}
	filler := bpf.DatapathSourceKey{Prefixlen: 8 * 36, Pub: bpf.DatapathPublicationKey{Port: 9, Proto: 17}}
	filler.Addr.B[0], filler.Addr.B[1] = 0x20, 0x01
	for i := range int(m.MaxEntries()) - n {
		binary.BigEndian.PutUint32(filler.Addr.B[12:], uint32(i))
		if err := m.Put(filler, bpf.DatapathSourceActionSOURCE_DENY); err != nil {
			t.Fatalf("fill source_ranges: %v", err)
		}
	}

	deny := ports.Sources{Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	if _, err := te.Publish(web, spec, deny, false); err == nil {
		t.Fatal("new lists with source_ranges full: no error")
	}
	var pubs []store.Publication
	if err := te.store.View(func(tx *store.Tx) (err error) { pubs, err = tx.Publications(web); return err }); err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 1 || !pubs[0].Sources.Equal(allow) {
		t.Fatalf("the store holds %+v, want the old allow list", pubs)
	}
	if a := te.sourceAction(t, 8080, stranger); a != bpf.DatapathSourceActionSOURCE_DENY {
		t.Errorf("after the failed change, %s gets %v from the datapath, want refused as the store's allow list says", stranger, a)
	}
}

// sourceAction is what source_ranges says of client for the IPv4
// publication of TCP port on every address (0: no entry decides).
func (te testEngine) sourceAction(t *testing.T, port uint16, client netip.Addr) bpf.DatapathSourceAction {
	t.Helper()
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], port)
	key := bpf.DatapathSourceKey{Prefixlen: 8 * 36,
		Pub:  bpf.DatapathPublicationKey{Addr: bpf.DatapathAddr{B: netip.IPv4Unspecified().As16()}, Port: binary.NativeEndian.Uint16(p[:]), Proto: 6},
		Addr: bpf.DatapathAddr{B: client.As16()}}
	var a bpf.DatapathSourceAction
	if err := te.dp.Maps.SourceRanges.Lookup(key, &a); err != nil {
		return 0
	}
	return a
}

// A network in gateway mode routed lets the outside reach its published
// sandbox ports at the sandboxes' own addresses too, a door the source
// lists do not guard (to_container never asks them): lists are refused
// there, in one line, for a publication and as the network's options,
// rather than guarding one door of two.
func TestSourceListsRefusedOnRoutedNetworks(t *testing.T) {
	te := newTestEngine(t)
	routed, web := te.name("routed"), te.name("web")
	opts := map[string]string{OptGatewayMode: store.GatewayRouted}
	if _, err := te.CreateNetwork(NetworkSpec{Name: routed, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")}, Options: opts}); err != nil {
		t.Fatal(err)
	}
	lists := ports.Sources{Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	_, err := te.CreateSandbox(SandboxSpec{Name: web, Networks: []string{routed},
		Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}}, PublishSources: lists})
	if err == nil || !strings.Contains(err.Error(), "gateway mode routed") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a sandbox publishing with lists on a routed network: %v, want one line refusing it", err)
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: web, Networks: []string{routed}}); err != nil {
		t.Fatalf("the same sandbox without lists: %v", err)
	}
	opts = map[string]string{OptGatewayMode: store.GatewayRouted, OptPublishAllow: "198.51.100.0/24"}
	if _, err := te.CreateNetwork(NetworkSpec{Name: te.name("r2"), Options: opts}); err == nil || !strings.Contains(err.Error(), "gateway mode routed") {
		t.Errorf("a routed network with lists: %v, want it refused", err)
	}
}

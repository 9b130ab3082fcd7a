package bpf_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/maps"
)

// vxlanPacket is VXLAN from src to the host, with the VNI and flags
// given, carrying a small inner frame.
func vxlanPacket(src netip.Addr, vni uint32, flags byte) []byte {
	return vxlanPacketTo(src, hostAddr, vni, flags)
}

// vxlanPacketTo is vxlanPacket to dst.
func vxlanPacketTo(src, dst netip.Addr, vni uint32, flags byte) []byte {
	pkt := segment(17, ap(src, 50000), ap(dst, maps.VXLANPort), true)
	pkt = pkt[:len(pkt)-4] // drop the "ping" payload
	hdr := []byte{flags, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	inner := append([]byte{2, 0x42, 10, 200, 0, 2, 2, 0x42, 10, 200, 0, 3, 0x08, 0x00}, make([]byte, 28)...)
	pkt = append(append(pkt, hdr...), inner...)
	// The lengths, for the payload added (checksum zero: UDP over IPv4
	// may go without, as VXLAN senders do).
	binary.BigEndian.PutUint16(pkt[14+2:], uint16(len(pkt)-14))
	binary.BigEndian.PutUint16(pkt[14+20+4:], uint16(len(pkt)-14-20))
	return fixIPCsum(pkt)
}

// VXLAN to an overlay network's VNI is dropped on the uplink unless it
// comes from a host of the cluster; other VNIs, VXLAN without a valid VNI
// and other UDP to the port are the host's, untouched.
func TestForgedVXLAN(t *testing.T) {
	nb := newNATBed(t)
	peer, stranger := netip.MustParseAddr("10.99.0.7"), netip.MustParseAddr("10.99.0.66")
	must(t, nb.maps.SyncOverlay([]uint32{4096, 70000}, []netip.Addr{peer}))
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"from a host of the cluster", vxlanPacket(peer, 4096, 0x08), tcActUnspec},
		{"from a stranger, to an overlay's VNI", vxlanPacket(stranger, 4096, 0x08), tcActShot},
		{"from a stranger, to another overlay's VNI", vxlanPacket(stranger, 70000, 0x08), tcActShot},
		{"from a stranger, to a VNI no overlay has", vxlanPacket(stranger, 4097, 0x08), tcActUnspec},
		{"from a stranger, no valid VNI", vxlanPacket(stranger, 4096, 0x00), tcActUnspec},
		{"from a stranger, to another port", segment(17, ap(stranger, 50000), ap(hostAddr, 4790), true), tcActUnspec},
	} {
		if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, c.pkt, nb.uplink); ret != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, ret, c.want)
		}
	}
	if n := nb.counter(t, "uplink", "drop_unknown_vtep"); n != 2 {
		t.Errorf("uplink/drop_unknown_vtep counted %d, want 2", n)
	}
	// The cluster changes: a new host's VXLAN gets in, a gone one's not.
	must(t, nb.maps.SyncOverlay([]uint32{4096}, []netip.Addr{stranger}))
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, vxlanPacket(stranger, 4096, 0x08), nb.uplink); ret != tcActUnspec {
		t.Errorf("from a host that joined: verdict %d", ret)
	}
	if ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, vxlanPacket(peer, 4096, 0x08), nb.uplink); ret != tcActShot {
		t.Errorf("from a host that left: verdict %d", ret)
	}
}

// The kernel's VXLAN sockets listen on every address: VXLAN to a
// broadcast or multicast address is taken as VXLAN to the host's own, so
// it is dropped from a stranger too; VXLAN the host routes on to another
// machine is not.
func TestForgedVXLANToBroadcast(t *testing.T) {
	nb := newNATBed(t)
	peer, stranger := netip.MustParseAddr("10.99.0.7"), netip.MustParseAddr("10.99.0.66")
	must(t, nb.maps.SyncOverlay([]uint32{4096}, []netip.Addr{peer}))
	for _, c := range []struct {
		name    string
		pkt     []byte
		dropped bool
	}{
		{"to the limited broadcast address", vxlanPacketTo(stranger, netip.MustParseAddr("255.255.255.255"), 4096, 0x08), true},
		{"to the uplink subnet's broadcast address", vxlanPacketTo(stranger, netip.MustParseAddr("10.99.0.255"), 4096, 0x08), true},
		{"to all hosts (224.0.0.1)", vxlanPacketTo(stranger, netip.MustParseAddr("224.0.0.1"), 4096, 0x08), true},
		{"routed on to another machine", vxlanPacketTo(stranger, netip.MustParseAddr("10.99.0.2"), 4096, 0x08), false},
		{"to the limited broadcast address, from a host of the cluster", vxlanPacketTo(peer, netip.MustParseAddr("255.255.255.255"), 4096, 0x08), false},
	} {
		before := nb.counter(t, "uplink", "drop_unknown_vtep")
		ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, c.pkt, nb.uplink)
		dropped := nb.counter(t, "uplink", "drop_unknown_vtep") > before
		if dropped != c.dropped || dropped && ret != tcActShot {
			t.Errorf("%s: verdict %d, dropped as forged %v, want %v", c.name, ret, dropped, c.dropped)
		}
	}
}

// A datagram whose first fragment ends before the VXLAN header is
// reassembled by the kernel into VXLAN whose VNI no fragment showed the
// uplink (a later fragment carries no port to be judged by): its first
// fragment is dropped from a stranger, which no VTEP sends. One with the
// header in it is judged by its VNI.
func TestForgedVXLANInFragments(t *testing.T) {
	nb := newNATBed(t)
	peer, stranger := netip.MustParseAddr("10.99.0.7"), netip.MustParseAddr("10.99.0.66")
	must(t, nb.maps.SyncOverlay([]uint32{4096}, []netip.Addr{peer}))
	// The first fragment carries the UDP header alone (8 bytes).
	split := fragments(vxlanPacket(stranger, 4096, 0x08), 7, 8)
	// A NIC's frame is 60 bytes at least: the padding after the IP
	// packet is no VXLAN header.
	padded := append(append([]byte(nil), split[0]...), make([]byte, 60-len(split[0]))...)
	for _, c := range []struct {
		name    string
		pkt     []byte
		dropped bool
	}{
		{"a first fragment without the VXLAN header", split[0], true},
		{"a first fragment without the VXLAN header, padded", padded, true},
		{"a first fragment with the VXLAN header", fragments(vxlanPacket(stranger, 4096, 0x08), 8, 24)[0], true},
		{"a first fragment with the header of a VNI no overlay has", fragments(vxlanPacket(stranger, 4097, 0x08), 9, 24)[0], false},
		{"a first fragment without the VXLAN header, from a host of the cluster", fragments(vxlanPacket(peer, 4096, 0x08), 10, 8)[0], false},
	} {
		before := nb.counter(t, "uplink", "drop_unknown_vtep")
		ret, _ := nb.runOn(t, nb.dp.Uplink.UplinkIngress, c.pkt, nb.uplink)
		dropped := nb.counter(t, "uplink", "drop_unknown_vtep") > before
		if dropped != c.dropped || dropped && ret != tcActShot {
			t.Errorf("%s: verdict %d, dropped as forged %v, want %v", c.name, ret, dropped, c.dropped)
		}
	}
}

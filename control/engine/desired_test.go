package engine

import (
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// The entries reconcile writes are the ones the operations write: one
// function per kind of entry, and desiredMaps over every record.
func TestDesiredMaps(t *testing.T) {
	pool, err := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	br := store.Network{ID: "br", Index: 3, Driver: store.DriverBridge, Pool: pool, ICC: true}
	lan := store.Network{ID: "lan", Index: 4, Driver: store.DriverMacvlan, Pool: pool}
	host := store.Network{ID: "host", Index: 1, Driver: store.DriverHost}
	web := store.Sandbox{Name: "web", Endpoints: []store.Endpoint{
		{ID: "web-br", NetworkID: "br", HostSide: "ebv1", Addr: netip.MustParseAddr("172.19.0.2")},
		{ID: "web-lan", NetworkID: "lan", Addr: netip.MustParseAddr("172.19.0.3")}, // macvlan: no host side
	}}
	lost := store.Sandbox{Name: "lost", Endpoints: []store.Endpoint{
		{ID: "lost-br", NetworkID: "br", HostSide: "ebv2", Addr: netip.MustParseAddr("172.19.0.4")}, // its host side is gone
	}}
	pubs := map[string][]store.Publication{"web": {{HostPort: 8080, Proto: "udp", Port: 80, EndpointID: "web-br"}}}
	want := desiredMaps([]store.Network{br, lan, host}, []store.Sandbox{web, lost}, pubs, func(name string) (int, bool) {
		return 7, name == "ebv1"
	})
	if len(want.Networks) != 1 || want.Networks[0].Index != br.Index {
		t.Errorf("networks %+v, want only the bridge network's", want.Networks)
	}
	if len(want.Ifaces) != 1 || want.Ifaces[0] != ifaceMaps(br, web.Endpoints[0], 7) {
		t.Errorf("ifaces %+v, want web's host side at ifindex 7", want.Ifaces)
	}
	if len(want.Endpoints) != 1 || want.Endpoints[0].Ifindex != 7 || want.Endpoints[0].Addr != web.Endpoints[0].Addr {
		t.Errorf("endpoints %+v, want web's bridge endpoint at ifindex 7", want.Endpoints)
	}
	p := want.Publications
	if len(p) != 1 || p[0].HostPort != 8080 || p[0].Proto != 17 || p[0].Addr != web.Endpoints[0].Addr || p[0].Port != 80 {
		t.Errorf("publications %+v, want 8080/udp to web's bridge address port 80", p)
	}
}

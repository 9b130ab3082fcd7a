package desired

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// The entries reconcile writes are the ones the operations write: one
// function per kind of entry, and Maps over every record.
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
	want := Maps([]store.Network{br, lan, host}, []store.Sandbox{web, lost}, pubs, func(name string) (int, bool) {
		return 7, name == "ebv1"
	})
	if len(want.Networks) != 1 || want.Networks[0].Index != br.Index {
		t.Errorf("networks %+v, want only the bridge network's", want.Networks)
	}
	if len(want.Ifaces) != 1 || !reflect.DeepEqual(want.Ifaces[0], Iface(br, web, web.Endpoints[0], 7)) {
		t.Errorf("ifaces %+v, want web's host side at ifindex 7", want.Ifaces)
	}
	if !want.Ifaces[0].XDPTarget {
		t.Error("a bridge endpoint whose sandbox side ebpfnet configures is no XDP target")
	}
	docker := web
	docker.HandOver = true
	if Iface(br, docker, web.Endpoints[0], 7).XDPTarget {
		t.Error("an endpoint a runtime brings up itself is an XDP target")
	}
	if len(want.Endpoints) != 1 || want.Endpoints[0].Ifindex != 7 || want.Endpoints[0].Addr != web.Endpoints[0].Addr {
		t.Errorf("endpoints %+v, want web's bridge endpoint at ifindex 7", want.Endpoints)
	}
	// On every address of both families, as Docker's 0.0.0.0 and [::].
	p := want.Publications
	if len(p) != 2 || p[0].HostAddr != netip.IPv4Unspecified() || p[1].HostAddr != netip.IPv6Unspecified() {
		t.Fatalf("publications %+v, want one on 0.0.0.0 and one on ::", p)
	}
	for _, p := range p {
		if p.HostPort != 8080 || p.Proto != 17 || p.Addr != web.Endpoints[0].Addr || p.Port != 80 {
			t.Errorf("publication %+v, want 8080/udp to web's bridge address port 80", p)
		}
	}
}

// A dual-stack endpoint is delivered to at both addresses, and a
// publication leads each family to the endpoint's address of that family;
// an IPv4-only endpoint is reached from IPv6 host addresses at its IPv4
// address (through the socket hooks).
func TestDesiredMapsDualStack(t *testing.T) {
	v4, v6 := netip.MustParseAddr("172.19.0.2"), netip.MustParseAddr("fd00:1::2")
	dual := store.Endpoint{ID: "dual", Addr: v4, Addr6: v6}
	only4 := store.Endpoint{ID: "only4", Addr: v4}
	if got := Endpoints(store.Network{Index: 3}, dual, 7); len(got) != 2 || got[0].Addr != v4 || got[1].Addr != v6 {
		t.Errorf("endpoint entries %+v, want one per address", got)
	}
	if got := Iface(store.Network{Index: 3}, store.Sandbox{}, dual, 7); got.Addr != v4 || got.Addr6 != v6 {
		t.Errorf("iface %+v, want both addresses", got)
	}
	for _, tc := range []struct {
		host  string // "" for every address
		ep    store.Endpoint
		hosts []netip.Addr // the entries' host addresses
		to    []netip.Addr // where each leads
	}{
		{"", dual, []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}, []netip.Addr{v4, v6}},
		{"", only4, []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}, []netip.Addr{v4, v4}},
		{"0.0.0.0", dual, []netip.Addr{netip.IPv4Unspecified()}, []netip.Addr{v4}},
		{"::", dual, []netip.Addr{netip.IPv6Unspecified()}, []netip.Addr{v6}},
		{"::1", dual, []netip.Addr{netip.IPv6Loopback()}, []netip.Addr{v6}},
		{"::1", only4, []netip.Addr{netip.IPv6Loopback()}, []netip.Addr{v4}},
		{"127.0.0.1", dual, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, []netip.Addr{v4}},
	} {
		p := store.Publication{HostPort: 8080, Proto: "tcp", Port: 80}
		if tc.host != "" {
			p.HostIP = netip.MustParseAddr(tc.host)
		}
		got := Publication(p, tc.ep)
		if len(got) != len(tc.hosts) {
			t.Errorf("%q to %s: entries %+v, want on %v", tc.host, tc.ep.ID, got, tc.hosts)
			continue
		}
		for i, m := range got {
			if m.HostAddr != tc.hosts[i] || m.Addr != tc.to[i] {
				t.Errorf("%q to %s: entry %+v, want %s leading to %s", tc.host, tc.ep.ID, m, tc.hosts[i], tc.to[i])
			}
		}
	}
}

// A sandbox's limits reach each of its endpoints' host sides: bits become
// bytes, and a limit without a burst gets the default one.
func TestIfaceBandwidth(t *testing.T) {
	sb := store.Sandbox{Bandwidth: api.Bandwidth{EgressRate: 50e6, IngressRate: 8e9, IngressBurst: 1 << 20}}
	i := Iface(store.Network{Driver: store.DriverBridge}, sb, store.Endpoint{Addr: netip.MustParseAddr("172.19.0.5")}, 7)
	if want := (maps.Rate{BytesPerSecond: 6_250_000, Burst: 1_562_500}); i.Egress != want {
		t.Errorf("egress %+v, want %+v", i.Egress, want)
	}
	if want := (maps.Rate{BytesPerSecond: 1e9, Burst: 1 << 20}); i.Ingress != want {
		t.Errorf("ingress %+v, want %+v", i.Ingress, want)
	}
	if got := DefaultBurst(125e6); got != 31_250_000 {
		t.Errorf("default burst of 1gbit: %d, want 250 ms of it", got)
	}
	if i := Iface(store.Network{Driver: store.DriverBridge}, store.Sandbox{}, store.Endpoint{Addr: netip.MustParseAddr("172.19.0.5")}, 7); i.Egress != (maps.Rate{}) || i.Ingress != (maps.Rate{}) {
		t.Errorf("no limits: %+v", i)
	}
}

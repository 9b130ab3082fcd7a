package engine

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/desired"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/maps"
)

// A sandbox's limits are its record's, reach the maps of its endpoint's
// host side when it is made and when they change, and come back with a
// reconcile; a refused change changes nothing.
func TestUpdateBandwidth(t *testing.T) {
	te := newTestEngine(t)
	app, web := te.name("app"), te.name("web")
	if _, err := te.CreateNetwork(NetworkSpec{Name: app, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.21.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	sb, err := te.CreateSandbox(SandboxSpec{Name: web, Networks: []string{app}, Bandwidth: api.Bandwidth{EgressRate: 50e6}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := te.link(t, sb.Endpoints[0].HostSide)
	if err != nil {
		t.Fatal(err)
	}
	ifindex := uint32(l.Attrs().Index)
	check := func(when string, egress, ingress maps.Rate) {
		t.Helper()
		e, i, err := te.maps.Rates(ifindex)
		if err != nil || e != egress || i != ingress {
			t.Errorf("%s: the maps hold egress %+v, ingress %+v (%v); want %+v, %+v", when, e, i, err, egress, ingress)
		}
	}
	check("created", maps.Rate{BytesPerSecond: 6_250_000, Burst: desired.DefaultBurst(6_250_000)}, maps.Rate{})

	changed := api.Bandwidth{IngressRate: 8e6, IngressBurst: 4096}
	if sb, err := te.UpdateSandbox(web, SandboxUpdate{Bandwidth: &changed}); err != nil || sb.Bandwidth != changed {
		t.Fatalf("set bandwidth: %v %+v", err, sb.Bandwidth)
	}
	check("changed", maps.Rate{}, maps.Rate{BytesPerSecond: 1e6, Burst: 4096})

	before := te.snapshot(t)
	allow, err := egress.Parse("10.90.0.0/28")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []api.Bandwidth{{EgressBurst: 5}, {EgressRate: 1}} {
		// With an egress list beside it: an update is all of it or none.
		if _, err := te.UpdateSandbox(web, SandboxUpdate{Bandwidth: &bad, EgressAllow: &allow}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%+v: %v, want it refused as invalid", bad, err)
		}
	}
	if _, err := te.UpdateSandbox(te.name("nobody"), SandboxUpdate{Bandwidth: &changed}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("an unknown sandbox: %v", err)
	}
	if te.snapshot(t) != before {
		t.Error("a refused change changed the records")
	}
	check("after refusals", maps.Rate{}, maps.Rate{BytesPerSecond: 1e6, Burst: 4096})
	if _, err := te.CreateSandbox(SandboxSpec{Name: te.name("h"), Networks: []string{NetworkHost}, Bandwidth: api.Bandwidth{EgressRate: 1e6}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("limits on a sandbox in the host's namespace: %v", err)
	}

	if err := te.maps.DeleteIface(ifindex); err != nil {
		t.Fatal(err)
	}
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}
	check("reconciled", maps.Rate{}, maps.Rate{BytesPerSecond: 1e6, Burst: 4096})
}

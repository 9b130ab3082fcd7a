package engine

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/maps"
)

// backendsOf8080 lists the datapath's backends of 0.0.0.0:8080/tcp, as
// sandbox port 80 of each.
func (te testEngine) backendsOf8080(t *testing.T) []netip.Addr {
	t.Helper()
	bs, err := te.maps.Backends(maps.Publication{HostAddr: netip.IPv4Unspecified(), HostPort: 8080, Proto: 6})
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, b := range bs {
		if b.Port != 80 {
			t.Errorf("backend %s, want port 80", b)
		}
		out = append(out, b.Addr)
	}
	return out
}

// Sandboxes that publish a host port with balance share it: one entry
// whose backends follow their records through publish, unpublish, a
// sandbox's removal and a reconcile that rebuilds the maps; a publisher
// without balance is refused in one line naming the port, and changes
// nothing.
func TestBalancedPublication(t *testing.T) {
	te := newTestEngine(t)
	app := te.name("app")
	if _, err := te.CreateNetwork(NetworkSpec{Name: app, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	spec := []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}}
	var addrs []netip.Addr
	var names []string
	addrOf := map[string]netip.Addr{}
	for _, s := range []string{"web1", "web2", "web3"} {
		name := te.name(s)
		sb, err := te.CreateSandbox(SandboxSpec{Name: name, Networks: []string{app}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := te.Publish(name, spec, ports.Sources{}, true); err != nil {
			t.Fatalf("publish --balance on %s: %v", name, err)
		}
		addrs, names = append(addrs, sb.Endpoints[0].Addr), append(names, name)
		addrOf[name] = sb.Endpoints[0].Addr
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	if got := te.backendsOf8080(t); !slices.Equal(got, addrs) {
		t.Fatalf("backends %v, want %v", got, addrs)
	}

	other := te.name("other")
	if _, err := te.CreateSandbox(SandboxSpec{Name: other, Networks: []string{app}}); err != nil {
		t.Fatal(err)
	}
	before := te.snapshot(t)
	_, err := te.Publish(other, spec, ports.Sources{}, false)
	if err == nil || !strings.Contains(err.Error(), "8080") || strings.Contains(err.Error(), "\n") {
		t.Errorf("publishing a balanced port without balance: %v, want one line naming 8080", err)
	}
	lists := ports.Sources{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	if _, err := te.Publish(other, spec, lists, true); err == nil || !strings.Contains(err.Error(), "source lists") {
		t.Errorf("balancing a port with other lists: %v, want refused", err)
	}
	if _, err := te.Publish(names[0], spec, lists, true); err == nil || !strings.Contains(err.Error(), "share its lists") {
		t.Errorf("new lists for one backend of a shared port: %v, want refused", err)
	}
	if after := te.snapshot(t); after != before {
		t.Errorf("a refused publication changed the state:\n%s\n%s", before, after)
	}
	if got := te.backendsOf8080(t); !slices.Equal(got, addrs) {
		t.Errorf("after refusals, backends %v, want %v", got, addrs)
	}

	// Unpublishing one takes it out; the others stay.
	if _, err := te.Unpublish(names[0], []ports.Mapping{{HostPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return a == addrOf[names[0]] })
	if got := te.backendsOf8080(t); !slices.Equal(got, rest) {
		t.Errorf("after unpublishing %s, backends %v, want %v", names[0], got, rest)
	}
	// The maps lost, a reconcile rebuilds them from the records.
	if err := te.maps.DeletePublications(maps.Publication{HostAddr: netip.IPv4Unspecified(), HostPort: 8080, Proto: 6}); err != nil {
		t.Fatal(err)
	}
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := te.backendsOf8080(t); !slices.Equal(got, rest) {
		t.Errorf("after a reconcile, backends %v, want %v", got, rest)
	}
	if d, err := te.Drift(); err != nil || d.MapWrites != 0 {
		t.Errorf("drift after a reconcile: %+v, %v", d, err)
	}
	// A sandbox created with the port balanced joins it.
	joined := te.name("joined")
	sb, err := te.CreateSandbox(SandboxSpec{Name: joined, Networks: []string{app}, Publish: spec, PublishBalance: true})
	if err != nil {
		t.Fatal(err)
	}
	with := append(slices.Clone(rest), sb.Endpoints[0].Addr)
	slices.SortFunc(with, netip.Addr.Compare)
	if got := te.backendsOf8080(t); !slices.Equal(got, with) {
		t.Errorf("after creating %s with the port balanced, backends %v, want %v", joined, got, with)
	}
	if err := te.RemoveSandbox(joined, true); err != nil {
		t.Fatal(err)
	}
	// A sandbox removed takes its backend with it; the last one's takes the port.
	if err := te.RemoveSandbox(names[1], true); err != nil {
		t.Fatal(err)
	}
	if got := te.backendsOf8080(t); len(got) != 1 {
		t.Errorf("after removing %s, backends %v, want one", names[1], got)
	}
	if err := te.RemoveSandbox(names[2], true); err != nil {
		t.Fatal(err)
	}
	if got := te.backendsOf8080(t); len(got) != 0 {
		t.Errorf("with no backend left, backends %v", got)
	}
	if ok, err := te.maps.HasPublication(maps.Publication{HostAddr: netip.IPv4Unspecified(), HostPort: 8080, Proto: 6, Backends: []maps.Backend{}}); ok || err != nil {
		t.Errorf("port 8080 still published (%v, %v)", ok, err)
	}
	// Free again: published without balance.
	if _, err := te.Publish(other, spec, ports.Sources{}, false); err != nil {
		t.Errorf("publishing the port once its backends left: %v", err)
	}
}

package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/driver"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/frontend/sandbox"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// testEngine is an engine in process, serving a host namespace of the
// test's own, its names prefixed so that tests run side by side.
type testEngine struct {
	*Engine
	prefix string
}

func newTestEngine(t *testing.T) testEngine { return newTestEngineWith(t, nil) }

// newTestEngineWith is newTestEngine with prepare run on its host
// namespace before the engine starts; the cluster prepare returns, if
// any, is the one the engine joins.
func newTestEngineWith(t *testing.T, prepare func(hostNS string) *cluster.Config) testEngine {
	t.Helper()
	testenv.RequirePrivileges(t)
	prefix, dir := testenv.Prefix("ect"), t.TempDir()
	resolv := testenv.ResolvConf(t, dir)
	cfg := Config{StateDir: filepath.Join(dir, "state"), BPFFS: "/sys/fs/bpf/" + prefix, NetNS: testenv.HostNamespace(t, prefix+"-host"),
		Runtime: &sandbox.Runtime{NetnsDir: sandbox.DefaultNetnsDir, EtcDir: filepath.Join(dir, "etc")}, ResolvConf: resolv}
	if prepare != nil {
		cfg.Cluster = prepare(cfg.NetNS)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(e.Close(), Reset(cfg)); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
	return testEngine{e, prefix}
}

func (te testEngine) name(s string) string { return te.prefix + "-" + s }

// link finds an interface of the host namespace.
func (te testEngine) link(t *testing.T, name string) (l netlink.Link, err error) {
	t.Helper()
	te.inHost(func() error { l, err = netlink.LinkByName(name); return err })
	return l, err
}

// addrsIn lists the IPv4 addresses of an interface in a sandbox.
func (te testEngine) addrsIn(t *testing.T, sandbox, ifname string) []string {
	t.Helper()
	var out []string
	err := namespace.Do(te.cfg.Runtime.NamespacePath(sandbox), func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			out = append(out, a.IPNet.String())
		}
		return err
	})
	if err != nil {
		t.Fatalf("sandbox %s, %s: %v", sandbox, ifname, err)
	}
	return out
}

// snapshot is the whole state, to compare before and after a change.
func (te testEngine) snapshot(t *testing.T) string {
	t.Helper()
	nets, sbs, err := te.store.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%+v %+v", nets, sbs)
}

// TestEngine drives the engine without the binary: create, connect,
// publish, and a change undone when a driver fails half-way.
func TestEngine(t *testing.T) {
	te := newTestEngine(t)
	app, back, web := te.name("app"), te.name("back"), te.name("web")

	n, err := te.CreateNetwork(NetworkSpec{Name: app, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.19.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	br, err := te.link(t, n.Bridge)
	if err != nil || br.Attrs().Alias != driver.AliasNetwork+n.ID {
		t.Fatalf("bridge %s of the new network: %v", n.Bridge, err)
	}
	if _, err := te.CreateNetwork(NetworkSpec{Name: app}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("a second network %s: %v, want a conflict", app, err)
	}

	sb, err := te.CreateSandbox(SandboxSpec{Name: web, Networks: []string{app}})
	if err != nil {
		t.Fatal(err)
	}
	if want := te.cfg.Runtime.NamespacePath(web); sb.NetNS != want || !namespace.IsNamespace(want) {
		t.Fatalf("web's namespace is recorded at %q, want it at %s, where its runtime made it", sb.NetNS, want)
	}
	if got := te.addrsIn(t, web, "eth0"); len(got) != 1 || got[0] != "172.19.0.2/16" {
		t.Fatalf("web's eth0 has %v, want 172.19.0.2/16", got)
	}
	hostSide := sb.Endpoints[0].HostSide
	if l, err := te.link(t, hostSide); err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("host side %s: %v, want it on bridge %s", hostSide, err, n.Bridge)
	}

	if _, err := te.CreateNetwork(NetworkSpec{Name: back, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.20.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	if err := te.Connect(back, web, EndpointSpec{IP: netip.MustParseAddr("172.20.0.9")}); err != nil {
		t.Fatal(err)
	}
	if got := te.addrsIn(t, web, "eth1"); len(got) != 1 || got[0] != "172.20.0.9/16" {
		t.Fatalf("web's eth1 has %v, want 172.20.0.9/16", got)
	}

	pubs, err := te.Publish(web, []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}, {Proto: ports.UDP, Port: 53}}, ports.Sources{}, false)
	if err != nil || len(pubs) != 2 || pubs[0].HostPort != 8080 || pubs[1].HostPort == 0 {
		t.Fatalf("publish: %+v, %v", pubs, err)
	}
	if st, err := te.Status(); err != nil || st.HeldPorts != 2 {
		t.Fatalf("status after publish: %d ports held, %v; want 2", st.HeldPorts, err)
	}
	if _, err := te.Publish(web, []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 81}}, ports.Sources{}, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("publish a taken host port: %v, want a conflict", err)
	}
	// Mappings arrive structured from any frontend, unchecked by a parser.
	v6 := ports.Mapping{Proto: ports.TCP, HostIP: netip.MustParseAddr("::1"), HostPort: 8081, Port: 80}
	if _, err := te.Publish(web, []ports.Mapping{v6}, ports.Sources{}, false); err != nil {
		t.Errorf("publish on an IPv6 host address: %v", err)
	}
	backwards := ports.Mapping{Proto: ports.TCP, HostPort: 9000, HostPortEnd: 8999, Port: 80}
	if _, err := te.Publish(web, []ports.Mapping{backwards}, ports.Sources{}, false); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("publish a host port range that ends before it starts: %v, want it invalid", err)
	}
	if _, err := te.Unpublish(web, []ports.Mapping{{HostPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	if _, err := te.Unpublish(web, []ports.Mapping{{HostPort: 8080}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unpublish again: %v, want not found", err)
	}
	if st, _ := te.Status(); st.HeldPorts != 2 {
		t.Fatalf("status after unpublish: %d ports held, want 2 (53/udp and [::1]:8081)", st.HeldPorts)
	}

	// A driver that fails to attach on one network: a sandbox on app and
	// then that network is refused, and nothing of it is left.
	bad := te.name("bad")
	if _, err := te.CreateNetwork(NetworkSpec{Name: bad, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.21.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected attach failure")
	te.drivers = func(name string) (driver.Driver, bool) {
		d, ok := drivers.For(name)
		return failingAttach{d, bad, injected}, ok
	}
	before := te.snapshot(t)
	st0, _ := te.Status()
	x := te.name("x")
	if _, err := te.CreateSandbox(SandboxSpec{Name: x, Networks: []string{app, bad}}); !errors.Is(err, injected) {
		t.Fatalf("create on a failing driver: %v, want the injected failure", err)
	}
	te.drivers = drivers.For
	if after := te.snapshot(t); after != before {
		t.Errorf("the failed create changed the state:\nbefore %s\nafter  %s", before, after)
	}
	if namespace.IsNamespace(te.cfg.Runtime.NamespacePath(x)) {
		t.Errorf("the failed create left namespace %s", te.cfg.Runtime.NamespacePath(x))
	}
	if st, _ := te.Status(); len(st.Endpoints) != len(st0.Endpoints) {
		t.Errorf("the failed create left host sides: %+v, had %+v", st.Endpoints, st0.Endpoints)
	}
	host, err := te.hostSync.Read()
	if err != nil {
		t.Fatal(err)
	}
	owned := host.Owned()
	_, sbs, _ := te.store.Snapshot()
	for alias, name := range owned {
		known := !strings.HasPrefix(alias, driver.AliasEndpoint)
		for _, sb := range sbs {
			for _, ep := range sb.Endpoints {
				known = known || ep.HostSide == name
			}
		}
		if !known {
			t.Errorf("the failed create left interface %s (%s)", name, alias)
		}
	}
	// No address was consumed: the next sandbox on app takes the one the
	// failed create had.
	if _, err := te.CreateSandbox(SandboxSpec{Name: te.name("next"), Networks: []string{app}}); err != nil {
		t.Fatal(err)
	}
	if got := te.addrsIn(t, te.name("next"), "eth0"); len(got) != 1 || got[0] != "172.19.0.3/16" {
		t.Errorf("next sandbox has %v, want 172.19.0.3/16", got)
	}

	for _, sb := range []string{te.name("next"), web} {
		if err := te.RemoveSandbox(sb, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := te.link(t, hostSide); err == nil {
		t.Errorf("host side %s outlived its sandbox", hostSide)
	}
	for _, n := range []string{app, back, bad} {
		if err := te.RemoveNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
}

// A sandbox stored before records held their namespace's path gets the
// path its runtime gives its name.
func TestStoreNamespacePaths(t *testing.T) {
	te := newTestEngine(t)
	old := store.Sandbox{ID: store.NewID(), Name: te.name("old"), Mode: store.ModeNetworks}
	if err := te.store.Update(func(tx *store.Tx) error { return tx.PutSandbox(old) }); err != nil {
		t.Fatal(err)
	}
	if err := te.storeNamespacePaths(); err != nil {
		t.Fatal(err)
	}
	var got store.Sandbox
	te.store.View(func(tx *store.Tx) (err error) { got, err = tx.Sandbox(old.Name); return err })
	if want := te.cfg.Runtime.NamespacePath(old.Name); got.NetNS != want {
		t.Errorf("stored path %q, want %q", got.NetNS, want)
	}
	if err := te.store.Update(func(tx *store.Tx) error { return tx.DeleteSandbox(old.Name) }); err != nil {
		t.Fatal(err)
	}
}

// failingAttach is a driver whose attach fails on one network.
type failingAttach struct {
	driver.Driver
	network string
	err     error
}

func (f failingAttach) Attach(n store.Network, ep *store.Endpoint, sandbox netlink.NsFd) (int, error) {
	if n.Name == f.network {
		return 0, f.err
	}
	return f.Driver.Attach(n, ep, sandbox)
}

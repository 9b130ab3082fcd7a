package engine

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/hostsync"
	"github.com/ebpfnet/ebpfnet/control/pools"
)

// An interface another program adds to the host makes the engine read
// every interface and address there, which on a host with thousands of
// sandboxes takes longer than any change: changes must not wait for the
// read, neither for the engine's lock nor for the thread kept in the
// dataplane's namespace, which a create's bridge and veths need (issue 24).
func TestChangesDoNotWaitForAHostRead(t *testing.T) {
	te := newTestEngine(t)
	reading, release := make(chan struct{}, 1), make(chan struct{})
	beforeHostRead = func() {
		select {
		case reading <- struct{}{}:
			<-release
		default:
		}
	}
	t.Cleanup(func() { beforeHostRead = func() {} })
	var released bool
	releaseOnce := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer releaseOnce()

	// Not a port of a bridge, not ebpfnet's: the watcher reads the host.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: te.name("fo")}, PeerName: te.name("fp")}
	if err := te.inHost(func() error { return netlink.LinkAdd(veth) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the host watcher never read the host after an interface appeared")
	}
	done := make(chan error, 1)
	go func() {
		_, err := te.CreateNetwork(NetworkSpec{Name: te.name("n"), IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.23.0.0/16")}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		releaseOnce()
		<-done
		t.Fatal("a network create waited for the host watcher's read of every interface")
	}
}

// A host read that a later one overtook is not applied over it: a
// reconcile reads the host, then the store and every map, while the host
// watcher reads and applies the host again; the watcher's addresses stay.
func TestAnOlderHostReadIsNotApplied(t *testing.T) {
	te := newTestEngine(t)
	older, err := te.hostSync.Read()
	if err != nil {
		t.Fatal(err)
	}
	te.hostVeth(t, te.name("ha"), te.name("hb"), "")
	addr := netip.MustParseAddr("192.0.2.7")
	err = te.inHost(func() error {
		l, err := netlink.LinkByName(te.name("ha"))
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: netlink.NewIPNet(addr.AsSlice())})
	})
	if err != nil {
		t.Fatal(err)
	}
	newer, err := te.hostSync.Read()
	if err != nil {
		t.Fatal(err)
	}
	te.locked(func() { err = errors.Join(te.hostSync.Apply(newer), te.hostSync.Apply(older)) })
	if err != nil {
		t.Fatal(err)
	}
	var v uint32
	if err := te.dp.Maps.HostAddrs.Lookup(bpf.DatapathAddr{B: addr.As16()}, &v); err != nil {
		t.Errorf("host address %s, applied from a newer read, is gone after an older read was applied: %v", addr, err)
	}
}

// A host read that changes kept interrupting may lack interfaces: a
// reconcile plans the maps with it but does not apply it over the host's
// addresses and uplinks (the host watcher reads the whole host for that).
func TestAPartialHostReadIsNotApplied(t *testing.T) {
	te := newTestEngine(t)
	loopback := netip.MustParseAddr("127.0.0.1")
	has := func() bool {
		var v uint32
		return te.dp.Maps.HostAddrs.Lookup(bpf.DatapathAddr{B: loopback.As16()}, &v) == nil
	}
	whole, err := te.hostSync.Read()
	if err != nil {
		t.Fatal(err)
	}
	te.locked(func() { err = te.hostSync.Apply(whole) })
	if err != nil || !has() {
		t.Fatalf("host address %s is not in host_addrs after the host was applied (%v)", loopback, err)
	}
	afterHostRead = func(partial *hostsync.View) {
		afterHostRead = func(*hostsync.View) {}
		partial.Links, partial.Partial = []netlink.Link{}, true
	}
	t.Cleanup(func() { afterHostRead = func(*hostsync.View) {} })
	if err := te.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !has() {
		t.Errorf("a reconcile applied a partial read of the host: host address %s is gone from host_addrs", loopback)
	}
}

package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
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
		_, err := te.CreateNetwork(NetworkSpec{Name: te.name("n"), IPv4: PoolSpec{Subnet: netip.MustParsePrefix("172.23.0.0/16")}})
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

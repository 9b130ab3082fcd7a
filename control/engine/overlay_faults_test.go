package engine

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// An address refused on an overlay network is said once, naming the
// network once, as on a bridge network: not "network X: network X: …".
func TestOverlayAddressErrorNamesTheNetworkOnce(t *testing.T) {
	te := newClusterEngine(t)
	n, err := te.CreateNetwork(NetworkSpec{Name: te.name("ov"), Driver: store.DriverOverlay, IPv4: PoolSpec{Subnet: netip.MustParsePrefix("10.7.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = te.CreateSandbox(SandboxSpec{Name: te.name("web"), Networks: []string{n.Name}, IP: netip.MustParseAddr("10.7.0.1")})
	if err == nil || strings.Count(err.Error(), "network "+n.Name) != 1 || !strings.Contains(err.Error(), "10.7.0.1") {
		t.Errorf("the gateway's address asked for: %v; want the network and the address named once", err)
	}
}

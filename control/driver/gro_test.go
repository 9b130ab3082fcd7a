package driver

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// GRO is off on a new veth and on once turned on, as the uplinks' XDP
// path needs of an endpoint's sandbox side; a missing interface is an
// error naming it.
func TestTurnGROOn(t *testing.T) {
	testenv.RequirePrivileges(t)
	runtime.LockOSThread() // the new namespace stays this thread's
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		netns.Set(orig)
		ns.Close()
		runtime.UnlockOSThread()
	}()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gro0"}, PeerName: "gro1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	if on, err := groOn("gro0"); err != nil || on {
		t.Fatalf("GRO on a new veth = %v, %v; want off", on, err)
	}
	if err := TurnGROOn("gro0"); err != nil {
		t.Fatal(err)
	}
	if on, err := groOn("gro0"); err != nil || !on {
		t.Fatalf("GRO after TurnGROOn = %v, %v; want on", on, err)
	}
	if err := TurnGROOn("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("TurnGROOn(nosuch0) = %v, want an error naming it", err)
	}
}

// groOn reports whether GRO is on on interface ifname (ETHTOOL_GGRO).
func groOn(ifname string) (bool, error) {
	on, err := ethtoolValue(ifname, unix.ETHTOOL_GGRO, 0)
	if err != nil {
		return false, fmt.Errorf("read GRO of %s: %w", ifname, err)
	}
	return on != 0, nil
}

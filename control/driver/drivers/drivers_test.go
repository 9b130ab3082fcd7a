package drivers

import (
	"testing"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// Every network a driver makes takes its addresses from exactly one IPAM,
// ebpfnet's or the runtime's; host and none have no driver, so no traits.
func TestEveryDriverHasOneSourceOfAddresses(t *testing.T) {
	for _, name := range []string{store.DriverBridge, store.DriverMacvlan, store.DriverOverlay, store.DriverChained} {
		d, ok := For(name)
		if !ok {
			t.Errorf("no driver for %s", name)
			continue
		}
		if tr := d.Traits(); tr.OwnAddresses == tr.RuntimeAddresses {
			t.Errorf("%s: own addresses %v, the runtime's %v: want exactly one", name, tr.OwnAddresses, tr.RuntimeAddresses)
		}
	}
	for _, name := range []string{store.DriverHost, store.DriverNull, ""} {
		if _, ok := For(name); ok {
			t.Errorf("a driver for %q", name)
		}
		if tr := TraitsOf(store.Network{Driver: name}); tr != (TraitsOf(store.Network{})) {
			t.Errorf("%q has traits %+v", name, tr)
		}
	}
	if !TraitsOf(store.Network{Driver: store.DriverOverlay}).Global || TraitsOf(store.Network{Driver: store.DriverBridge}).Global {
		t.Error("overlay networks are the cluster's, bridge networks the host's")
	}
}

package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// UplinkMode says whether uplinks get the XDP fast path besides TC.
type UplinkMode string

const (
	UplinkTC   UplinkMode = "tc"   // the TC program alone
	UplinkXDP  UplinkMode = "xdp"  // native XDP besides TC on every uplink, or an error
	UplinkAuto UplinkMode = "auto" // native XDP where it wins (AutoUplinkMode), else TC alone
)

// parseUplinkMode checks a user-supplied uplink mode.
func parseUplinkMode(s string) (UplinkMode, error) {
	switch m := UplinkMode(s); m {
	case UplinkTC, UplinkXDP, UplinkAuto:
		return m, nil
	}
	return "", fmt.Errorf("unknown uplink mode %q (want auto, tc or xdp)", s)
}

// UplinkModes are the uplink modes of a host: one for every uplink, and
// others for some by name.
type UplinkModes struct {
	Default UplinkMode // empty when none was given: tc
	ByName  map[string]UplinkMode
}

// ParseUplinkModes reads settings of the form MODE (every uplink) or
// IFNAME=MODE (one uplink); the last of each kind wins. No MODE is tc.
func ParseUplinkModes(settings []string) (UplinkModes, error) {
	m := UplinkModes{ByName: map[string]UplinkMode{}}
	for _, s := range settings {
		name, mode, named := strings.Cut(s, "=")
		if !named {
			mode = name
		}
		parsed, err := parseUplinkMode(mode)
		if err != nil || (named && name == "") {
			return UplinkModes{}, fmt.Errorf("invalid uplink mode %q: want auto, tc or xdp, for every uplink or as IFNAME=MODE", s)
		}
		if named {
			m.ByName[name] = parsed
		} else {
			m.Default = parsed
		}
	}
	return m, nil
}

// For is the mode of uplink ifname.
func (m UplinkModes) For(ifname string) UplinkMode {
	if mode, ok := m.ByName[ifname]; ok {
		return mode
	}
	if m.Default == "" {
		return UplinkTC
	}
	return m.Default
}

// UplinkChoice is the datapath chosen for one uplink, and why.
type UplinkChoice struct {
	Mode UplinkMode // tc or xdp
	// Auto says auto chose: a driver that then refuses the program
	// leaves the uplink to TC, quietly.
	Auto   bool
	Reason string
}

// Choose decides the datapath of uplink ifname, whose driver (as
// ethtool names it) is driver.
func (m UplinkModes) Choose(ifname, driver string) UplinkChoice {
	mode, named := m.ByName[ifname]
	switch {
	case !named && m.Default == "":
		return UplinkChoice{Mode: UplinkTC, Reason: "the default"}
	case !named:
		mode = m.Default
	}
	if mode != UplinkAuto {
		return UplinkChoice{Mode: mode, Reason: "asked for"}
	}
	mode, reason := AutoUplinkMode(driver)
	return UplinkChoice{Mode: mode, Auto: true, Reason: reason}
}

// AutoUplinkMode is what auto chooses for an uplink of a driver, and why.
// XDP only pays where the driver keeps its offloads with a program on:
// on a veth uplink the peer loses TSO (one TCP stream measured at 0.21x
// of TC's), and virtio_net turns the guest's LRO and GRO offloads off, so
// both stay on TC with every driver not known to be good. The list holds
// drivers whose XDP setup, read in their source, turns no offload off:
// i40e and ice have no LRO or hardware GRO to lose and keep TSO and
// checksum offloads; mlx5_core refuses a program while HW-GRO or LRO is
// on (the attach fails and auto leaves the uplink to TC) rather than
// turning them off. bnxt_en is not on it: it drops LRO and hardware GRO
// for XDP. None of the three was measured by ebpfnet's benchmarks, which
// run on veth.
func AutoUplinkMode(driver string) (UplinkMode, string) {
	switch driver {
	case "i40e", "ice", "mlx5_core":
		return UplinkXDP, driver + " keeps its offloads under XDP"
	case "veth":
		return UplinkTC, "veth loses TSO under XDP"
	case "virtio_net":
		return UplinkTC, "virtio_net turns the guest's LRO/GRO off under XDP"
	case "":
		return UplinkTC, "driver unknown, not known to keep its offloads under XDP"
	}
	return UplinkTC, "driver " + driver + " not known to keep its offloads under XDP"
}

// xdpHook names an uplink's XDP link pin, beside its TCX ones.
var xdpHook = direction{name: "xdp"}

// AttachUplinkXDP puts the XDP fast path on an uplink that has the TC
// program, as mode says (HasXDP says whether it is there); auto here
// is XDP that AutoUplinkMode chose (UplinkChoice.Auto).
// Only native (driver) XDP is used: generic XDP runs after the skb is
// built and would only add work to TC's. In auto mode a driver that
// refuses the program leaves the uplink to TC alone; in tc mode an XDP
// link a previous daemon left is removed. It is idempotent.
func (d *Datapath) AttachUplinkXDP(ifname string, ifindex int, mode UplinkMode) error {
	if mode == UplinkTC || mode == "" {
		return d.unpinLink(ifname, xdpHook)
	}
	pin := d.linkPin(ifname, xdpHook)
	if l, on := d.pinnedXDP(ifname, ifindex); on {
		defer l.Close()
		// The link survived a daemon restart: point it at this binary's program.
		if err := l.Update(d.UplinkXDP.UplinkXdp); err != nil {
			return fmt.Errorf("update xdp link on %s (ifindex %d): %w", ifname, ifindex, err)
		}
		return nil
	} else if l != nil {
		l.Unpin() // the interface it was for is gone
		l.Close()
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.UplinkXDP.UplinkXdp, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		if mode == UplinkAuto && driverCannot(err) {
			return nil
		}
		return fmt.Errorf("attach native xdp to %s (ifindex %d): %w", ifname, ifindex, err)
	}
	defer l.Close()
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create link pin directory of %s: %w", ifname, err)
	}
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin xdp link of %s: %w", ifname, err)
	}
	return nil
}

// pinnedXDP opens the XDP link pinned for ifname, if any, and reports
// whether it is on the interface of that name now (ifindex): the caller
// closes it either way.
func (d *Datapath) pinnedXDP(ifname string, ifindex int) (link.Link, bool) {
	l, err := link.LoadPinnedLink(d.linkPin(ifname, xdpHook), nil)
	if err != nil {
		return nil, false
	}
	info, err := l.Info()
	return l, err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifindex
}

// driverCannot reports whether attaching native XDP failed because the
// driver cannot run the program there: it has no native XDP, or not at
// this interface's MTU (the program takes single-buffer frames, and
// drivers refuse it above about 3.5 KB: ERANGE from veth, EINVAL from
// others). Another program already on the hook (EBUSY) is no such reason.
func driverCannot(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, ebpf.ErrNotSupported) ||
		errors.Is(err, unix.ERANGE) || errors.Is(err, unix.EINVAL)
}

// HasXDP reports whether ebpfnet's XDP program is on an interface (ifindex).
func (d *Datapath) HasXDP(ifname string, ifindex int) bool {
	l, on := d.pinnedXDP(ifname, ifindex)
	if l != nil {
		l.Close()
	}
	return on
}

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
	UplinkAuto UplinkMode = "auto" // native XDP where the driver has it, else TC alone
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
	Default UplinkMode
	ByName  map[string]UplinkMode
}

// ParseUplinkModes reads settings of the form MODE (every uplink) or
// IFNAME=MODE (one uplink); the last of each kind wins. No MODE is tc.
func ParseUplinkModes(settings []string) (UplinkModes, error) {
	m := UplinkModes{Default: UplinkTC, ByName: map[string]UplinkMode{}}
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
	return m.Default
}

// xdpHook names an uplink's XDP link pin, beside its TCX ones.
var xdpHook = direction{name: "xdp"}

// AttachUplinkXDP puts the XDP fast path on an uplink that has the TC
// program, as mode says (HasXDP says whether it is there).
// Only native (driver) XDP is used: generic XDP runs after the skb is
// built and would only add work to TC's. In auto mode a driver without
// native XDP leaves the uplink to TC alone; in tc mode an XDP link a
// previous daemon left is removed. It is idempotent.
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

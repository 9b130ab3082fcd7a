package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// kernelFloor does, without ebpfnet, what the kernel is asked for one
// sandbox of one bridge network: a namespace with lo up and IPv6 off, a
// veth pair across it on a bridge, a program on each direction of the
// host side with its link pinned, the sandbox side's address, GRO and
// default route; and their removal. It runs in the daemon's host
// namespace, beside the sandboxes there, so that its cost with N
// sandboxes present is the floor under ebpfnet's: what grows in it grows
// in the kernel, whatever the control plane does.
type kernelFloor struct {
	hostNS string
	dir    string // where its namespaces are bound
	pins   string // a bpffs of its own, where its links are pinned
	bridge *netlink.Bridge
	prog   *ebpf.Program // passes everything on: TCX_NEXT
}

const (
	floorBridge  = "ebtfloor0"
	floorGateway = "10.199.0.1"
)

// newKernelFloor makes the floor's bridge and program in h's namespace.
func newKernelFloor(r *runner, h *testbed.Host) (*kernelFloor, error) {
	tmp := r.TempDir()
	f := &kernelFloor{hostNS: h.NetNS, dir: filepath.Join(tmp, "netns"), pins: filepath.Join(tmp, "bpf")}
	if err := os.MkdirAll(f.pins, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("bpf", f.pins, "bpf", 0, ""); err != nil {
		return nil, fmt.Errorf("mount bpffs on %s: %w", f.pins, err)
	}
	r.Cleanup(func() { unix.Unmount(f.pins, unix.MNT_DETACH) })
	// namespace.Create binds the directory of its namespaces onto itself
	// (as ip netns does /run/netns); left mounted, it outlives the run's
	// temporary directory.
	r.Cleanup(func() { unix.Unmount(f.dir, unix.MNT_DETACH) })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load the floor's program: %w", err)
	}
	f.prog = prog
	r.Cleanup(func() { prog.Close() })
	err = namespace.Do(f.hostNS, func() error {
		f.bridge = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: floorBridge}}
		if err := netlink.LinkAdd(f.bridge); err != nil {
			return fmt.Errorf("create bridge %s: %w", floorBridge, err)
		}
		addr, _ := netlink.ParseAddr(floorGateway + "/16")
		if err := netlink.AddrAdd(f.bridge, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(f.bridge)
	})
	return f, err
}

// nsPath is where sandbox i's namespace is bound.
func (f *kernelFloor) nsPath(i int) string { return filepath.Join(f.dir, fmt.Sprintf("ns%d", i)) }

// hostSide is sandbox i's veth in the host namespace.
func hostSide(i int) string { return fmt.Sprintf("ebtfl%d", i) }

// create makes sandbox i and returns how long the kernel took.
func (f *kernelFloor) create(i int) (time.Duration, error) {
	t0 := time.Now()
	path := f.nsPath(i)
	if err := namespace.Create(path); err != nil {
		return 0, err
	}
	err := namespace.Do(path, func() error {
		if err := namespace.DisableIPv6(); err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		return 0, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	err = namespace.Do(f.hostNS, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostSide(i), MasterIndex: f.bridge.Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", hostSide(i), err)
		}
		l, err := netlink.LinkByName(hostSide(i))
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		for dir, attach := range map[string]ebpf.AttachType{"ingress": ebpf.AttachTCXIngress, "egress": ebpf.AttachTCXEgress} {
			tcx, err := link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: f.prog, Attach: attach})
			if err != nil {
				return fmt.Errorf("attach to %s: %w", hostSide(i), err)
			}
			pin := filepath.Join(f.pins, hostSide(i)+"-"+dir)
			err = tcx.Pin(pin)
			tcx.Close()
			if err != nil {
				return err
			}
		}
		return namespace.ForwardIPv6On(hostSide(i))
	})
	if err != nil {
		return 0, err
	}
	err = namespace.Do(path, func() error {
		if err := namespace.DisableIPv6On("eth0"); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		ip := net.IPv4(10, 199, byte(1+i/250), byte(1+i%250))
		if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		et, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer et.Close()
		if err := et.Change("eth0", map[string]bool{"rx-gro": true}); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(floorGateway)})
	})
	return time.Since(t0), err
}

// remove undoes create(i) and returns how long the kernel took.
func (f *kernelFloor) remove(i int) (time.Duration, error) {
	t0 := time.Now()
	var errs []error
	for _, dir := range []string{"ingress", "egress"} {
		errs = append(errs, os.Remove(filepath.Join(f.pins, hostSide(i)+"-"+dir)))
	}
	errs = append(errs, namespace.Do(f.hostNS, func() error {
		return netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostSide(i)}})
	}))
	errs = append(errs, namespace.Remove(f.nsPath(i)))
	return time.Since(t0), errors.Join(errs...)
}

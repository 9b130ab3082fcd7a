package loader

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// AttachMode selects how TC programs are attached.
type AttachMode string

const (
	AttachAuto   AttachMode = "auto"   // TCX where the kernel has it, else clsact
	AttachTCX    AttachMode = "tcx"    // TCX links (Linux 6.6+), pinned
	AttachClsact AttachMode = "clsact" // clsact qdisc + direct-action cls_bpf filter
)

// ParseAttachMode checks a user-supplied attach mode.
func ParseAttachMode(s string) (AttachMode, error) {
	switch m := AttachMode(s); m {
	case AttachAuto, AttachTCX, AttachClsact:
		return m, nil
	}
	return "", fmt.Errorf("unknown attach mode %q (want auto, tcx or clsact)", s)
}

// Options say how to load the datapath.
type Options struct {
	// PinDir is the bpffs directory for maps and links; empty loads a
	// private, unpinned copy (for tests that run programs on crafted packets).
	PinDir string
	Attach AttachMode
	// NetnsCookie identifies the dataplane's namespace to the socket hooks.
	NetnsCookie uint64
	// NATPortMin and NATPortMax bound masquerade ports; zero keeps the
	// programs' defaults (61000-65535).
	NATPortMin, NATPortMax uint16
	// CTTimeouts are conntrack lifetimes per state; nil keeps the
	// programs' defaults (DefaultCTTimeouts).
	CTTimeouts *CTTimeouts
	// CTSourceMax is how many flows one source address may hold in ct,
	// the conntrack table that never evicts; zero keeps the programs'
	// default (an eighth of the table), and at most MaxCTSourceMax.
	CTSourceMax uint32
}

// MaxCTSourceMax is every flow ct holds (two entries each, bpf/lib/maps.h).
const MaxCTSourceMax = 131072

// CTTimeouts are conntrack lifetimes in seconds, per state.
type CTTimeouts = bpf.DatapathCtTimeouts

// Datapath is the loaded programs and their (pinned) maps.
type Datapath struct {
	Maps      bpf.DatapathMaps
	Endpoint  bpf.EndpointPrograms
	Uplink    bpf.UplinkPrograms
	UplinkXDP bpf.UplinkXDPPrograms
	Sock      bpf.SockPrograms
	pinDir    string
	mode      AttachMode
	replaced  []ReplacedMap
	retired   []string
}

// ReplacedMaps lists the pinned maps Load replaced because they were of
// another layout.
func (d *Datapath) ReplacedMaps() []ReplacedMap { return d.replaced }

// RetiredMaps lists the pinned maps Load removed because this binary's
// datapath has no map of their name.
func (d *Datapath) RetiredMaps() []string { return d.retired }

// Load creates or opens the maps, then loads every program object against
// those same maps. A pinned map this binary declares differently (an
// upgrade changed its layout) is replaced by an empty one rather than
// refused, so a new binary starts without a manual reset; ReplacedMaps says
// which. Programs a previous daemon attached keep their old maps until the
// attach calls point them at this binary's programs.
func Load(opts Options) (*Datapath, error) {
	d := &Datapath{pinDir: opts.PinDir, mode: opts.Attach}
	if d.mode == "" {
		d.mode = AttachAuto
	}
	mapsSpec, err := bpf.LoadDatapath()
	if err != nil {
		return nil, err
	}
	collOpts := ebpf.CollectionOptions{}
	if opts.PinDir != "" {
		if err := ensureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		for _, dir := range []string{"links", "cgroup-links"} {
			if err := os.MkdirAll(filepath.Join(opts.PinDir, dir), 0o700); err != nil {
				return nil, fmt.Errorf("create link pin directory: %w", err)
			}
		}
		collOpts.Maps.PinPath = opts.PinDir
		if d.replaced, err = staleMaps(mapsSpec, opts.PinDir); err != nil {
			return nil, err
		}
		if d.retired, err = retiredMaps(mapsSpec, opts.PinDir); err != nil {
			return nil, err
		}
		for _, r := range d.replaced {
			// Created unpinned, then pinned over the old map once every
			// program has loaded: until then the old pin stays, so a failed
			// upgrade leaves the running datapath and its state alone.
			mapsSpec.Maps[r.Name].Pinning = ebpf.PinNone
		}
	} else {
		for _, m := range mapsSpec.Maps {
			m.Pinning = ebpf.PinNone
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(mapsSpec, collOpts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// staleMaps found none: another process pinned maps meanwhile.
		return nil, fmt.Errorf("load maps: %w (maps in %s changed while loading: is another daemon using them?)", err, opts.PinDir)
	}
	if err != nil {
		return nil, fmt.Errorf("load maps: %w", err)
	}
	defer coll.Close()
	if err := seedHash(coll.Maps["hash_seed"]); err != nil {
		return nil, err
	}

	vars := map[string]any{"netns_cookie": opts.NetnsCookie}
	if opts.NATPortMin != 0 {
		vars["nat_port_min"], vars["nat_port_max"] = opts.NATPortMin, opts.NATPortMax
	}
	if opts.CTTimeouts != nil {
		vars["ct_timeouts"] = *opts.CTTimeouts
	}
	if opts.CTSourceMax != 0 {
		vars["ct_source_max"] = opts.CTSourceMax
	}
	// The verifier takes most of a start (the endpoint object alone about
	// a second): the four objects share only maps, so they load at once.
	objs := []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
		into any
	}{
		{"endpoint", bpf.LoadEndpoint, &d.Endpoint},
		{"uplink", bpf.LoadUplink, &d.Uplink},
		{"uplink xdp", bpf.LoadUplinkXDP, &d.UplinkXDP},
		{"socket", bpf.LoadSock, &d.Sock},
	}
	errs := make([]error, len(objs))
	var wg sync.WaitGroup
	for i, obj := range objs {
		wg.Go(func() { errs[i] = loadPrograms(obj.name, obj.load, obj.into, coll.Maps, vars) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		d.Close()
		return nil, err
	}
	for _, r := range d.replaced {
		if err := swapPin(coll.Maps[r.Name], filepath.Join(opts.PinDir, r.Name)); err != nil {
			d.Close()
			return nil, err
		}
	}
	for _, name := range d.retired {
		// Programs a previous daemon attached keep the map until they are
		// replaced; only the pin goes.
		if err := os.Remove(filepath.Join(opts.PinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.Close()
			return nil, fmt.Errorf("remove pin of retired map %s: %w", name, err)
		}
	}
	if err := coll.Assign(&d.Maps); err != nil {
		d.Close()
		return nil, fmt.Errorf("assign maps: %w", err)
	}
	return d, nil
}

// seedHash draws the key of the datapath's flow hashes (hash_seed) when
// the map has none: a map that was pinned keeps the key it has, so flows
// hash as they did before a restart.
func seedHash(m *ebpf.Map) error {
	var key, seed uint32
	if err := m.Lookup(key, &seed); err != nil {
		return fmt.Errorf("read hash_seed: %w", err)
	}
	for seed == 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("draw hash_seed: %w", err)
		}
		seed = binary.NativeEndian.Uint32(b[:])
	}
	if err := m.Put(key, seed); err != nil {
		return fmt.Errorf("write hash_seed: %w", err)
	}
	return nil
}

// loadPrograms loads one program object with the shared maps in place of
// its own and its load-time variables set.
func loadPrograms(name string, load func() (*ebpf.CollectionSpec, error), into any, shared map[string]*ebpf.Map, vars map[string]any) error {
	spec, err := load()
	if err != nil {
		return err
	}
	replace := map[string]*ebpf.Map{}
	for mapName := range spec.Maps {
		if m, ok := shared[mapName]; ok {
			replace[mapName] = m
		}
	}
	for v, value := range vars {
		if vs, ok := spec.Variables[v]; ok {
			if err := vs.Set(value); err != nil {
				return fmt.Errorf("set %s of the %s programs: %w", v, name, err)
			}
		}
	}
	if err := spec.LoadAndAssign(into, &ebpf.CollectionOptions{MapReplacements: replace}); err != nil {
		return fmt.Errorf("load %s programs: %w", name, err)
	}
	return nil
}

// Close releases the loaded objects. Pinned maps and links stay in place.
func (d *Datapath) Close() error {
	return errors.Join(d.Endpoint.Close(), d.Uplink.Close(), d.UplinkXDP.Close(), d.Sock.Close(), d.Maps.Close())
}

type direction struct {
	name   string
	tcx    ebpf.AttachType
	parent uint32
}

var (
	ingress = direction{"ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS}
	egress  = direction{"egress", ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS}
)

// AttachEndpoint attaches the endpoint programs to the host side of an
// endpoint: from_container on ingress, to_container on egress. It is
// idempotent, and replaces programs a previous daemon attached.
func (d *Datapath) AttachEndpoint(ifname string, ifindex int) (AttachMode, error) {
	return d.attach(ifname, ifindex, []attachment{{ingress, d.Endpoint.FromContainer}, {egress, d.Endpoint.ToContainer}})
}

// AttachTunnel attaches from_tunnel to TC ingress of an overlay
// network's VXLAN device, so that what other hosts send to endpoints here
// is delivered to them past the bridge. It is idempotent.
func (d *Datapath) AttachTunnel(ifname string, ifindex int) (AttachMode, error) {
	return d.attach(ifname, ifindex, []attachment{{ingress, d.Endpoint.FromTunnel}})
}

// AttachUplink attaches the uplink programs to TC of a host interface:
// uplink_ingress, and uplink_egress, which notes the host's own pings
// (with XDP on ingress too). It is idempotent.
func (d *Datapath) AttachUplink(ifname string, ifindex int) (AttachMode, error) {
	return d.attach(ifname, ifindex, []attachment{{ingress, d.Uplink.UplinkIngress}, {egress, d.Uplink.UplinkEgress}})
}

// attachment is a program for one direction of an interface.
type attachment struct {
	dir  direction
	prog *ebpf.Program
}

// attach puts programs on an interface with TCX, or with clsact when the
// mode says so or, in auto mode, when the kernel has no TCX.
func (d *Datapath) attach(ifname string, ifindex int, progs []attachment) (AttachMode, error) {
	if d.mode != AttachClsact {
		var err error
		for _, a := range progs {
			if err = d.attachTCX(ifname, ifindex, a.dir, a.prog); err != nil {
				break
			}
		}
		switch {
		case err == nil:
			return AttachTCX, nil
		case d.mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported):
			return "", err
		}
	}
	for _, a := range progs {
		if err := attachClsact(ifname, ifindex, a.dir, a.prog); err != nil {
			return "", err
		}
	}
	return AttachClsact, nil
}

// Detach removes what AttachEndpoint, AttachTunnel, AttachUplink and AttachUplinkXDP
// did, whichever mode they used. A missing interface is not an error: its
// attachments went with it.
func (d *Datapath) Detach(ifname string) error {
	var errs []error
	for _, dir := range []direction{ingress, egress, xdpHook} {
		errs = append(errs, d.unpinLink(ifname, dir))
	}
	if err := os.Remove(filepath.Join(d.pinDir, "links", ifname)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove link pin directory of %s: %w", ifname, err))
	}
	if l, err := netlink.LinkByName(ifname); err == nil {
		for _, dir := range []direction{ingress, egress} {
			errs = append(errs, detachClsact(l, dir))
		}
	}
	return errors.Join(errs...)
}

// linkPin is where a TCX link is pinned: one directory per interface, as
// bpffs refuses dots in names.
func (d *Datapath) linkPin(ifname string, dir direction) string {
	return filepath.Join(d.pinDir, "links", ifname, dir.name)
}

// PinnedLinkInterfaces lists the interfaces that have pinned links.
func (d *Datapath) PinnedLinkInterfaces() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.pinDir, "links"))
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// attachTCX puts prog first on a TCX hook, ahead of every other program
// there, so none can take packets away from it (a TCX program returning
// TC_ACT_OK ends the chain). A link a previous daemon pinned is reused
// while it is still first.
func (d *Datapath) attachTCX(ifname string, ifindex int, dir direction, prog *ebpf.Program) error {
	pin := d.linkPin(ifname, dir)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		info, infoErr := l.Info()
		if infoErr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			// The link survived a daemon restart.
			first, err := firstOnHook(ifindex, dir, info.ID)
			if err != nil {
				return fmt.Errorf("query tcx %s programs of %s (ifindex %d): %w", dir.name, ifname, ifindex, err)
			}
			if first {
				// Point it at this binary's program; the kernel swaps the
				// program in place, so the link stays first.
				if err := l.Update(prog); err != nil {
					return fmt.Errorf("update tcx %s link on %s (ifindex %d): %w", dir.name, ifname, ifindex, err)
				}
				return nil
			}
			return d.moveToHead(ifname, ifindex, dir, prog, l, info.Program)
		}
		// The interface the link was for is gone (or was recreated).
		l.Unpin()
	}
	nl, err := attachHead(ifname, ifindex, dir, prog)
	if err != nil {
		return err
	}
	defer nl.Close()
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create link pin directory of %s: %w", ifname, err)
	}
	if err := nl.Pin(pin); err != nil {
		return fmt.Errorf("pin tcx %s link of %s: %w", dir.name, ifname, err)
	}
	return nil
}

// moveToHead replaces old, a pinned link that another program got ahead
// of, with a new link at the head. An update would not do: the kernel
// keeps a link's place in the chain when it swaps its program
// (tcx_link_update replaces in place). The new link goes in before the
// old one is released, so the hook never runs without ebpfnet's program;
// only when the old link already runs prog, which the kernel refuses to
// attach twice to one hook, is the old one released first.
func (d *Datapath) moveToHead(ifname string, ifindex int, dir direction, prog *ebpf.Program, old link.Link, oldProg ebpf.ProgramID) error {
	pin := d.linkPin(ifname, dir)
	if progInfo, err := prog.Info(); err == nil {
		if id, ok := progInfo.ID(); ok && id == oldProg {
			if err := old.Unpin(); err != nil {
				return fmt.Errorf("unpin tcx %s link of %s: %w", dir.name, ifname, err)
			}
			old.Close()
			nl, err := attachHead(ifname, ifindex, dir, prog)
			if err != nil {
				return err
			}
			defer nl.Close()
			if err := nl.Pin(pin); err != nil {
				return fmt.Errorf("pin tcx %s link of %s: %w", dir.name, ifname, err)
			}
			return nil
		}
	}
	nl, err := attachHead(ifname, ifindex, dir, prog)
	if err != nil {
		return err
	}
	defer nl.Close()
	// The old link lives on through its pin only: replacing the pin
	// releases it, which detaches its program.
	if err := swapPin(nl, pin); err != nil {
		return fmt.Errorf("move tcx %s link of %s to the head: %w", dir.name, ifname, err)
	}
	return nil
}

func attachHead(ifname string, ifindex int, dir direction, prog *ebpf.Program) (link.Link, error) {
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: dir.tcx, Anchor: link.Head()})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return nil, fmt.Errorf("attach tcx %s to %s (ifindex %d): %w (TCX needs Linux 6.6: attach in clsact mode instead)", dir.name, ifname, ifindex, err)
	}
	if err != nil {
		return nil, fmt.Errorf("attach tcx %s to %s (ifindex %d): %w", dir.name, ifname, ifindex, err)
	}
	return l, nil
}

// firstOnHook reports whether the link with ID id runs first on a TCX hook.
func firstOnHook(ifindex int, dir direction, id link.ID) (bool, error) {
	progs, err := tcxPrograms(ifindex, dir)
	if err != nil || len(progs) == 0 {
		return false, err
	}
	first, _ := progs[0].LinkID()
	return first == id, nil
}

func (d *Datapath) unpinLink(ifname string, dir direction) error {
	pin := d.linkPin(ifname, dir)
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can open: drop the pin file anyway.
		if rmErr := os.Remove(pin); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("remove link pin %s: %w", pin, errors.Join(err, rmErr))
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s link of %s: %w", dir.name, ifname, err)
	}
	return nil
}

// Every ebpfnet cls_bpf filter sits at this priority and handle, so it can
// be found and replaced without listing others' filters.
const (
	filterPriority = 0xeb
	filterHandle   = 0xeb
)

func clsactFilter(ifindex int, dir direction, prog *ebpf.Program) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    dir.parent,
			Handle:    filterHandle,
			Priority:  filterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fdOf(prog),
		Name:         "ebpfnet-" + dir.name,
		DirectAction: true,
	}
}

// fdOf is the program's descriptor; deleting a filter needs none.
func fdOf(prog *ebpf.Program) int {
	if prog == nil {
		return -1
	}
	return prog.FD()
}

func attachClsact(ifname string, ifindex int, dir direction, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc to %s (ifindex %d): %w", ifname, ifindex, err)
	}
	if err := netlink.FilterReplace(clsactFilter(ifindex, dir, prog)); err != nil {
		return fmt.Errorf("attach cls_bpf %s to %s (ifindex %d): %w", dir.name, ifname, ifindex, err)
	}
	return nil
}

func detachClsact(l netlink.Link, dir direction) error {
	if !hasOurFilter(l, dir) {
		return nil
	}
	f := clsactFilter(l.Attrs().Index, dir, nil)
	if err := netlink.FilterDel(f); err != nil {
		return fmt.Errorf("remove cls_bpf %s filter from %s: %w", dir.name, l.Attrs().Name, err)
	}
	return nil
}

// Attachment reports how ebpfnet's program sits on TC ingress of an
// interface of the calling thread's namespace: AttachTCX, AttachClsact, or
// "" when it is not there.
func (d *Datapath) Attachment(ifname string) AttachMode {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return ""
	}
	if pinned, err := link.LoadPinnedLink(d.linkPin(ifname, ingress), nil); err == nil {
		info, err := pinned.Info()
		pinned.Close()
		if err == nil && info.TCX() != nil && int(info.TCX().Ifindex) == l.Attrs().Index {
			return AttachTCX
		}
	}
	if hasOurFilter(l, ingress) {
		return AttachClsact
	}
	return ""
}

func hasOurFilter(l netlink.Link, dir direction) bool {
	filters, err := netlink.FilterList(l, dir.parent)
	if err != nil {
		return false
	}
	for _, f := range filters {
		if a := f.Attrs(); a.Handle == filterHandle && a.Priority == filterPriority {
			return true
		}
	}
	return false
}

// Reset removes every pin under pinDir: maps, links (which detaches their
// programs) and the directory itself.
func Reset(pinDir string) error {
	if !isBPFFS(pinDir) {
		return nil
	}
	pins, _ := filepath.Glob(filepath.Join(pinDir, "links", "*", "*"))
	cgroupPins, _ := filepath.Glob(filepath.Join(pinDir, "cgroup-links", "*"))
	pins = append(pins, cgroupPins...)
	var errs []error
	for _, pin := range pins {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			errs = append(errs, l.Unpin())
			l.Close()
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove pins in %s: %w", pinDir, err))
	}
	return errors.Join(errs...)
}

// LoadUnpinned loads a private copy of the programs and maps, pinned
// nowhere: for tests that run programs on crafted packets.
func LoadUnpinned() (*Datapath, error) { return Load(Options{}) }

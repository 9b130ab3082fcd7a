package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// OtherProgram is a program that is not ebpfnet's on a hook where
// ebpfnet's program is. One that runs before ebpfnet's can end the chain
// (TC_ACT_OK, a redirect, a drop) so that ebpfnet never sees the packet.
type OtherProgram struct {
	Direction string         `json:"direction"` // ingress or egress
	Before    bool           `json:"before"`    // it runs before ebpfnet's program
	Hook      string         `json:"hook"`      // tcx, or clsact for a tc filter
	ID        ebpf.ProgramID `json:"id,omitempty"`
	Name      string         `json:"name"` // the program's name, or a filter's kind
}

// OtherPrograms lists the programs sharing TC hooks with ebpfnet's on an
// interface of the calling thread's namespace, in the order they run.
// Directions where ebpfnet has no program are left out, and so is an
// interface that is gone.
func (d *Datapath) OtherPrograms(ifname string) ([]OtherProgram, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, nil
	}
	ifindex := l.Attrs().Index
	var others []OtherProgram
	for _, dir := range []direction{ingress, egress} {
		ours := d.pinnedTCX(ifname, ifindex, dir)
		ourFilter := hasOurFilter(l, dir)
		if ours == 0 && !ourFilter {
			continue
		}
		progs, err := tcxPrograms(ifindex, dir)
		if err != nil {
			return nil, fmt.Errorf("query tcx %s programs of %s (ifindex %d): %w", dir.name, ifname, ifindex, err)
		}
		// TCX programs run before any tc filter, ebpfnet's included.
		before := ours != 0 || ourFilter
		for _, p := range progs {
			if id, _ := p.LinkID(); ours != 0 && id == ours {
				before = false
				continue
			}
			others = append(others, OtherProgram{Direction: dir.name, Before: before, Hook: "tcx", ID: p.ID, Name: programName(p.ID)})
		}
		filters, err := netlink.FilterList(l, dir.parent)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list tc %s filters of %s: %w", dir.name, ifname, err)
		}
		for _, f := range filters {
			a := f.Attrs()
			if a.Handle == filterHandle && a.Priority == filterPriority {
				continue
			}
			o := OtherProgram{Direction: dir.name, Hook: "clsact", Name: f.Type() + " filter"}
			// Filters run by priority, lowest first.
			o.Before = ours == 0 && a.Priority < filterPriority
			if bf, ok := f.(*netlink.BpfFilter); ok {
				o.ID, o.Name = ebpf.ProgramID(bf.Id), bf.Name
			}
			others = append(others, o)
		}
	}
	return others, nil
}

// pinnedTCX is the ID of ebpfnet's TCX link on a hook, or 0.
func (d *Datapath) pinnedTCX(ifname string, ifindex int, dir direction) link.ID {
	l, err := link.LoadPinnedLink(d.linkPin(ifname, dir), nil)
	if err != nil {
		return 0
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil || info.TCX() == nil || int(info.TCX().Ifindex) != ifindex {
		return 0
	}
	return info.ID
}

// tcxPrograms lists a TCX hook's programs in the order they run; none on a
// kernel without TCX.
func tcxPrograms(ifindex int, dir direction) ([]link.AttachedProgram, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: dir.tcx})
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Programs, nil
}

// programName is a loaded program's name, or "" when it is gone.
func programName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

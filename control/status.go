package control

import (
	"errors"
	"maps"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/loader"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// Status is what the datapath is doing right now.
type Status struct {
	Counters    []dpmaps.Counter `json:"counters"`
	Maps        []dpmaps.Fill    `json:"maps"`
	Endpoints   []AttachedIface  `json:"endpoints"`
	Uplinks     []AttachedIface  `json:"uplinks"`
	SocketHooks []string         `json:"socketHooks"`
	// HeldPorts is how many host ports (port and protocol) publications
	// hold: no process of the namespace may bind them while the bind4
	// hook is attached, whether or not the daemon runs.
	HeldPorts int `json:"heldPorts"`
}

// AttachedIface is one endpoint's host-side interface and how the programs
// sit on it.
type AttachedIface struct {
	Interface string            `json:"interface"`
	Sandbox   string            `json:"sandbox,omitempty"`
	Network   string            `json:"network,omitempty"`
	Attach    loader.AttachMode `json:"attach"`
	// Others are the programs that share ebpfnet's hooks on the
	// interface; one running before ebpfnet's can bypass it.
	Others []loader.OtherProgram `json:"otherPrograms,omitempty"`
}

// Status reads the counters, map fill levels and attachments.
func (e *Engine) Status() (Status, error) {
	var st Status
	var err error
	if st.Counters, err = e.maps.Counters(); err != nil {
		return st, err
	}
	if st.Maps, err = e.maps.Fills(); err != nil {
		return st, err
	}
	for _, m := range st.Maps {
		if m.Map == "held_ports" {
			st.HeldPorts = m.Entries
		}
	}
	// Before reading the store: a writer holding e.mu may wait for readers.
	e.mu.Lock()
	uplinks := slices.Sorted(maps.Keys(e.uplinks))
	e.mu.Unlock()
	nets, sbs, err := e.store.Snapshot()
	if err != nil {
		return st, err
	}
	byID := store.ByID(nets)
	err = e.inHost(func() error {
		var errs []error
		attached := func(a AttachedIface) AttachedIface {
			a.Attach = e.dp.Attachment(a.Interface)
			var err error
			a.Others, err = e.dp.OtherPrograms(a.Interface)
			errs = append(errs, err)
			return a
		}
		for _, sb := range sbs {
			for _, ep := range sb.Endpoints {
				if ep.HostSide != "" {
					st.Endpoints = append(st.Endpoints, attached(AttachedIface{Interface: ep.HostSide, Sandbox: sb.Name,
						Network: byID[ep.NetworkID].Name}))
				}
			}
		}
		for _, name := range uplinks {
			st.Uplinks = append(st.Uplinks, attached(AttachedIface{Interface: name}))
		}
		return errors.Join(errs...)
	})
	st.SocketHooks = e.dp.SocketHooks()
	return st, err
}

// Counters reads the per-verdict counters (for metrics).
func (e *Engine) Counters() ([]dpmaps.Counter, error) { return e.maps.Counters() }

package apiengine

import (
	"cmp"
	"context"
	"github.com/ebpfnet/ebpfnet/control/egress"
	"maps"
	"net/netip"
	"slices"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// New serves the API with e.
func New(e *engine.Engine) api.RuntimeEngine { return adapter{e} }

// adapter turns API requests into the engine's specs and store records
// into the API's read models. A request's context is its client's: the
// engine's changes are short and end with the store's commit, so none is
// abandoned halfway when the client goes.
type adapter struct{ e *engine.Engine }

func (a adapter) Networks(context.Context) ([]api.Network, error) {
	nets, sbs, err := a.e.Snapshot()
	out := []api.Network{}
	for _, n := range nets {
		out = append(out, networkView(n, sbs))
	}
	return out, err
}

func (a adapter) Network(_ context.Context, ref string) (api.Network, error) {
	var v api.Network
	err := a.e.View(func(tx *store.Tx) error {
		n, err := tx.Network(ref)
		if err != nil {
			return err
		}
		sbs, err := tx.Sandboxes()
		v = networkView(n, sbs)
		return err
	})
	return v, err
}

func (a adapter) CreateNetwork(ctx context.Context, req api.NetworkCreate) (api.Network, error) {
	if req.ID != "" || req.PoolID != "" || req.Frontend != "" {
		return api.Network{}, errdefs.Invalidf("a network's ID, pool ID and frontend are set by runtimes' frontends only (got %q, %q, %q)", req.ID, req.PoolID, req.Frontend)
	}
	return a.CreateFrontendNetwork(ctx, req)
}

func (a adapter) CreateFrontendNetwork(_ context.Context, req api.NetworkCreate) (api.Network, error) {
	spec, err := networkSpec(req)
	if err != nil {
		return api.Network{}, err
	}
	n, err := a.e.CreateNetwork(spec)
	return networkView(n, nil), err
}

func (a adapter) RemoveNetwork(_ context.Context, ref string) error { return a.e.RemoveNetwork(ref) }

func (a adapter) RemoveFrontendNetwork(_ context.Context, frontend, ref string) error {
	return a.e.RemoveFrontendNetwork(frontend, ref)
}

func (a adapter) PruneNetworks(context.Context) ([]string, error) { return a.e.PruneNetworks() }

func (a adapter) Connect(_ context.Context, network string, req api.Connect) error {
	if err := cmp.Or(api.CheckFamily("IP address", req.IP, false), api.CheckFamily("IPv6 address", req.IP6, true)); err != nil {
		return err
	}
	return a.e.Connect(network, req.Sandbox, engine.EndpointSpec{IP: req.IP, IP6: req.IP6, Aliases: req.Aliases})
}

func (a adapter) Disconnect(_ context.Context, network string, req api.Disconnect) error {
	return a.e.Disconnect(network, req.Sandbox)
}

func (a adapter) Sandboxes(context.Context) ([]api.Sandbox, error) {
	out := []api.Sandbox{}
	err := a.e.View(func(tx *store.Tx) error {
		nets, err := tx.Networks()
		if err != nil {
			return err
		}
		sbs, err := tx.Sandboxes()
		if err != nil {
			return err
		}
		pubs, err := tx.AllPublications()
		if err != nil {
			return err
		}
		byID := store.ByID(nets)
		for _, sb := range sbs {
			out = append(out, sandboxView(sb, pubs[sb.Name], byID, a.e.FilesDir(sb)))
		}
		return nil
	})
	return out, err
}

func (a adapter) Sandbox(_ context.Context, ref string) (api.Sandbox, error) {
	var v api.Sandbox
	err := a.e.View(func(tx *store.Tx) error {
		sb, err := tx.Sandbox(ref)
		if err != nil {
			return err
		}
		v, err = a.viewIn(tx, sb)
		return err
	})
	return v, err
}

func (a adapter) CreateSandbox(_ context.Context, req api.SandboxCreate) (api.Sandbox, error) {
	if err := cmp.Or(api.CheckFamily("IP address", req.IP, false), api.CheckFamily("IPv6 address", req.IP6, true)); err != nil {
		return api.Sandbox{}, err
	}
	servers, err := dnsServers(req.DNS)
	if err != nil {
		return api.Sandbox{}, err
	}
	allow, err := egress.Parse(req.EgressAllow...)
	if err != nil {
		return api.Sandbox{}, err
	}
	sb, err := a.e.CreateSandbox(engine.SandboxSpec{Name: req.Name, Networks: req.Networks, IP: req.IP, IP6: req.IP6, Aliases: req.Aliases,
		Publish: req.Publish, PublishSources: req.PublishSources, PublishBalance: req.PublishBalance, DNS: servers, Links: links(req.Links),
		EgressAllow: allow, Bandwidth: req.Bandwidth})
	if err != nil {
		return api.Sandbox{}, err
	}
	return a.view(sb)
}

// view is the read model of sb as the store has it now.
func (a adapter) view(sb store.Sandbox) (api.Sandbox, error) {
	var v api.Sandbox
	err := a.e.View(func(tx *store.Tx) (err error) { v, err = a.viewIn(tx, sb); return err })
	return v, err
}

func (a adapter) UpdateSandbox(_ context.Context, ref string, req api.SandboxUpdate) (api.Sandbox, error) {
	var u engine.SandboxUpdate
	if req.EgressAllow != nil {
		allow, err := egress.Parse(*req.EgressAllow...)
		if err != nil {
			return api.Sandbox{}, err
		}
		u.EgressAllow = &allow
	}
	u.Bandwidth = req.Bandwidth
	sb, err := a.e.UpdateSandbox(ref, u)
	if err != nil {
		return api.Sandbox{}, err
	}
	return a.view(sb)
}

func (a adapter) RemoveSandbox(_ context.Context, ref string, force bool) error {
	return a.e.RemoveSandbox(ref, force)
}

func (a adapter) Publish(_ context.Context, sandbox string, req api.Ports) (map[string][]api.PortBinding, error) {
	added, err := a.e.Publish(sandbox, req.Mappings, req.Sources, req.Balance)
	return portBindings(added), err
}

func (a adapter) Unpublish(_ context.Context, sandbox string, filters []ports.Mapping) (map[string][]api.PortBinding, error) {
	removed, err := a.e.Unpublish(sandbox, filters)
	return portBindings(removed), err
}

func (a adapter) Status(context.Context) (api.Status, error) { return a.e.Status() }

func (a adapter) Events(_ context.Context, f api.EventFilter) (api.EventStream, error) {
	return a.e.Events(f)
}

func (a adapter) Counters(context.Context) ([]api.Counter, error) { return a.e.Counters() }

func (a adapter) Metrics(context.Context) (api.Metrics, error) { return a.e.Metrics() }

func (a adapter) Reconcile(context.Context) error { return a.e.Reconcile() }

func (a adapter) Drift(context.Context) (api.Drift, error) {
	d, err := a.e.Drift()
	return api.Drift{MapEntries: d.MapWrites, Leftovers: slices.Sorted(maps.Keys(d.Leftovers)), StrayPins: d.StrayPins}, err
}

// viewIn is a sandbox's view, reading in tx what it shows besides the
// record: its publications and the networks.
func (a adapter) viewIn(tx *store.Tx, sb store.Sandbox) (api.Sandbox, error) {
	// Its own networks only: every network with its pool costs what the
	// host holds.
	nets := map[string]store.Network{}
	for _, ep := range sb.Endpoints {
		n, err := tx.NetworkOf(ep)
		if err != nil {
			return api.Sandbox{}, err
		}
		nets[n.ID] = n
	}
	pubs, err := tx.Publications(sb.Name)
	if err != nil {
		return api.Sandbox{}, err
	}
	v := sandboxView(sb, pubs, nets, a.e.FilesDir(sb))
	if v.Egress != nil {
		var sources []netip.Addr
		for _, ep := range sb.Endpoints {
			if len(sb.EgressOn(nets[ep.NetworkID])) > 0 {
				sources = append(sources, ep.Addrs()...)
			}
		}
		answers, err := a.e.EgressAnswers(sources...)
		if err != nil {
			return api.Sandbox{}, err
		}
		v.Egress.Answers = egressAnswers(answers)
	}
	if !slices.ContainsFunc(pubs, func(p store.Publication) bool { return p.Balance }) {
		return v, nil
	}
	all, err := tx.AllPublications()
	if err != nil {
		return api.Sandbox{}, err
	}
	showBackends(v.NetworkSettings.Ports, all)
	return v, nil
}

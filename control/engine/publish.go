package engine

import (
	"errors"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/publications"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Publish publishes ports of a sandbox, open to the sources lists allow
// (none: those its network's lists allow, or everyone). Either all of
// specs are published or none. A port the sandbox publishes already,
// exactly as a spec says, gets the lists given instead. An external
// endpoint's ports are its runtime's to publish (PublishEndpoint).
// With balance, a host port other sandboxes publish with balance too is
// shared: one publication, each of them a backend its new flows are
// spread over.
func (e *Engine) Publish(sandboxRef string, specs []ports.Mapping, sources ports.Sources, balance bool) ([]store.Publication, error) {
	return e.publish(sandboxRef, "", specs, sources, balance)
}

// PublishEndpoint publishes ports of an external endpoint of frontend's.
func (e *Engine) PublishEndpoint(frontend, id string, specs []ports.Mapping, sources ports.Sources) ([]store.Publication, error) {
	return e.publish(id, frontend, specs, sources, false)
}

// sandboxOf finds the sandbox ref names, which frontend must own ("" for
// ebpfnet's own).
func sandboxOf(tx *store.Tx, ref, frontend string) (store.Sandbox, error) {
	sb, err := tx.Sandbox(ref)
	switch {
	case err != nil || sb.Frontend == frontend:
		return sb, err
	case frontend == "":
		return sb, ownSandbox(sb) // a runtime's, refused to the CLI
	default:
		return sb, errdefs.NotFoundf("endpoint %s: no such %s endpoint", ref, frontend)
	}
}

func (e *Engine) publish(ref, frontend string, specs []ports.Mapping, sources ports.Sources, balance bool) ([]store.Publication, error) {
	if err := ports.CheckPublications(specs); err != nil {
		return nil, err
	}
	if err := sources.Check(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var added []store.Publication
	err := e.update(func(tx *store.Tx, undo *store.Undo) error {
		sb, err := sandboxOf(tx, ref, frontend)
		if err != nil {
			return err
		}
		added, err = e.publications.Add(tx, undo, sb, specs, sources, balance)
		return err
	})
	return added, err
}

// Unpublish removes a sandbox's publications that match any of filters;
// each must match at least one. An external endpoint's ports are its
// runtime's to unpublish (UnpublishEndpoint).
func (e *Engine) Unpublish(sandboxRef string, filters []ports.Mapping) ([]store.Publication, error) {
	return e.unpublish(sandboxRef, "", filters)
}

// UnpublishEndpoint removes every publication of an external endpoint of
// frontend's; none is fine.
func (e *Engine) UnpublishEndpoint(frontend, id string) ([]store.Publication, error) {
	removed, err := e.unpublish(id, frontend, []ports.Mapping{{HostPort: 1, HostPortEnd: 65535}})
	if errors.Is(err, errdefs.ErrNotFound) && len(removed) == 0 {
		return nil, nil
	}
	return removed, err
}

func (e *Engine) unpublish(sandboxRef, frontend string, filters []ports.Mapping) ([]store.Publication, error) {
	if err := publications.CheckFilters(filters); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var r publications.Removal
	err := e.store.Update(func(tx *store.Tx) error { // names do not change
		sb, err := sandboxOf(tx, sandboxRef, frontend)
		if err != nil {
			return err
		}
		r, err = e.publications.Remove(tx, sb, filters)
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.Removed, e.publications.Apply(r)
}

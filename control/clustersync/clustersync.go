package clustersync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/driver/drivers"
	"github.com/ebpfnet/ebpfnet/control/driver/overlay"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// Config connects a Syncer to the cluster and to the engine.
type Config struct {
	Cluster *cluster.Cluster
	Store   *store.Store
	Maps    *maps.Maps
	// Locked runs fn under the engine's lock; what follows a state runs
	// there.
	Locked func(fn func())
	// Mirror makes the local copy of an overlay network, and DropMirror
	// removes that of one the cluster no longer has (refusing while
	// sandboxes here are on it); both run under the engine's lock.
	Mirror     func(cluster.Network) (store.Network, error)
	DropMirror func(store.Network) error
	// FollowRemote hands the names of other hosts' endpoints that changed,
	// by overlay network ID (nil: none now), to the resolvers; it runs
	// under the engine's lock.
	FollowRemote func(changed map[string][]dns.Record)
	// InHost runs fn in the dataplane's namespace.
	InHost func(fn func() error) error
	// PeersRecheck is how often every peer of every overlay network is
	// written again, changed or not, which puts back what something else
	// removed from the devices; a minute when zero.
	PeersRecheck time.Duration
	Log          *slog.Logger
}

// Syncer follows the cluster.
type Syncer struct {
	cfg   Config
	nudge chan struct{}
	stop  context.CancelFunc
	done  chan struct{}

	// Guarded by the engine's lock (Config.Locked):
	// remote are the other hosts' endpoints on each overlay network, by
	// network ID, as the cluster last had them;
	remote map[string][]cluster.Address
	// peers are the peers last written to each overlay network's VXLAN
	// device, by network ID, and peersChecked when they were last all
	// written whether changed or not;
	peers        map[string][]overlay.Peer
	peersChecked time.Time
	// hosts are the cluster's hosts as last followed, by advertise
	// address, for the log to say who came and went;
	hosts map[netip.Addr]cluster.Host
	// lease is the cluster lease the store records (recordLease).
	lease int64

	// conflicts are what the last Apply could not resolve, sorted. Under
	// a lock of their own: the status need not wait for a change that
	// waits for the store.
	conflictsMu sync.Mutex
	conflicts   []string
	// taking are the owners of addresses taken in the cluster for
	// endpoints not stored yet (TakeAddresses): following leaves them be.
	takingMu sync.Mutex
	taking   map[string]bool
}

// New makes a Syncer and records the cluster's lease in the store, for a
// restarted daemon to keep; recorded is the lease the store held.
func New(cfg Config, recorded int64) *Syncer {
	if cfg.PeersRecheck == 0 {
		cfg.PeersRecheck = time.Minute
	}
	s := &Syncer{cfg: cfg, nudge: make(chan struct{}, 1), lease: recorded, taking: map[string]bool{}}
	s.recordLease()
	return s
}

// Start follows the cluster until Stop.
func (s *Syncer) Start() {
	var ctx context.Context
	ctx, s.stop = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	go s.run(ctx)
}

// Stop stops following and waits until it has; a Syncer never started is
// stopped already.
func (s *Syncer) Stop() {
	if s.stop != nil {
		s.stop()
		<-s.done
		s.stop = nil
	}
}

// retryFirst is how soon what failed is first tried again.
const retryFirst = time.Second

// run keeps this host in line with the cluster until ctx ends: after
// every change in the store, and when a local change asks (Nudge).
func (s *Syncer) run(ctx context.Context) {
	defer close(s.done)
	latest := make(chan cluster.State, 1)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		s.cfg.Cluster.Watch(ctx, func(st cluster.State) {
			select { // only the newest state matters
			case <-latest:
			default:
			}
			latest <- st
		})
	}()
	defer func() { <-watching }() // it ends with ctx, before the client closes
	var last cluster.State
	// What failed is tried again, a little later each time it fails
	// again, until it works or a new state comes.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := time.Duration(0)
	recheck := time.NewTicker(s.cfg.PeersRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case last = <-latest:
		case <-retry.C:
		case <-recheck.C: // follow sees the time has come
		case <-s.nudge:
			// The watch keeps last current: what a local change asks
			// for is done against it, without reading the store.
		}
		if last.Revision == 0 {
			continue
		}
		retry.Stop()
		if !s.Apply(ctx, last) {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, retryFirst), 16*retryFirst)
		retry.Reset(backoff)
	}
}

// Nudge asks the Syncer to bring the cluster in line with a local change
// (addresses of removed endpoints to give back) without waiting for it.
func (s *Syncer) Nudge() {
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// RecheckPeers has the next state write every peer again: devices made
// again lost theirs. Callers hold the engine's lock.
func (s *Syncer) RecheckPeers() {
	s.peersChecked = time.Time{}
	s.Nudge()
}

// Apply brings this host in line with st: mirrors of the overlay
// networks, the VXLAN devices' peers, the names of other hosts'
// endpoints, and this host's addresses in the cluster. It reports whether
// something failed, to be tried again. A conflict with the state
// (errdefs.ErrConflict: an address or a subnet another has) is not: it is
// noted, and tried again at the next change, which alone can resolve it.
func (s *Syncer) Apply(ctx context.Context, st cluster.State) (failed bool) {
	var (
		requests []func() error
		errs     []error
		stale    bool
	)
	s.cfg.Locked(func() { requests, errs, stale = s.follow(ctx, st) })
	if stale {
		return false
	}
	complete := true
	for i, request := range requests {
		err := request()
		errs = append(errs, err)
		if errors.Is(err, cluster.ErrUnreachable) {
			// The rest would wait as long: all of them next time.
			errs = append(errs, fmt.Errorf("%d more requests wait for the cluster store", len(requests)-i-1))
			complete = false
			break
		}
	}
	var retry []error
	var conflicts []string
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, errdefs.ErrConflict):
			conflicts = append(conflicts, err.Error())
		default:
			retry = append(retry, err)
		}
	}
	s.noteConflicts(conflicts, complete)
	if err := errors.Join(retry...); err != nil {
		s.cfg.Log.Warn("follow the cluster", "err", err)
		return true
	}
	return false
}

// Conflicts are what the last Apply could not resolve, sorted.
func (s *Syncer) Conflicts() []string {
	s.conflictsMu.Lock()
	defer s.conflictsMu.Unlock()
	return slices.Clone(s.conflicts)
}

// noteConflicts keeps the conflicts of the latest Apply for the status,
// and logs those that are new and those that ended; an incomplete one (it
// stopped at a store out of reach) keeps the earlier ones too, as what it
// did not try again may still conflict.
func (s *Syncer) noteConflicts(now []string, complete bool) {
	s.conflictsMu.Lock()
	defer s.conflictsMu.Unlock()
	if !complete {
		now = append(now, s.conflicts...)
	}
	slices.Sort(now)
	now = slices.Compact(now)
	for _, c := range now {
		if !slices.Contains(s.conflicts, c) {
			s.cfg.Log.Error("cannot follow the cluster here until something changes", "conflict", c)
		}
	}
	for _, c := range s.conflicts {
		if !slices.Contains(now, c) {
			s.cfg.Log.Info("cluster conflict resolved", "conflict", c)
		}
	}
	s.conflicts = now
}

// setTaking records whether owner's address is being taken in the cluster
// for an endpoint not stored yet, which following leaves be.
func (s *Syncer) setTaking(owner string, taking bool) {
	s.takingMu.Lock()
	defer s.takingMu.Unlock()
	if taking {
		s.taking[owner] = true
	} else {
		delete(s.taking, owner)
	}
}

func (s *Syncer) isTaking(owner string) bool {
	s.takingMu.Lock()
	defer s.takingMu.Unlock()
	return s.taking[owner]
}

// Taken are the overlay addresses taken in the cluster before the
// engine's lock, for the endpoints of a change to come, by network ID.
type Taken map[string]*taken

// taken is one address of Taken.
type taken struct {
	owner string // the endpoint's ID
	addr  netip.Addr
	used  bool // an endpoint took it
}

// TakeAddresses takes in the cluster, before the engine's lock, the
// addresses of a sandbox's endpoints on the overlay networks among refs
// (on the first, static when it is valid), by network ID: a store out of
// reach keeps this change waiting, not every other. done ends the taking
// once the change is over, giving back what no endpoint took.
func (s *Syncer) TakeAddresses(refs []string, sandbox string, aliases []string, static netip.Addr) (took Taken, done func(), err error) {
	took, done = Taken{}, func() {}
	type want struct {
		n    store.Network
		addr netip.Addr
	}
	var wants []want
	err = s.cfg.Store.View(func(tx *store.Tx) error {
		for i, ref := range refs {
			// What is not an overlay network here is the locked change's
			// to take, or to refuse.
			if n, err := tx.Network(ref); err == nil && drivers.TraitsOf(n).Global {
				w := want{n: n}
				if i == 0 {
					w.addr = static
				}
				wants = append(wants, w)
			}
		}
		return nil
	})
	if err != nil || len(wants) == 0 {
		return took, done, err
	}
	ctx := context.Background()
	done = func() {
		for id, t := range took {
			s.setTaking(t.owner, false)
			if t.used {
				continue
			}
			if err := s.cfg.Cluster.ReleaseAddress(ctx, id, t.addr, t.owner); err != nil {
				s.cfg.Log.Warn("give back an overlay address no endpoint took", "addr", t.addr, "err", err)
			}
		}
	}
	for _, w := range wants {
		t := &taken{owner: store.NewID()}
		s.setTaking(t.owner, true)
		t.addr, err = s.cfg.Cluster.AllocateAddress(ctx, w.n.ID, cluster.Address{Owner: t.owner, Addr: w.addr, Sandbox: sandbox, Aliases: aliases})
		if err != nil {
			s.setTaking(t.owner, false)
			done()
			return nil, nil, fmt.Errorf("network %s: %w", w.n.Name, err)
		}
		took[w.n.ID] = t
	}
	return took, done, nil
}

// Allocate is ep's address on overlay network n, in the cluster: the one
// taken for it before the engine's lock (in took), or one taken now; ep's
// ID becomes the owner of one taken before. release gives it back.
func (s *Syncer) Allocate(n store.Network, sb store.Sandbox, ep *store.Endpoint, static netip.Addr, took Taken) (a netip.Addr, release func() error, err error) {
	ctx := context.Background()
	if t, ok := took[n.ID]; ok && !t.used && (!static.IsValid() || t.addr == static) {
		t.used = true
		ep.ID, a = t.owner, t.addr
	} else {
		a, err = s.cfg.Cluster.AllocateAddress(ctx, n.ID, named(cluster.Address{Owner: ep.ID, Addr: static}, sb, ep.Aliases))
		if err != nil {
			return a, nil, fmt.Errorf("network %s: %w", n.Name, err)
		}
	}
	owner := ep.ID
	return a, func() error { return s.cfg.Cluster.ReleaseAddress(ctx, n.ID, a, owner) }, nil
}

// named gives a's record the names of sandbox sb and aliases, by which
// the other hosts' resolvers answer; a runtime's sandbox (CNI's, Docker's)
// has none there, as here: its runtime names it.
func named(a cluster.Address, sb store.Sandbox, aliases []string) cluster.Address {
	if !sb.External() {
		a.Sandbox, a.Aliases = sb.Name, aliases
	}
	return a
}

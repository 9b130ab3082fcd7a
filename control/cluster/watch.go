package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// State is what the cluster holds, as of one revision: what a host acts on.
type State struct {
	Revision int64
	Hosts    []Host
	Networks []Network
	// Addresses are the addresses taken on each network, by network ID.
	Addresses map[string][]Address
}

// State reads the whole cluster in one request, so every part is of the
// same revision.
func (c *Cluster) State(ctx context.Context) (State, error) {
	v, err := c.read(ctx)
	if err != nil {
		return State{}, err
	}
	return v.state(), nil
}

// read reads every record of the cluster into a view.
func (c *Cluster) read(ctx context.Context) (*view, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	written := c.Written()
	resp, err := c.client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, c.unreachable("read the cluster", err)
	}
	if resp.Header.Revision < written {
		// A read begun after a write sees it, unless the store went back
		// (restored from a backup): its states are not older than this
		// host's writes, which it lost.
		c.written.CompareAndSwap(written, resp.Header.Revision)
	}
	v := &view{log: c.log, revision: resp.Header.Revision, records: map[string]any{}}
	for _, kv := range resp.Kvs {
		v.put(kv)
	}
	return v, nil
}

// view is the cluster's usable records by key, as of a revision: read
// whole once, then kept up to date from the watch's events, so that a
// change costs what it changed, not what the cluster holds.
type view struct {
	log      *slog.Logger
	revision int64
	records  map[string]any // Host, Network or Address
}

// put takes in a record written at key; one no host can use is dropped,
// as a read would skip it.
func (v *view) put(kv *mvccKV) {
	key := string(kv.Key)
	kind, _, _ := strings.Cut(strings.TrimPrefix(key, prefix), "/")
	var rec any
	switch kind {
	case "hosts":
		rec = decodeOne[Host](v.log, kv)
	case "networks":
		rec = decodeOne[Network](v.log, kv)
	case "addresses":
		rec = decodeOne[Address](v.log, kv)
	}
	if rec == nil {
		delete(v.records, key)
		return
	}
	v.records[key] = rec
}

// decodeOne is decodeAll of one record: the record, or nil when it is of
// no use.
func decodeOne[T record](log *slog.Logger, kv *mvccKV) any {
	if rec := decodeAll[T](log, []*mvccKV{kv}); len(rec) > 0 {
		return rec[0]
	}
	return nil
}

// apply takes in the changes of a watch response.
func (v *view) apply(resp clientv3.WatchResponse) {
	for _, ev := range resp.Events {
		if ev.Type == mvccpb.DELETE {
			delete(v.records, string(ev.Kv.Key))
		} else {
			v.put(ev.Kv)
		}
	}
	v.revision = max(v.revision, resp.Header.Revision)
}

// state is the view as a State, each part in key order, as a read has it.
func (v *view) state() State {
	st := State{Revision: v.revision, Addresses: map[string][]Address{}}
	for _, key := range slices.Sorted(maps.Keys(v.records)) {
		switch r := v.records[key].(type) {
		case Host:
			st.Hosts = append(st.Hosts, r)
		case Network:
			st.Networks = append(st.Networks, r)
		case Address:
			network, _, _ := strings.Cut(strings.TrimPrefix(key, prefix+"addresses/"), "/")
			st.Addresses[network] = append(st.Addresses[network], r)
		}
	}
	return st
}

// Watch calls fn with the state now, and again after changes, until ctx
// ends. Changes that come together are passed on once. While etcd is out
// of reach fn is not called, so the host keeps what it has; it is called
// again as soon as etcd answers.
func (c *Cluster) Watch(ctx context.Context, fn func(State)) {
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		v, err := c.read(ctx)
		if err != nil {
			c.log.Warn("cannot read the cluster store: keeping what this host has", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		fn(v.state())
		began := time.Now()
		c.follow(ctx, v, fn)
		// A watch that ended: read again, not in a loop. One that keeps
		// ending at once (its member has no leader while the one read
		// has) is given longer each time, up to 5 s.
		if time.Since(began) < time.Second {
			pause = min(2*pause, 5*time.Second)
		} else {
			pause = 100 * time.Millisecond
		}
		sleep(ctx, pause)
	}
}

// follow applies each batch of changes after v's revision to v, and
// passes the state on, until the watch ends (ctx, a lost leader, a
// compacted revision) or it is time to read the whole store again
// (Config.Resync), after which Watch does.
//
// The whole store is read again now and then because a watch cannot tell
// every divergence: resumed after a store was restored from a backup, it
// waits for revisions past those it had seen, and misses what the store
// writes at revisions it had seen already. A response older than v says
// so at once.
func (c *Cluster) follow(ctx context.Context, v *view, fn func(State)) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	changes := c.client.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(v.revision+1))
	resync := time.NewTimer(c.cfg.Resync)
	defer resync.Stop()
	// take applies a response to v; false when the watch ended.
	take := func(resp clientv3.WatchResponse) bool {
		if err := resp.Err(); err != nil {
			c.log.Warn("cluster watch ended", "err", fmt.Errorf("watch %s: %w", prefix, err))
			return false
		}
		if resp.Header.Revision != 0 && resp.Header.Revision < v.revision {
			c.log.Warn("the cluster store went back (restored from a backup?): reading it again", "revision", resp.Header.Revision, "had", v.revision)
			return false
		}
		v.apply(resp)
		return true
	}
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-changes:
		case <-resync.C:
			return
		}
		if !ok || !take(resp) {
			return
		}
		for drained := false; !drained; { // what came meanwhile is passed on with it
			select {
			case more, ok := <-changes:
				if !ok || !take(more) {
					return
				}
			default:
				drained = true
			}
		}
		fn(v.state())
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

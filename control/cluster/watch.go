package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

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
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	written := c.Written()
	resp, err := c.client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return State{}, c.unreachable("read the cluster", err)
	}
	if resp.Header.Revision < written {
		// A read begun after a write sees it, unless the store went back
		// (restored from a backup): its states are not older than this
		// host's writes, which it lost.
		c.written.CompareAndSwap(written, resp.Header.Revision)
	}
	st := State{Revision: resp.Header.Revision, Addresses: map[string][]Address{}}
	for _, kv := range resp.Kvs {
		key := strings.TrimPrefix(string(kv.Key), prefix)
		kind, rest, _ := strings.Cut(key, "/")
		switch kind {
		case "hosts":
			st.Hosts = append(st.Hosts, decodeAll[Host](c.log, []*mvccKV{kv})...)
		case "networks":
			st.Networks = append(st.Networks, decodeAll[Network](c.log, []*mvccKV{kv})...)
		case "addresses":
			network, _, _ := strings.Cut(rest, "/")
			if as := decodeAll[Address](c.log, []*mvccKV{kv}); len(as) > 0 {
				st.Addresses[network] = append(st.Addresses[network], as...)
			}
		}
	}
	return st, nil
}

// Watch calls fn with the state now, and again after changes, until ctx
// ends. Changes that come together are read once. While etcd is out of
// reach fn is not called, so the host keeps what it has; it is called
// again as soon as etcd answers.
func (c *Cluster) Watch(ctx context.Context, fn func(State)) {
	for ctx.Err() == nil {
		st, err := c.State(ctx)
		if err != nil {
			c.log.Warn("cannot read the cluster store: keeping what this host has", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		fn(st)
		c.follow(ctx, st.Revision, fn)
		sleep(ctx, 100*time.Millisecond) // a watch that ended: read again, not in a loop
	}
}

// follow reads the state again after each batch of changes since rev,
// until the watch ends (ctx, a lost leader, a compacted revision).
func (c *Cluster) follow(ctx context.Context, rev int64, fn func(State)) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	changes := c.client.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range changes {
		if err := resp.Err(); err != nil {
			c.log.Warn("cluster watch ended", "err", fmt.Errorf("watch %s: %w", prefix, err))
			return
		}
		for drained := false; !drained; { // what came meanwhile is read with it
			select {
			case _, ok := <-changes:
				if !ok {
					return
				}
			default:
				drained = true
			}
		}
		st, err := c.State(ctx)
		if err != nil {
			return
		}
		fn(st)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// prefix is where every key of ebpfnet's lives in etcd; v1 is the layout.
const prefix = "/ebpfnet/v1/"

// DefaultLeaseTTL is how long a host's records outlive its last renewal:
// long enough to ride out an etcd leader election, short enough that the
// others soon stop sending to a host that died.
const DefaultLeaseTTL = 10 * time.Second

// joinTimeout bounds Join's first try to register.
const joinTimeout = 2 * time.Second

// requestTimeout bounds every request to etcd, so that a write fails with
// a clear error instead of hanging while the store is unreachable.
const requestTimeout = 5 * time.Second

// Config says how to join a cluster.
type Config struct {
	// Endpoints are etcd's client addresses, host:port.
	Endpoints []string
	// Advertise is this host's address on the underlay, which the others
	// send its overlay traffic to; it also names the host in the cluster.
	Advertise netip.Addr
	// Dial opens connections to etcd, from the namespace the host's
	// traffic leaves from; nil dials from the caller's.
	Dial func(ctx context.Context, address string) (net.Conn, error)
	// TLS speaks to the store over TLS when set (ParseStoreOptions).
	TLS *tls.Config
	// Resync is how often the watch reads the whole store again, a
	// minute when zero.
	Resync time.Duration
	// LeaseTTL is DefaultLeaseTTL when zero.
	LeaseTTL time.Duration
	// Heartbeat is how often the lease is renewed, a tenth of LeaseTTL
	// when zero: an outage of the store shorter than nearly the whole TTL
	// keeps this host's records.
	Heartbeat time.Duration
	// Lease is the lease this host held before (a restarted daemon's):
	// kept when it still lives, so the others never see this host's
	// records go; 0 or a lapsed one gets a new lease.
	Lease int64
	// PeersRecheck is how often a member that follows the cluster
	// (package clustersync) writes every peer of its overlay networks'
	// VXLAN devices again, changed or not; a minute when zero.
	PeersRecheck time.Duration
	Log          *slog.Logger
}

// ParseStore reads the daemon's --cluster-store value, Docker's form:
// etcd://H1:2379,H2:2379,H3:2379.
func ParseStore(s string) ([]string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "etcd" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, errdefs.Invalidf("invalid cluster store %q: want etcd://HOST:PORT[,HOST:PORT…]", s)
	}
	var endpoints []string
	for _, hp := range strings.Split(u.Host, ",") {
		if _, port, err := net.SplitHostPort(hp); err != nil || port == "" {
			return nil, errdefs.Invalidf("invalid cluster store %q: endpoint %q is not HOST:PORT", s, hp)
		}
		endpoints = append(endpoints, hp)
	}
	return endpoints, nil
}

// Cluster is this host's membership of a cluster.
type Cluster struct {
	cfg    Config
	client *clientv3.Client
	log    *slog.Logger

	mu    sync.Mutex
	lease clientv3.LeaseID // this host's, renewed by keepAlive; 0: none now
	// heartbeat is how often lease is renewed: Config.Heartbeat, or
	// oftener for a kept lease granted with a shorter TTL than
	// Config.LeaseTTL (etcd cannot change a lease's TTL).
	heartbeat time.Duration
	// lapsed is the lease held before the one being taken: Config.Lease,
	// then each one that lapsed.
	lapsed clientv3.LeaseID
	// registering lets one registration run at a time: a token.
	registering chan struct{}

	// written is the revision of this host's newest write (Written).
	written atomic.Int64

	stop    context.CancelFunc
	stopped chan struct{}
}

// Host is a member of the cluster, as it registered itself.
type Host struct {
	Advertise netip.Addr `json:"advertise"`
	Hostname  string     `json:"hostname"`
	Joined    time.Time  `json:"joined"`
}

// Join connects to etcd, takes a lease and registers this host. With etcd
// out of reach it still returns, and keeps trying: a host that restarts
// during an outage of the store keeps its networks and forwarding, and
// joins when the store answers. Until then what needs the lease fails.
func Join(cfg Config) (*Cluster, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errdefs.Invalidf("no cluster store endpoints given")
	}
	if !cfg.Advertise.IsValid() || cfg.Advertise.IsUnspecified() || cfg.Advertise.IsLoopback() {
		return nil, errdefs.Invalidf("invalid cluster advertise address %q: want this host's address on the network between the hosts", cfg.Advertise)
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = cfg.LeaseTTL / 10
	}
	if cfg.Resync == 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	etcdCfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: requestTimeout,
		// A member cut off without a reset (a partition, a dead host)
		// leaves its connection open: pings find it out in seconds, well
		// within the lease's TTL, and the client moves to another member.
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
		TLS:                  cfg.TLS,
	}
	// Reconnecting is tried at least every second, each try given 2 s (a
	// partition drops its SYN): gRPC's own backoff grows to two minutes
	// through an outage, and its wait once the store is back eats into
	// the lease (an outage of 5 s became 10).
	etcdCfg.DialOptions = []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 2 * time.Second,
	})}
	if cfg.Dial != nil {
		etcdCfg.DialOptions = append(etcdCfg.DialOptions, grpc.WithContextDialer(cfg.Dial))
	}
	client, err := clientv3.New(etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("connect to cluster store %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	c := &Cluster{cfg: cfg, client: client, log: cfg.Log, stopped: make(chan struct{}), lapsed: clientv3.LeaseID(cfg.Lease),
		registering: make(chan struct{}, 1)}
	// A short first try: out of reach, the daemon starts without waiting
	// out a request's whole budget, and keepAlive goes on trying.
	first, cancel := context.WithTimeout(context.Background(), joinTimeout)
	err = c.register(first)
	cancel()
	if err != nil {
		if !isUnreachable(err) {
			client.Close()
			return nil, err
		}
		// A store that answers, but not in the TLS this host speaks, is
		// not out of reach: it never will be reached, so say why.
		if err := c.checkTLS(); err != nil {
			client.Close()
			return nil, err
		}
		c.log.Warn("cluster store out of reach: this host joins when it answers", "store", strings.Join(cfg.Endpoints, ","), "err", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go c.keepAlive(ctx)
	return c, nil
}

// register takes a lease, the one held before while it lives, and writes
// the host record under it, unless the host has a lease already (another
// registration made it first): keepAlive's, or a request's (registered).
// It gives up when ctx ends, waiting for another registration included.
func (c *Cluster) register(ctx context.Context) error {
	select {
	case c.registering <- struct{}{}:
		defer func() { <-c.registering }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if c.currentLease() != 0 {
		return nil
	}
	previous := c.previous()
	lease, ttl, err := c.keepOrGrant(ctx, previous)
	if err != nil {
		return err
	}
	// A new lease is the one to keep from now on: should the answer to
	// the record's write below be lost, the next registration finds the
	// record its own, not another host's.
	c.mu.Lock()
	c.lapsed = lease
	c.mu.Unlock()
	hostname, _ := os.Hostname()
	rec, _ := json.Marshal(Host{Advertise: c.cfg.Advertise, Hostname: hostname, Joined: time.Now().UTC()})
	// The record is written when no host has it, or when this host does
	// (its kept lease): another host with the same advertise address
	// would take this host's endpoints for its own and give them back.
	key := hostKey(c.cfg.Advertise)
	put := clientv3.OpPut(key, string(rec), clientv3.WithLease(lease))
	txn, err := c.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(put).Commit()
	if err == nil && !txn.Succeeded {
		txn, err = c.client.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", int64(lease))).Then(put).Else(clientv3.OpGet(key)).Commit()
	}
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		if lease != previous {
			c.client.Revoke(ctx, lease) // it holds nothing: not left to run out
			c.mu.Lock()
			c.lapsed = previous
			c.mu.Unlock()
		}
		other, left := "another host", ""
		kvs := txn.Responses[0].GetResponseRange().Kvs
		if h := decodeAll[Host](c.log, kvs); len(h) > 0 && h[0].Hostname != "" {
			other = "host " + h[0].Hostname
		}
		if len(kvs) > 0 {
			if ttl, err := c.client.TimeToLive(ctx, clientv3.LeaseID(kvs[0].Lease)); err == nil && ttl.TTL > 0 {
				// This host itself, restarted without the lease it had
				// (its state lost), is in once that lease runs out.
				left = fmt.Sprintf(" (or this host before its state was lost: then in %d s)", ttl.TTL)
			}
		}
		return errdefs.Conflictf("advertise address %s is %s's in the cluster%s: give each host an address of its own", c.cfg.Advertise, other, left)
	}
	heartbeat := c.cfg.Heartbeat
	if granted := time.Duration(ttl) * time.Second; granted < c.cfg.LeaseTTL {
		// A kept lease of a shorter TTL (the daemon restarted with a
		// longer discovery.ttl) lives on, renewed often enough for it,
		// until it lapses and a lease of the TTL asked for replaces it.
		heartbeat = min(heartbeat, granted/10)
		c.log.Info("kept this host's lease, of a shorter TTL than asked for", "lease", fmt.Sprintf("%x", int64(lease)), "ttl", granted, "asked", c.cfg.LeaseTTL)
	}
	c.mu.Lock()
	c.lease, c.heartbeat = lease, heartbeat
	c.mu.Unlock()
	return nil
}

// keepOrGrant renews previous if it still lives, else grants a new lease;
// it returns the lease and its TTL in seconds, as granted.
func (c *Cluster) keepOrGrant(ctx context.Context, previous clientv3.LeaseID) (clientv3.LeaseID, int64, error) {
	if previous != 0 {
		if resp, err := c.client.KeepAliveOnce(ctx, previous); err == nil {
			return previous, resp.TTL, nil
		} else if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, 0, err
		}
	}
	lease, err := c.client.Grant(ctx, int64(c.cfg.LeaseTTL.Seconds()))
	if err != nil {
		return 0, 0, err
	}
	return lease.ID, lease.TTL, nil
}

// keepAlive renews the lease until Close, every heartbeat (a tenth of its
// TTL unless discovery.heartbeat says otherwise) rather than etcd's
// client's third: an outage of etcd that begins just before a renewal is
// ridden out as well as one just after, for nearly the whole TTL. A lease that lapsed (etcd was out of reach longer than that) is
// replaced, and the host registered again, once etcd answers.
func (c *Cluster) keepAlive(ctx context.Context) {
	defer close(c.stopped)
	refused := "" // why the store last refused to register this host, said once
	for {
		lease := c.currentLease()
		if lease == 0 {
			budget, cancel := context.WithTimeout(ctx, requestTimeout)
			err := c.register(budget)
			cancel()
			if err == nil {
				c.log.Info("registered in the cluster", "advertise", c.cfg.Advertise, "lease", fmt.Sprintf("%x", int64(c.currentLease())))
				refused = ""
				continue
			}
			if !isUnreachable(err) && ctx.Err() == nil && err.Error() != refused {
				refused = err.Error()
				c.log.Error("cannot register this host in the cluster", "err", err)
			}
			sleep(ctx, time.Second)
		} else {
			began := time.Now()
			renew, cancel := context.WithTimeout(ctx, requestTimeout)
			_, err := c.client.KeepAliveOnce(renew, lease)
			cancel()
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				c.log.Warn("cluster lease lapsed: registering this host again", "advertise", c.cfg.Advertise)
				c.lapse(lease)
				continue
			}
			// The next renewal is a heartbeat after this one began, out
			// of reach or not: one that waited out its budget is
			// followed at once, not a heartbeat later.
			c.mu.Lock()
			heartbeat := c.heartbeat
			c.mu.Unlock()
			sleep(ctx, heartbeat-time.Since(began))
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// registered returns this host's lease, registering first when it has
// none (etcd has not answered since Join, or the lease lapsed): a request
// need not wait for keepAlive's next attempt once etcd answers again.
func (c *Cluster) registered(ctx context.Context) (clientv3.LeaseID, error) {
	if lease := c.currentLease(); lease != 0 {
		return lease, nil
	}
	if err := c.register(ctx); err != nil {
		return 0, c.unreachable("register host "+c.cfg.Advertise.String(), err)
	}
	return c.currentLease(), nil
}

// lapse records that lease ended, unless the host holds another by now
// (a request found the lease gone first and registered again).
func (c *Cluster) lapse(lease clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease == lease {
		c.lease, c.lapsed = 0, lease
	}
}

// previous is the lease to keep, if it lives, at the next registration.
func (c *Cluster) previous() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lapsed
}

func (c *Cluster) currentLease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

// Close stops renewing the lease, and leaves it: the datapath keeps
// forwarding while the daemon is down, so the others keep this host's
// records for the lease's TTL, and a daemon back within it keeps them
// (Config.Lease). A host that does not come back drops out after it.
func (c *Cluster) Close() error {
	c.stop()
	<-c.stopped
	return c.client.Close()
}

// Written is the revision of this host's newest change to the cluster: a
// State older than that misses it, and acting on it would undo it here.
func (c *Cluster) Written() int64 { return c.written.Load() }

// wrote records a change of this host's, made at rev.
func (c *Cluster) wrote(rev int64) {
	for {
		old := c.written.Load()
		if rev <= old || c.written.CompareAndSwap(old, rev) {
			return
		}
	}
}

// Lease is the lease this host holds now.
func (c *Cluster) Lease() int64 { return int64(c.currentLease()) }

// Advertise is this host's address in the cluster.
func (c *Cluster) Advertise() netip.Addr { return c.cfg.Advertise }

// Status is what `ebpfnet status` shows of the cluster.
type Status struct {
	Endpoints []string
	Advertise netip.Addr
	// Lease is this host's lease, in hex as etcdctl shows it, and the
	// seconds it has left.
	Lease    string
	LeaseTTL int64
	Hosts    []Host
}

// Status reads the lease and the hosts from etcd.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	lease := c.currentLease()
	s := Status{Endpoints: c.cfg.Endpoints, Advertise: c.cfg.Advertise, Lease: fmt.Sprintf("%x", int64(lease))}
	if lease == 0 {
		return s, c.unreachable("read the lease: this host has none yet", context.DeadlineExceeded)
	}
	ttl, err := c.client.TimeToLive(ctx, lease)
	if err != nil {
		return s, c.unreachable("read the lease", err)
	}
	s.LeaseTTL = ttl.TTL
	s.Hosts, err = c.Hosts(ctx)
	return s, err
}

// Hosts lists the hosts whose lease holds.
func (c *Cluster) Hosts(ctx context.Context) ([]Host, error) {
	return list[Host](ctx, c, prefix+"hosts/")
}

// list reads every record under a prefix, in key order.
func list[T record](ctx context.Context, c *Cluster, p string) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	for {
		resp, err := c.client.Get(ctx, p, clientv3.WithPrefix())
		if c.again(ctx, err) {
			continue
		}
		if err != nil {
			return nil, c.unreachable("read "+p, err)
		}
		return decodeAll[T](c.log, resp.Kvs), nil
	}
}

// again reports whether a request that failed with err should be made
// again: the member it went to is out of reach, and the client will try
// another, while ctx leaves time. It waits a moment first.
func (c *Cluster) again(ctx context.Context, err error) bool {
	if !unavailable(err) || ctx.Err() != nil {
		return false
	}
	sleep(ctx, 200*time.Millisecond)
	return ctx.Err() == nil
}

// unavailable reports whether err says the store cannot answer for now:
// no member is reachable (gRPC's status), or the one that is has no
// leader, lost it during the request, or timed out waiting for it (etcd's
// own errors, which the client turns into rpctypes.EtcdError).
func unavailable(err error) bool {
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		return etcdErr.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// isUnreachable reports whether err says no member answered.
func isUnreachable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded || unavailable(err)
}

// ErrUnreachable is what an error of a request the store did not answer
// is (errors.Is): one to make again later, when it answers.
var ErrUnreachable = errors.New("cluster store unreachable")

// unreachableError says plainly that the store did not answer.
type unreachableError struct{ msg string }

func (e unreachableError) Error() string        { return e.msg }
func (e unreachableError) Is(target error) bool { return target == ErrUnreachable }

// unreachable names what could not be done, and says so plainly when the
// store did not answer in time.
func (c *Cluster) unreachable(what string, err error) error {
	store := strings.Join(c.cfg.Endpoints, ",")
	switch {
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return unreachableError{fmt.Sprintf("%s: cluster store %s unreachable (no answer in time)", what, store)}
	case unavailable(err):
		return unreachableError{fmt.Sprintf("%s: cluster store %s unreachable: %s", what, store, status.Convert(err).Message())}
	}
	return fmt.Errorf("%s in cluster store: %w", what, err)
}

func hostKey(a netip.Addr) string { return prefix + "hosts/" + a.String() }

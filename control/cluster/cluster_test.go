package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// store is a one-member etcd on the loopback of a namespace of its own,
// and a way in for the hosts that join it.
type store struct {
	etcd *testbed.Etcd
	dial func(ctx context.Context, address string) (net.Conn, error)
}

func newStore(t *testing.T) store {
	return newStoreWith(t, testbed.StartEtcd)
}

// newStoreWith is newStore, with the etcd start chooses.
func newStoreWith(t *testing.T, start func(testbed.TB, ...testbed.EtcdMember) *testbed.Etcd) store {
	testenv.RequirePrivileges(t)
	ns := testenv.HostNamespace(t, testenv.Prefix("etcd"))
	etcd := start(t, testbed.EtcdMember{NetNS: ns, Addr: netip.MustParseAddr("127.0.0.1")})
	return store{etcd, func(ctx context.Context, address string) (c net.Conn, err error) {
		err = namespace.Do(ns, func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", address)
			return err
		})
		return c, err
	}}
}

// join makes host number i join; the test's cleanup leaves.
func (s store) join(t *testing.T, i int, ttl time.Duration) *cluster.Cluster {
	t.Helper()
	c, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(i), Dial: s.dial, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mortal makes host number i join over a link the test can cut, with a
// lease of 2 s: a host that can die.
func (s store) mortal(t *testing.T, i int) (*cluster.Cluster, *cuttable) {
	t.Helper()
	link := &cuttable{dial: s.dial}
	c, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(i), Dial: link.Dial, LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, link
}

// client is a plain etcd client of the store, for what no host does.
func (s store) client(t *testing.T) *clientv3.Client {
	t.Helper()
	o, err := cluster.ParseStoreOptions(s.etcd.StoreOptions())
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: s.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: o.TLS,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(s.dial)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// overlay creates the network "ov" from host c.
func overlay(t *testing.T, c *cluster.Cluster) cluster.Network {
	t.Helper()
	return overlayOn(t, c, "")
}

// overlayOn creates the network "ov" from host c on subnet, the cluster's
// choice when "".
func overlayOn(t *testing.T, c *cluster.Cluster, subnet string) cluster.Network {
	t.Helper()
	spec := cluster.NetworkSpec{ID: "net1", Name: "ov"}
	if subnet != "" {
		spec.Subnet = netip.MustParsePrefix(subnet)
	}
	n, err := c.CreateNetwork(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hostAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }

func TestParseStore(t *testing.T) {
	got, err := cluster.ParseStore("etcd://10.0.0.1:2379,10.0.0.2:2379")
	if err != nil || strings.Join(got, " ") != "10.0.0.1:2379 10.0.0.2:2379" {
		t.Errorf("two endpoints: %v, %v", got, err)
	}
	for _, bad := range []string{"consul://10.0.0.1:8500", "etcd://", "etcd://10.0.0.1", "10.0.0.1:2379", "etcd://10.0.0.1:2379/path"} {
		_, err := cluster.ParseStore(bad)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v, want an invalid-argument error naming it", bad, err)
		}
	}
}

// Networks created at once from two hosts each get a name, VNI and subnet
// of their own; a name or subnet taken is refused, naming it.
func TestNetworksAcrossHosts(t *testing.T) {
	s := newStore(t)
	hosts := []*cluster.Cluster{s.join(t, 1, 0), s.join(t, 2, 0)}
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			_, err := hosts[i%2].CreateNetwork(ctx, cluster.NetworkSpec{ID: fmt.Sprintf("id%02d", i), Name: fmt.Sprintf("ov%02d", i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	nets, err := hosts[1].Networks(ctx)
	if err != nil || len(nets) != 20 {
		t.Fatalf("host 2 lists %d networks, %v; want 20", len(nets), err)
	}
	vnis, subnets := map[uint32]string{}, map[netip.Prefix]string{}
	for _, n := range nets {
		if other, ok := vnis[n.VNI]; ok || n.VNI < 4096 {
			t.Errorf("%s has VNI %d (also %s's)", n.Name, n.VNI, other)
		}
		if other, ok := subnets[n.Subnet]; ok || n.Subnet.Bits() != 24 || n.Gateway != n.Subnet.Addr().Next() {
			t.Errorf("%s has subnet %s gateway %s (subnet also %s's)", n.Name, n.Subnet, n.Gateway, other)
		}
		vnis[n.VNI], subnets[n.Subnet] = n.Name, n.Name
	}

	_, err = hosts[1].CreateNetwork(ctx, cluster.NetworkSpec{ID: "again", Name: "ov03"})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "ov03") {
		t.Errorf("a name taken on the other host: %v", err)
	}
	_, err = hosts[0].CreateNetwork(ctx, cluster.NetworkSpec{ID: "wide", Name: "wide", Subnet: netip.MustParsePrefix("10.0.0.0/16")})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "10.0.0.0/16") {
		t.Errorf("a subnet over others: %v", err)
	}
	_, err = hosts[0].CreateNetwork(ctx, cluster.NetworkSpec{ID: "odd", Name: "odd", Subnet: netip.MustParsePrefix("10.9.0.1/24")})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "10.9.0.1/24") {
		t.Errorf("a subnet that is not a network address: %v", err)
	}
	if n, err := hosts[0].Network(ctx, "ov07"); err != nil || n.ID != "id07" {
		t.Errorf("find ov07: %+v, %v", n, err)
	}
	if _, err := hosts[0].Network(ctx, "nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("find nosuch: %v", err)
	}
}

// Addresses taken at once from two hosts are never the same; a network
// with addresses is kept until they are released.
func TestAddressesAcrossHosts(t *testing.T) {
	s := newStore(t)
	hosts := []*cluster.Cluster{s.join(t, 1, 0), s.join(t, 2, 0)}
	ctx := context.Background()
	n := overlayOn(t, hosts[0], "10.5.0.0/24")
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		taken = map[netip.Addr]string{}
	)
	for i := range 20 {
		wg.Go(func() {
			owner := fmt.Sprintf("ep%02d", i)
			a, err := hosts[i%2].AllocateAddress(ctx, n.ID, cluster.Address{Owner: owner})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			if other, ok := taken[a]; ok || a == n.Gateway || !n.Subnet.Contains(a) {
				t.Errorf("%s got %s (also %s's)", owner, a, other)
			}
			taken[a] = owner
		})
	}
	wg.Wait()
	if a, err := hosts[1].AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep00"}); err != nil || taken[a] != "ep00" {
		t.Errorf("ep00 asking again got %s, %v", a, err)
	}
	if _, err := hosts[1].AllocateAddress(ctx, n.ID, cluster.Address{Owner: "late", Addr: netip.MustParseAddr("10.5.0.2")}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("an address taken: %v", err)
	}
	if _, err := hosts[1].AllocateAddress(ctx, n.ID, cluster.Address{Owner: "late", Addr: netip.MustParseAddr("10.6.0.2")}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("an address off the subnet: %v", err)
	}
	err := hosts[0].RemoveNetwork(ctx, "ov")
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), hostAddr(1).String()) || !strings.Contains(err.Error(), hostAddr(2).String()) {
		t.Errorf("remove a network with endpoints: %v, want a conflict naming both hosts", err)
	}
	for a, owner := range taken {
		if err := hosts[0].ReleaseAddress(ctx, n.ID, a, owner); err != nil {
			t.Fatal(err)
		}
	}
	if err := hosts[1].RemoveNetwork(ctx, "ov"); err != nil {
		t.Fatal(err)
	}
	if nets, err := hosts[0].Networks(ctx); err != nil || len(nets) != 0 {
		t.Errorf("after remove: %v, %v", nets, err)
	}
}

// A host that stops renewing its lease, as a killed daemon does, leaves
// the cluster with its addresses once the lease runs out.
func TestLeaseExpiry(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := s.join(t, 1, 0)
	n := overlay(t, a)
	b, link := s.mortal(t, 2)
	if _, err := b.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep", Sandbox: "web"}); err != nil {
		t.Fatal(err)
	}
	if hosts, _ := a.Hosts(ctx); len(hosts) != 2 {
		t.Fatalf("hosts: %v, want 2", hosts)
	}
	link.cut() // as if the host died: no renewal, no revoke
	deadline := time.Now().Add(10 * time.Second)
	for {
		hosts, err1 := a.Hosts(ctx)
		addrs, err2 := a.Addresses(ctx, n.ID)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if len(hosts) == 1 && len(addrs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the host went: hosts %v, addresses %v", hosts, addrs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, err := a.Status(ctx)
	if err != nil || st.LeaseTTL <= 0 || len(st.Hosts) != 1 || st.Hosts[0].Advertise != hostAddr(1) {
		t.Errorf("status: %+v, %v", st, err)
	}
}

// A request made after the host's lease ended, before the host has heard
// (its next renewal is seconds away: etcd was out of reach longer than
// the lease had left), registers the host again and is made under the new
// lease, instead of failing for a lease the store no longer has.
func TestRequestAfterTheLeaseLapsed(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := s.join(t, 1, 0)
	n := overlay(t, a)
	lapsed := a.Lease()
	if _, err := s.client(t).Revoke(ctx, clientv3.LeaseID(lapsed)); err != nil {
		t.Fatal(err)
	}
	addr, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep", Sandbox: "web"})
	if err != nil {
		t.Fatalf("take an address after the lease ended: %v", err)
	}
	if lease := a.Lease(); lease == lapsed || lease == 0 {
		t.Errorf("lease %x after it ended, want a new one", lease)
	}
	hosts, err1 := a.Hosts(ctx)
	addrs, err2 := a.Addresses(ctx, n.ID)
	if err := errors.Join(err1, err2); err != nil || len(hosts) != 1 || len(addrs) != 1 || addrs[0].Addr != addr {
		t.Errorf("hosts %v, addresses %v (%v); want this host again, holding %s", hosts, addrs, err, addr)
	}
}

// The lease is renewed often enough that it never runs low: an outage of
// etcd shorter than nearly the whole TTL keeps the host's records, however
// long after a renewal it begins.
func TestLeaseStaysNearlyFull(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 10*time.Second)
	if least := leastLeft(t, s.client(t), a); least < 8 {
		t.Errorf("the 10 s lease ran down to %d s left; want it renewed before 8", least)
	}
}

// leastLeft is the fewest whole seconds host h's lease had left over 5 s,
// as another client of the store reads them.
func leastLeft(t *testing.T, other *clientv3.Client, h *cluster.Cluster) int64 {
	t.Helper()
	least := int64(math.MaxInt64)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		ttl, err := other.TimeToLive(context.Background(), clientv3.LeaseID(h.Lease()))
		if err != nil {
			t.Fatal(err)
		}
		least = min(least, ttl.TTL)
	}
	return least
}

// cuttable is a way to etcd that can be cut: its connections closed and
// new ones refused.
type cuttable struct {
	dial  func(ctx context.Context, address string) (net.Conn, error)
	mu    sync.Mutex
	conns []net.Conn
	isCut bool
}

func (c *cuttable) Dial(ctx context.Context, address string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isCut {
		return nil, errors.New("cut")
	}
	conn, err := c.dial(ctx, address)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cuttable) uncut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isCut = false
}

func (c *cuttable) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isCut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

// A store that does not answer is joined all the same, so a host that
// starts during an outage keeps what it has; what needs the store fails
// at once or within the request budget, saying it is out of reach. Once
// the store answers, the host is in.
func TestJoinUnreachable(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	t0 := time.Now()
	lost, err := cluster.Join(cluster.Config{Endpoints: []string{"127.0.0.1:2999"}, Advertise: hostAddr(1), Dial: s.dial})
	if err != nil {
		t.Fatalf("join a store nobody serves: %v", err)
	}
	defer lost.Close()
	if _, err := lost.Status(ctx); err == nil || !strings.Contains(err.Error(), "127.0.0.1:2999 unreachable") {
		t.Errorf("status: %v", err)
	}
	if _, err := lost.AllocateAddress(ctx, "net1", cluster.Address{Owner: "ep"}); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("allocate: %v", err)
	}
	if _, err := lost.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net1", Name: "ov"}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:2999 unreachable") {
		t.Errorf("create: %v", err)
	}
	if d := time.Since(t0); d > 20*time.Second {
		t.Errorf("joining and failing took %s", d)
	}

	link := &cuttable{dial: s.dial}
	link.cut()
	late, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(2), Dial: link.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	link.uncut()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if hosts, err := late.Hosts(ctx); err == nil && len(hosts) == 1 && hosts[0].Advertise == hostAddr(2) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("10 s after the store answered: hosts %v, %v", hosts, err)
		}
	}
	if _, err := late.Status(ctx); err != nil {
		t.Errorf("status once joined: %v", err)
	}
}

// A host watching the cluster sees the others' networks and addresses
// come and go, each in a state of one revision.
func TestWatch(t *testing.T) {
	s := newStore(t)
	a, b := s.join(t, 1, 0), s.join(t, 2, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	states := make(chan cluster.State, 100)
	go a.Watch(ctx, func(st cluster.State) { states <- st })
	await := func(what string, ok func(cluster.State) bool) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case st := <-states:
				if ok(st) {
					return
				}
			case <-timeout:
				t.Fatalf("no state with %s in 5 s", what)
			}
		}
	}
	await("both hosts", func(st cluster.State) bool { return len(st.Hosts) == 2 })
	n := overlay(t, b)
	addr, err := b.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep1", Sandbox: "web", Aliases: []string{"www"}})
	if err != nil {
		t.Fatal(err)
	}
	await("b's endpoint", func(st cluster.State) bool {
		as := st.Addresses[n.ID]
		return len(st.Networks) == 1 && len(as) == 1 && as[0].Addr == addr && as[0].Host == hostAddr(2) &&
			as[0].Sandbox == "web" && len(as[0].Aliases) == 1
	})
	if err := b.ReleaseAddress(ctx, n.ID, addr, "ep1"); err != nil {
		t.Fatal(err)
	}
	await("no endpoint", func(st cluster.State) bool { return len(st.Addresses[n.ID]) == 0 })
}

// The state the watch keeps from the store's changes is the state a read
// of the whole store gives, through churn: records put, replaced, deleted,
// ended with a lease, and replaced by records no host can use.
func TestWatchMatchesARead(t *testing.T) {
	s := newStore(t)
	a, b := s.join(t, 1, 0), s.join(t, 2, 0)
	mortal, link := s.mortal(t, 3)
	raw := s.client(t)
	ctx := context.Background()
	watched := watchLatest(t, a)
	n := overlay(t, a)
	n2, err := b.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net2", Name: "ov2"})
	if err != nil {
		t.Fatal(err)
	}
	var taken []netip.Addr
	for i := range 12 {
		host := []*cluster.Cluster{a, b, mortal}[i%3]
		addr, err := host.AllocateAddress(ctx, []string{n.ID, n2.ID}[i%2], cluster.Address{Owner: fmt.Sprintf("ep%d", i), Sandbox: fmt.Sprintf("s%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, addr)
	}
	if err := b.ReleaseAddress(ctx, n2.ID, taken[1], "ep1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep0", Addr: taken[0], Sandbox: "renamed", Aliases: []string{"web"}}); err != nil {
		t.Fatal(err)
	}
	for key, value := range map[string]string{
		"/ebpfnet/v1/addresses/net1/" + taken[2].String(): "{", // a usable record made unusable
		"/ebpfnet/v1/networks/junk":                       `{"id": 7}`,
	} {
		if _, err := raw.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.RemoveNetwork(ctx, "net2"); err == nil {
		t.Fatal("removed a network with endpoints")
	}
	link.cut() // the mortal host's lease ends: its host and addresses go
	deadline := time.Now().Add(10 * time.Second)
	for {
		read, err := a.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := watched()
		gone := !slices.ContainsFunc(read.Hosts, func(h cluster.Host) bool { return h.Advertise == hostAddr(3) })
		if gone && got.Revision == read.Revision {
			if !reflect.DeepEqual(got, read) {
				t.Fatalf("at revision %d the watch has\n%+v\na read has\n%+v", read.Revision, got, read)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s on, the watch is at revision %d, a read at %d (the mortal host gone: %v)", got.Revision, read.Revision, gone)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchLatest makes c watch the cluster until the test ends, and returns
// the latest state the watch passed on.
func watchLatest(t *testing.T, c *cluster.Cluster) func() cluster.State {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var mu sync.Mutex
	var watched cluster.State
	go c.Watch(ctx, func(st cluster.State) {
		mu.Lock()
		defer mu.Unlock()
		watched = st
	})
	return func() cluster.State {
		mu.Lock()
		defer mu.Unlock()
		return watched
	}
}

// A daemon that stops and comes back within the lease's TTL keeps its
// lease and its addresses: the others never see it go. Back later, it
// gets a new lease, and what the old one held is gone.
func TestRejoinKeepsLease(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := s.join(t, 1, 0)
	n := overlay(t, a)
	cfg := cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(2), Dial: s.dial, LeaseTTL: 3 * time.Second}
	b, err := cluster.Join(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep"}); err != nil {
		t.Fatal(err)
	}
	cfg.Lease = b.Lease()
	b.Close()
	if hosts, _ := a.Hosts(ctx); len(hosts) != 2 {
		t.Errorf("right after the host stopped: hosts %v, want both (it may come back)", hosts)
	}
	b, err = cluster.Join(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Lease() != cfg.Lease {
		t.Errorf("back within the TTL: lease %x, want the previous %x", b.Lease(), cfg.Lease)
	}
	time.Sleep(4 * time.Second) // past the TTL: the lease holds only if renewed
	if addrs, _ := a.Addresses(ctx, n.ID); len(addrs) != 1 {
		t.Errorf("after the TTL: addresses %v, want the one kept", addrs)
	}
	b.Close()
	time.Sleep(4 * time.Second)
	b, err = cluster.Join(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Lease() == cfg.Lease {
		t.Errorf("back after the TTL: still lease %x", b.Lease())
	}
	if addrs, _ := a.Addresses(ctx, n.ID); len(addrs) != 0 {
		t.Errorf("back after the TTL: addresses %v, want none", addrs)
	}
}

// Records under the prefix that something else wrote, which do not decode
// or name nothing usable, are left out: every host keeps reading the
// cluster, creating networks and taking addresses, and an address whose
// record is unreadable is not handed out again.
func TestMalformedRecords(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 0)
	ctx := context.Background()
	n := overlayOn(t, a, "10.5.0.0/24")
	other := s.client(t)
	for key, value := range map[string]string{
		"/ebpfnet/v1/hosts/junk":              "not json",
		"/ebpfnet/v1/networks/junk":           `{"id": 7}`,
		"/ebpfnet/v1/networks/empty":          `{}`,
		"/ebpfnet/v1/addresses/net1/10.5.0.2": "{",
		"/ebpfnet/v1/addresses/net1/junk":     `{"addr": "10.5.0.3"}`,
	} {
		if _, err := other.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	st, err := a.State(ctx)
	if err != nil {
		t.Fatalf("read the cluster: %v", err)
	}
	if len(st.Hosts) != 1 || len(st.Networks) != 1 || len(st.Addresses[n.ID]) != 0 {
		t.Errorf("state: %d hosts, %d networks, %v addresses; want this host, ov and none", len(st.Hosts), len(st.Networks), st.Addresses[n.ID])
	}
	if hosts, err := a.Hosts(ctx); err != nil || len(hosts) != 1 {
		t.Errorf("hosts: %v, %v", hosts, err)
	}
	if _, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net2", Name: "ov2"}); err != nil {
		t.Errorf("create a network: %v", err)
	}
	addr, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep1"})
	if err != nil || addr == netip.MustParseAddr("10.5.0.2") {
		t.Errorf("take an address: %s, %v; want one, not the one an unreadable record holds", addr, err)
	}
}

// An address taken again by its owner under a new lease of its host (the
// old one was given up while the store still held it) moves to the new
// lease: it stays when the old one ends.
func TestRetakeMovesToTheCurrentLease(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := s.join(t, 1, 0)
	n := overlay(t, a)
	old, link := s.mortal(t, 2)
	addr, err := old.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep", Sandbox: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// The same host with a lease of its own: its old registration gone,
	// as if a daemon that lost its state joined again, while the old
	// lease still holds the address.
	if _, err := s.client(t).Delete(ctx, "/ebpfnet/v1/hosts/"+hostAddr(2).String()); err != nil {
		t.Fatal(err)
	}
	renewed := s.join(t, 2, 0)
	if got, err := renewed.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep", Addr: addr, Sandbox: "web"}); err != nil || got != addr {
		t.Fatalf("taken again: %s, %v", got, err)
	}
	link.cut() // the old lease ends
	time.Sleep(4 * time.Second)
	addrs, err := a.Addresses(ctx, n.ID)
	if err != nil || len(addrs) != 1 || addrs[0].Addr != addr {
		t.Errorf("after the old lease ended: %v, %v; want %s still held", addrs, err, addr)
	}
}

// A host whose way to etcd comes back after an outage is back at once,
// renewing its lease within a renewal or two, not after the client's
// reconnection backoff, which grows through the outage: that wait eats
// into the lease, and turned an outage well within it into a lapse.
func TestBackPromptlyAfterAnOutage(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	link := &cuttable{dial: s.dial}
	c, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: link.Dial, LeaseTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := s.client(t)
	lease := clientv3.LeaseID(c.Lease())
	link.cut()
	time.Sleep(12 * time.Second) // long enough for a backoff of several seconds
	ttl, err := other.TimeToLive(ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	left := ttl.TTL
	link.uncut()
	healed := time.Now()
	for {
		ttl, err := other.TimeToLive(ctx, lease)
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL > left+2 { // renewed
			break
		}
		if time.Since(healed) > 10*time.Second {
			t.Fatalf("lease not renewed 10 s after the outage ended (%d s left)", ttl.TTL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("lease renewed %s after the outage ended", time.Since(healed).Round(10*time.Millisecond))
	if d := time.Since(healed); d > 2500*time.Millisecond {
		t.Errorf("the lease was renewed %s after the outage ended; want within 2.5 s", d.Round(100*time.Millisecond))
	}
}

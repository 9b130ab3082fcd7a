package cluster_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A network asked for with the ID of another network, under another name,
// is refused: it must not replace the other network's record (its name,
// subnet and VNI) while that network's addresses stay.
func TestCreateNetworkKeepsAnotherNetworksID(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 0)
	ctx := context.Background()
	first := overlayOn(t, a, "10.5.0.0/24")
	if _, err := a.AllocateAddress(ctx, first.ID, cluster.Address{Owner: "ep"}); err != nil {
		t.Fatal(err)
	}
	_, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net1", Name: "other"})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "net1") {
		t.Errorf("a second network with ID net1: %v, want a conflict naming the ID", err)
	}
	if n, err := a.Network(ctx, "net1"); err != nil || n.Name != "ov" || n.Subnet != first.Subnet || n.VNI != first.VNI {
		t.Errorf("network net1 is now %+v, %v; want ov as created", n, err)
	}
}

// A network kept by address records ebpfnet cannot read (another
// writer's) cannot be removed; the error names what holds it, not an
// empty list of hosts.
func TestRemoveNetworkHeldByUnreadableRecord(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 0)
	ctx := context.Background()
	n := overlayOn(t, a, "10.5.0.0/24")
	if _, err := s.client(t).Put(ctx, "/ebpfnet/v1/addresses/"+n.ID+"/10.5.0.2", "{"); err != nil {
		t.Fatal(err)
	}
	err := a.RemoveNetwork(ctx, "ov")
	if !errors.Is(err, errdefs.ErrConflict) || strings.Contains(err.Error(), "on :") || !strings.Contains(err.Error(), "10.5.0.2") {
		t.Errorf("remove a network an unreadable record holds: %v; want a conflict naming 10.5.0.2", err)
	}
}

// RemoveNetwork given a network's ID removes that network, never another
// one whose name happens to be that ID (the engine passes IDs).
func TestRemoveNetworkByIDPrefersTheID(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 0)
	ctx := context.Background()
	if _, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: "id-b", Name: "target"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: "id-a", Name: "id-b"}); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveNetwork(ctx, "id-b"); err != nil {
		t.Fatal(err)
	}
	nets, err := a.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].ID != "id-a" {
		t.Errorf("after removing network id-b by ID, left: %+v; want only id-a (named id-b)", nets)
	}
}

// Close returns at once while the store is out of reach: a daemon that
// stops during an outage is not held up by a registration in flight.
func TestCloseDuringOutageIsPrompt(t *testing.T) {
	s := newStore(t)
	c, err := cluster.Join(cluster.Config{Endpoints: []string{"127.0.0.1:2999"}, Advertise: hostAddr(1), Dial: s.dial})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // keepAlive is registering again
	t0 := time.Now()
	c.Close()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Close took %s with the store out of reach", d.Round(100*time.Millisecond))
	}
}

// A request honours its caller's context while the host registers: a
// caller that gives up after 300 ms is not held for a whole budget.
func TestAllocateAddressHonoursContextWhileRegistering(t *testing.T) {
	s := newStore(t)
	c, err := cluster.Join(cluster.Config{Endpoints: []string{"127.0.0.1:2999"}, Advertise: hostAddr(1), Dial: s.dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = c.AllocateAddress(ctx, "net1", cluster.Address{Owner: "ep"})
	if d := time.Since(t0); err == nil || d > 1500*time.Millisecond {
		t.Errorf("allocate with a 300 ms context and the store out of reach: %v after %s", err, d.Round(100*time.Millisecond))
	}
}

// An error for a store out of reach says how long the request waited: a
// caller's 300 ms, not the 5 s budget it never had.
func TestUnreachableSaysHowLongItWaited(t *testing.T) {
	s := newStore(t)
	a := s.join(t, 1, 0)
	n := overlay(t, a)
	s.etcd.Stop(0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep"})
	d := time.Since(t0)
	if err == nil || d > 2*time.Second || strings.Contains(err.Error(), "5s") {
		t.Errorf("allocate with a 300 ms context and etcd down: %q after %s; want the wait it had said", err, d.Round(100*time.Millisecond))
	}
}

// A second host that gives the advertise address another host has is
// refused, naming it: the two would take each other's endpoints for their
// own and give them back. The first keeps its registration.
func TestAdvertiseAddressTaken(t *testing.T) {
	s := newStore(t)
	first := s.join(t, 1, 0)
	_, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: s.dial})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), hostAddr(1).String()) {
		t.Fatalf("a second host advertising %s: %v; want a conflict naming it", hostAddr(1), err)
	}
	ctx := context.Background()
	st, err := first.Status(ctx)
	if err != nil || len(st.Hosts) != 1 {
		t.Fatalf("status of the first host: %+v, %v", st, err)
	}
	ttl, err := s.client(t).TimeToLive(ctx, clientv3.LeaseID(first.Lease()), clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 {
		t.Errorf("the first host's lease holds %q (%v); want its host record still", ttl.Keys, err)
	}
}

// A store that speaks TLS and asks for a client certificate is joined
// with Docker's --cluster-store-opt files. A host that speaks plain text
// to it is refused at once, saying the store speaks TLS, not left waiting
// for a store it takes for out of reach (TestTLSMisconfigurationIsNamed:
// the wrong CA, no client certificate).
func TestSecureStore(t *testing.T) {
	s := newStoreWith(t, testbed.StartSecureEtcd)
	o, err := cluster.ParseStoreOptions(s.etcd.StoreOptions())
	if err != nil {
		t.Fatal(err)
	}
	h, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: s.dial, TLS: o.TLS})
	if err != nil {
		t.Fatalf("join with the CA and a client certificate: %v", err)
	}
	defer h.Close()
	if _, err := h.CreateNetwork(context.Background(), cluster.NetworkSpec{ID: "net1", Name: "ov"}); err != nil {
		t.Errorf("create a network over TLS: %v", err)
	}
	_, err = cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(2), Dial: s.dial})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "speaks TLS") || !strings.Contains(err.Error(), "kv.cacertfile") {
		t.Errorf("join in plain text: %v; want it refused, naming kv.cacertfile", err)
	}
}

// Options that cannot work are refused, naming what is wrong.
func TestParseStoreOptions(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for opt, want := range map[string]string{
		"kv.cacertfile":                    `"kv.cacertfile"`,
		"kv.cacertfile=":                   `"kv.cacertfile="`,
		"kv.path=/x":                       `"kv.path"`,
		"discovery.ttl=ten":                `discovery.ttl "ten"`,
		"discovery.ttl=0":                  `discovery.ttl "0"`,
		"discovery.heartbeat=-1":           `discovery.heartbeat "-1"`,
		"discovery.ttl=99999999999":        `discovery.ttl "99999999999"`,
		"discovery.heartbeat=3074457346":   `discovery.heartbeat "3074457346"`,
		"kv.cacertfile=" + dir + "/absent": dir + "/absent",
		"kv.cacertfile=" + notPEM:          notPEM,
		"kv.certfile=" + notPEM:            "kv.keyfile",
	} {
		if _, err := cluster.ParseStoreOptions([]string{opt}); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("option %q: %v; want it refused naming %s", opt, err, want)
		}
	}
	if _, err := cluster.ParseStoreOptions([]string{"kv.certfile=" + notPEM, "kv.keyfile=" + notPEM}); err == nil || !strings.Contains(err.Error(), notPEM) {
		t.Errorf("a key pair that is not one: %v", err)
	}
	if o, err := cluster.ParseStoreOptions(nil); o != (cluster.StoreOptions{}) || err != nil {
		t.Errorf("no options: %+v, %v; want plain text and the default lease", o, err)
	}
	if _, err := cluster.ParseStoreOptions([]string{"discovery.ttl=10", "discovery.heartbeat=10"}); !errors.Is(err, errdefs.ErrInvalid) ||
		!strings.Contains(err.Error(), "discovery.heartbeat 10 s") || !strings.Contains(err.Error(), "discovery.ttl 10 s") {
		t.Errorf("a heartbeat as long as the TTL: %v; want it refused naming both", err)
	}
	// Docker's lease options: a TTL alone is renewed every tenth of it, a
	// heartbeat alone lasts three heartbeats, as in Docker.
	for opts, want := range map[string]cluster.StoreOptions{
		"discovery.ttl=30":                       {LeaseTTL: 30 * time.Second, Heartbeat: 3 * time.Second},
		"discovery.heartbeat=4":                  {LeaseTTL: 12 * time.Second, Heartbeat: 4 * time.Second},
		"discovery.ttl=20,discovery.heartbeat=5": {LeaseTTL: 20 * time.Second, Heartbeat: 5 * time.Second},
	} {
		if o, err := cluster.ParseStoreOptions(strings.Split(opts, ",")); err != nil || o != want {
			t.Errorf("%s: %+v, %v; want %+v", opts, o, err, want)
		}
	}
}

// A host renews its lease at the heartbeat it is given: a TTL of 3 s
// renewed every 2 s runs down to 1 s left, one renewed every tenth stays
// nearly full.
func TestHeartbeat(t *testing.T) {
	s := newStore(t)
	other := s.client(t)
	for _, c := range []struct {
		heartbeat time.Duration
		low, high int64 // the fewest seconds left seen must be within
	}{{2 * time.Second, 0, 1}, {0, 2, 3}} {
		h, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(int(c.heartbeat.Seconds()) + 1), Dial: s.dial,
			LeaseTTL: 3 * time.Second, Heartbeat: c.heartbeat})
		if err != nil {
			t.Fatal(err)
		}
		least := leastLeft(t, other, h)
		h.Close()
		if least < c.low || least > c.high {
			t.Errorf("heartbeat %s: the 3 s lease ran down to %d s left; want %d to %d", c.heartbeat, least, c.low, c.high)
		}
	}
}

// An address given back, or lost with its host's lease, is not handed out
// again until the network's addresses wrap around, as Docker's IPAM
// does: a host whose lease lapsed while etcd was out of its reach finds
// its sandboxes' addresses still free when it takes them again, instead of
// another host's new sandbox holding one of them as well.
func TestAddressesNotReusedAtOnce(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := s.join(t, 1, 0)
	n := overlayOn(t, a, "10.9.0.0/29")
	lapsing, link := s.mortal(t, 2)
	var theirs []netip.Addr
	for _, owner := range []string{"ep1", "ep2"} {
		addr, err := lapsing.AllocateAddress(ctx, n.ID, cluster.Address{Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		theirs = append(theirs, addr)
	}
	link.cut() // its lease lapses: its addresses go
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if as, err := a.Addresses(ctx, n.ID); err == nil && len(as) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("addresses of the lapsed lease: %v, %v", as, err)
		}
	}
	// 10.9.0.0/29: the gateway .1, hosts .2 to .6. The next ones come
	// after those handed out, then wrap.
	var got []string
	for _, owner := range []string{"a1", "a2", "a3", "a4", "a5"} {
		addr, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: owner})
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, addr.String())
	}
	if want := []string{"10.9.0.4", "10.9.0.5", "10.9.0.6", "10.9.0.2", "10.9.0.3"}; !slices.Equal(got, want) {
		t.Errorf("addresses handed out after %v lapsed: %v, want %v", theirs, got, want)
	}
	if _, err := a.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "a6"}); err == nil || !strings.Contains(err.Error(), "10.9.0.0/29") {
		t.Errorf("a full network: %v, want its subnet named", err)
	}
}

// A taken address whose record ebpfnet cannot read (another writer's)
// says so, instead of naming "endpoint 's, on host invalid IP".
func TestTakenAddressOfAnUnreadableRecordIsNamed(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	h := s.join(t, 1, 10*time.Second)
	n := overlayOn(t, h, "10.9.0.0/24")
	addr := netip.MustParseAddr("10.9.0.7")
	if _, err := s.client(t).Put(ctx, "/ebpfnet/v1/addresses/"+n.ID+"/"+addr.String(), "not json"); err != nil {
		t.Fatal(err)
	}
	_, err := h.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep1", Addr: addr, Sandbox: "web"})
	if err == nil {
		t.Fatal("an address held by an unreadable record was taken")
	}
	if strings.Contains(err.Error(), "invalid IP") || strings.Contains(err.Error(), "endpoint 's") {
		t.Errorf("the holder of an unreadable record is named: %q", err)
	}
}

// A daemon restarted with a longer discovery.heartbeat than the TTL of
// the lease it keeps (Config.Lease: its records are not to go) renews
// that lease often enough for its TTL: it lapsed, and the host's records
// went, the very thing keeping the lease is for.
func TestRestartWithLongerHeartbeatKeepsTheRecords(t *testing.T) {
	s := newStore(t)
	first, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: s.dial, LeaseTTL: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lease := first.Lease()
	first.Close()
	o, err := cluster.ParseStoreOptions([]string{"discovery.ttl=30", "discovery.heartbeat=6"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: s.dial, Lease: lease,
		LeaseTTL: o.LeaseTTL, Heartbeat: o.Heartbeat})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	other := s.client(t)
	if ttl, err := other.TimeToLive(context.Background(), clientv3.LeaseID(again.Lease())); err == nil {
		t.Logf("kept lease %x: granted TTL %d s (discovery.ttl 30 s, heartbeat 6 s)", again.Lease(), ttl.GrantedTTL)
	}
	key := "/ebpfnet/v1/hosts/" + hostAddr(1).String()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		resp, err := other.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatalf("the restarted host's record went %s into the restart: its kept lease lapsed", 10*time.Second-time.Until(end).Round(100*time.Millisecond))
		}
	}
}

package store

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebpfnet/ebpfnet/control/ipam"
)

func endpointOn(network, addr, mac, hostSide string) Endpoint {
	return Endpoint{ID: "ep-" + addr, NetworkID: network, Addr: netip.MustParseAddr(addr), MAC: mac, HostSide: hostSide}
}

// The index answers what a scan of every sandbox would, and follows each
// put and delete: the keys a sandbox gave up are free again.
func TestSandboxIndexFollowsPutsAndDeletes(t *testing.T) {
	s := openStore(t)
	web := Sandbox{ID: "aa11", Name: "web", Endpoints: []Endpoint{endpointOn("n1", "10.0.0.2", "02:00:0a:00:00:02", "veth-web")}}
	web.Endpoints[0].Addr6 = netip.MustParseAddr("fd00::2")
	db := Sandbox{ID: "aa22", Name: "db", Endpoints: []Endpoint{endpointOn("n1", "10.0.0.3", "02:00:0a:00:00:03", ""), endpointOn("n2", "10.1.0.3", "02:00:0a:01:00:03", "")}}
	must(t, s.Update(func(tx *Tx) error { return errors.Join(tx.PutSandbox(web), tx.PutSandbox(db)) }))

	s.View(func(tx *Tx) error {
		for _, c := range []struct {
			got  func() (string, bool)
			want string
		}{
			{func() (string, bool) { return tx.AddressHolder("n1", netip.MustParseAddr("10.0.0.2")) }, "web"},
			{func() (string, bool) { return tx.AddressHolder("n1", netip.MustParseAddr("fd00::2")) }, "web"},
			{func() (string, bool) { return tx.AddressHolder("n2", netip.MustParseAddr("10.1.0.3")) }, "db"},
			{func() (string, bool) { return tx.AddressHolder("n2", netip.MustParseAddr("10.0.0.3")) }, ""}, // another network's
			{func() (string, bool) { return tx.MACHolder("n1", "02:00:0A:00:00:03") }, "db"},
			{func() (string, bool) { return tx.HostSideHolder("veth-web") }, "web"},
		} {
			if got, ok := c.got(); got != c.want || ok != (c.want != "") {
				t.Errorf("holder = %q, %v; want %q", got, ok, c.want)
			}
		}
		if got := tx.NetworkUsers("n1"); !slices.Equal(got, []string{"db", "web"}) {
			t.Errorf("NetworkUsers(n1) = %v", got)
		}
		for ref, want := range map[string]string{"web": "web", "aa11": "web", "aa2": "db"} {
			if sb, err := tx.Sandbox(ref); err != nil || sb.Name != want {
				t.Errorf("Sandbox(%q) = %s, %v; want %s", ref, sb.Name, err, want)
			}
		}
		if _, err := tx.Sandbox("aa"); err == nil || !strings.Contains(err.Error(), "matches 2 IDs") {
			t.Errorf("ambiguous prefix: %v", err)
		}
		if _, err := tx.Sandbox("bb"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing: %v", err)
		}
		return nil
	})

	// web moves to another address and leaves n1's MAC; db goes.
	web.Endpoints = []Endpoint{endpointOn("n2", "10.1.0.2", "02:00:0a:01:00:02", "veth-web")}
	must(t, s.Update(func(tx *Tx) error { return errors.Join(tx.PutSandbox(web), tx.DeleteSandbox("db")) }))
	s.View(func(tx *Tx) error {
		for _, a := range []string{"10.0.0.2", "fd00::2", "10.0.0.3"} {
			if h, ok := tx.AddressHolder("n1", netip.MustParseAddr(a)); ok {
				t.Errorf("%s still held by %s", a, h)
			}
		}
		if h, ok := tx.AddressHolder("n2", netip.MustParseAddr("10.1.0.3")); ok {
			t.Errorf("removed db's address still held by %s", h)
		}
		if h, _ := tx.AddressHolder("n2", netip.MustParseAddr("10.1.0.2")); h != "web" {
			t.Errorf("web's new address held by %q", h)
		}
		if h, _ := tx.HostSideHolder("veth-web"); h != "web" {
			t.Errorf("web's host side held by %q", h)
		}
		if u := tx.NetworkUsers("n1"); len(u) != 0 {
			t.Errorf("n1 still has users %v", u)
		}
		if _, err := tx.Sandbox("aa22"); !errors.Is(err, ErrNotFound) {
			t.Errorf("removed db found by ID: %v", err)
		}
		return nil
	})
}

// A state file written without the index (before it, or by a version that
// did not keep it up to date) gets it built at open.
func TestOpenBuildsTheSandboxIndex(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	web := Sandbox{ID: "aa11", Name: "web", Endpoints: []Endpoint{endpointOn("n1", "10.0.0.2", "02:00:0a:00:00:02", "")}}
	must(t, s.Update(func(tx *Tx) error { return tx.PutSandbox(web) }))
	// As an older version leaves it: the sandbox there, no index, and a
	// record written behind the index's back.
	must(t, s.db.Update(func(tx *bolt.Tx) error {
		stale := Sandbox{ID: "bb22", Name: "db", Endpoints: []Endpoint{endpointOn("n1", "10.0.0.3", "02:00:0a:00:00:03", "")}}
		if err := put(tx.Bucket(bucketSandboxes), stale.Name, stale); err != nil {
			return err
		}
		return tx.DeleteBucket(bucketSandboxIndex)
	}))
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *Tx) error {
		if u := tx.NetworkUsers("n1"); !slices.Equal(u, []string{"db", "web"}) {
			t.Errorf("NetworkUsers(n1) = %v", u)
		}
		if h, _ := tx.AddressHolder("n1", netip.MustParseAddr("10.0.0.3")); h != "db" {
			t.Errorf("10.0.0.3 held by %q", h)
		}
		if sb, err := tx.Sandbox("bb22"); err != nil || sb.Name != "db" {
			t.Errorf("Sandbox(bb22) = %s, %v", sb.Name, err)
		}
		return nil
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Pools keep their allocated addresses packed; a record written with them
// as JSON strings, as before, reads the same, and is packed when written
// again.
func TestPoolsKeepTheirAddresses(t *testing.T) {
	s := openStore(t)
	v4 := ipam.Pool{ID: "p4", Subnet: netip.MustParsePrefix("10.1.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.1"),
		Allocated: []netip.Addr{netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.1.3.4")}, Last: netip.MustParseAddr("10.1.3.4")}
	v6 := ipam.Pool{ID: "p6", Subnet: netip.MustParsePrefix("fd00:1::/64"), Gateway: netip.MustParseAddr("fd00:1::1"),
		Allocated: []netip.Addr{netip.MustParseAddr("fd00:1::2")}}
	must(t, s.Update(func(tx *Tx) error { return errors.Join(tx.PutPool(v4), tx.PutPool(v6)) }))
	// As an earlier version wrote one.
	old := []byte(`{"id":"old","subnet":"10.2.0.0/24","gateway":"10.2.0.1","allocated":["10.2.0.5","10.2.0.9"],"last":"10.2.0.9"}`)
	must(t, s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPools).Put([]byte("old"), old) }))
	s.View(func(tx *Tx) error {
		for _, want := range []ipam.Pool{v4, v6} {
			if got, err := tx.Pool(want.ID); err != nil || !slices.Equal(got.Allocated, want.Allocated) || got.Last != want.Last || got.Subnet != want.Subnet {
				t.Errorf("pool %s = %+v, %v; want %+v", want.ID, got, err, want)
			}
		}
		if got, err := tx.Pool("old"); err != nil || len(got.Allocated) != 2 || got.Allocated[1] != netip.MustParseAddr("10.2.0.9") {
			t.Errorf("old pool = %+v, %v", got, err)
		}
		return nil
	})
	must(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPools).Put([]byte("bad"), []byte(`{"id":"bad","subnet":"10.3.0.0/24","allocatedPacked":"CgMA"}`))
	}))
	s.View(func(tx *Tx) error {
		if _, err := tx.Pool("bad"); err == nil || !strings.Contains(err.Error(), "bad") {
			t.Errorf("a pool of 3 bytes of addresses: %v, want an error naming it", err)
		}
		return nil
	})
}

package store

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebpfnet/ebpfnet/control/ipam"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

func TestRoundTripAndLookup(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	a, _ := pool.Allocate()
	pool.ID = "pool1"
	err = s.Update(func(tx *Tx) error {
		if err := tx.PutPool(pool); err != nil {
			return err
		}
		if err := tx.PutNetwork(Network{ID: "abc123", Name: "appnet", Driver: DriverBridge, PoolID: pool.ID}); err != nil {
			return err
		}
		return tx.PutNetwork(Network{ID: "abd999", Name: "other", Driver: DriverBridge})
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopened, the state is all there.
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *Tx) error {
		for _, ref := range []string{"appnet", "abc123", "abc"} {
			n, err := tx.Network(ref)
			if err != nil || n.Name != "appnet" || !n.Pool.InUse(a) {
				t.Errorf("Network(%q) = %+v, %v", ref, n, err)
			}
		}
		if _, err := tx.Network("ab"); err == nil || !strings.Contains(err.Error(), "matches 2 IDs") {
			t.Errorf("ambiguous prefix: %v", err)
		}
		if _, err := tx.Network("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing: %v", err)
		}
		return nil
	})
}

// A network stored before pools had IDs holds its pool; opening the state
// moves the pool to a bucket of its own, under the network's ID.
func TestOpenMovesPoolsOutOfNetworks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"id":"abc123","name":"appnet","driver":"bridge","icc":true,"masquerade":true,` +
		`"pool":{"subnet":"172.19.0.0/16","gateway":"172.19.0.1","allocated":["172.19.0.2"],"last":"172.19.0.2"}}`
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNetworks).Put([]byte("appnet"), []byte(old))
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := netip.MustParseAddr("172.19.0.2")
	s.View(func(tx *Tx) error {
		n, err := tx.Network("appnet")
		if err != nil || n.PoolID != "abc123" || n.Pool.ID != "abc123" || !n.Pool.InUse(a) ||
			n.Pool.Gateway != netip.MustParseAddr("172.19.0.1") || n.Pool.Last != a || !n.ICC {
			t.Errorf("migrated network: %+v, %v", n, err)
		}
		if raw := string(tx.tx.Bucket(bucketNetworks).Get([]byte("appnet"))); strings.Contains(raw, `"pool":`) {
			t.Errorf("network record still holds its pool: %s", raw)
		}
		return nil
	})
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	s := openStore(t)
	boom := errors.New("boom")
	err := s.Update(func(tx *Tx) error {
		tx.PutSandbox(Sandbox{ID: "1", Name: "web"})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	s.View(func(tx *Tx) error {
		if all, _ := tx.Sandboxes(); len(all) != 0 {
			t.Errorf("rolled-back update left %v", all)
		}
		return nil
	})
}

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "another ebpfnet daemon") {
		t.Fatalf("second open: %v", err)
	}
}

func TestNetworkIndexNeverRepeats(t *testing.T) {
	s, _ := Open(t.TempDir())
	defer s.Close()
	seen := map[uint32]bool{}
	for range 3 {
		s.Update(func(tx *Tx) error {
			i, err := tx.NextNetworkIndex()
			if err != nil || i == 0 || seen[i] {
				t.Fatalf("index %d, %v", i, err)
			}
			seen[i] = true
			return nil
		})
	}
}

func TestPublicationsLiveApartFromTheirSandbox(t *testing.T) {
	s := openStore(t)
	any80 := Publication{HostPort: 80, Proto: "tcp", Port: 8080, EndpointID: "e1"}
	udp80 := Publication{HostPort: 80, Proto: "udp", Port: 8080, EndpointID: "e1"}
	one80 := Publication{HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 80, Proto: "tcp", Port: 9090, EndpointID: "e1"}
	other := Publication{HostPort: 81, Proto: "tcp", Port: 81, EndpointID: "e2"}
	err := s.Update(func(tx *Tx) error {
		for _, sb := range []string{"web", "db"} {
			if err := tx.PutSandbox(Sandbox{ID: sb, Name: sb}); err != nil {
				return err
			}
		}
		if err := tx.PutPublications("web", any80, udp80, one80); err != nil {
			return err
		}
		return tx.PutPublications("db", other)
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, want map[string][]Publication) {
		t.Helper()
		s.View(func(tx *Tx) error {
			all, err := tx.AllPublications()
			if err != nil {
				t.Fatal(err)
			}
			for sb, pubs := range want {
				got, err := tx.Publications(sb)
				if err != nil || !sameSet(got, pubs) || !sameSet(all[sb], pubs) {
					t.Errorf("%s: %s has %v (all: %v), want %v", what, sb, got, all[sb], pubs)
				}
			}
			return nil
		})
	}
	// Same port, different protocol or host address: three publications.
	check("put", map[string][]Publication{"web": {any80, udp80, one80}, "db": {other}})
	s.Update(func(tx *Tx) error { return tx.DeletePublications("web", udp80) })
	check("delete one", map[string][]Publication{"web": {any80, one80}, "db": {other}})
	s.Update(func(tx *Tx) error { return tx.DeleteSandbox("web") })
	check("delete sandbox", map[string][]Publication{"web": nil, "db": {other}})
}

// State written when publications were part of the sandbox record opens
// with them moved to their bucket.
func TestOpenMovesPublicationsOutOfSandboxRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"id":"1","name":"web","mode":"networks","endpoints":[{"id":"e1","networkId":"n1"}],` +
		`"publications":[{"hostPort":80,"proto":"tcp","port":8080,"networkId":"n1"}]}`
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSandboxes).Put([]byte("web"), []byte(old)) })
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *Tx) error {
		pubs, err := tx.Publications("web")
		want := []Publication{{HostPort: 80, Proto: "tcp", Port: 8080, EndpointID: "e1"}}
		if err != nil || !sameSet(pubs, want) {
			t.Errorf("moved publications %v, %v; want %v", pubs, err, want)
		}
		if raw := tx.tx.Bucket(bucketSandboxes).Get([]byte("web")); strings.Contains(string(raw), "publications") {
			t.Errorf("the record keeps them: %s", raw)
		}
		if sb, err := tx.Sandbox("web"); err != nil || sb.Mode != ModeNetworks {
			t.Errorf("record after the move: %+v, %v", sb, err)
		}
		return nil
	})
}

// A publication stored when publications named their network, not their
// endpoint, opens naming its sandbox's endpoint on that network.
func TestOpenLinksPublicationsToTheirEndpoint(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	web := Sandbox{ID: "1", Name: "web", Mode: ModeNetworks, Endpoints: []Endpoint{
		{ID: "e1", NetworkID: "n1"}, {ID: "e2", NetworkID: "n2"},
	}}
	tcp80 := Publication{HostPort: 80, Proto: "tcp", Port: 8080}
	udp53 := Publication{HostPort: 53, Proto: "udp", Port: 53}
	linked := Publication{HostPort: 443, Proto: "tcp", Port: 8443, EndpointID: "e1"}
	old := []struct {
		p   Publication
		raw string
	}{
		{tcp80, `{"hostPort":80,"proto":"tcp","port":8080,"networkId":"n2"}`},
		{udp53, `{"hostPort":53,"proto":"udp","port":53,"networkId":"gone"}`}, // no endpoint there
	}
	err = s.Update(func(tx *Tx) error {
		if err := tx.PutSandbox(web); err != nil {
			return err
		}
		if err := tx.PutPublications(web.Name, linked); err != nil {
			return err
		}
		b := tx.tx.Bucket(bucketPublications).Bucket([]byte(web.Name))
		for _, o := range old {
			if err := b.Put(publicationKey(o.p), []byte(o.raw)); err != nil {
				return err
			}
		}
		return nil
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *Tx) error {
		pubs, err := tx.Publications(web.Name)
		tcp80.EndpointID = "e2"
		want := []Publication{tcp80, udp53, linked}
		if err != nil || !sameSet(pubs, want) {
			t.Errorf("linked publications %v, %v; want %v", pubs, err, want)
		}
		b := tx.tx.Bucket(bucketPublications).Bucket([]byte(web.Name))
		if raw := string(b.Get(publicationKey(tcp80))); strings.Contains(raw, "networkId") {
			t.Errorf("the linked record keeps its network: %s", raw)
		}
		if raw := string(b.Get(publicationKey(udp53))); raw != old[1].raw {
			t.Errorf("a record with no endpoint on its network became %s, want it kept as %s", raw, old[1].raw)
		}
		return nil
	})
}

func sameSet(a, b []Publication) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(p Publication) bool {
		return !slices.ContainsFunc(b, func(q Publication) bool { return reflect.DeepEqual(p, q) })
	})
}

// A dual-stack network is read with both its pools, and the host ID the
// default IPv6 pool derives from is made once and kept.
func TestDualStackNetworkAndHostID(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p4, _ := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	p6, _ := ipam.NewPool(netip.MustParsePrefix("fd12:3456:789a::/64"), netip.Prefix{}, netip.Addr{})
	p4.ID, p6.ID = "p4", "p6"
	var id string
	err = s.Update(func(tx *Tx) (err error) {
		if id, err = tx.HostID(); err != nil {
			return err
		}
		return errors.Join(tx.PutPool(p4), tx.PutPool(p6),
			tx.PutNetwork(Network{ID: "n1", Name: "dual", Driver: DriverBridge, PoolID: "p4", EnableIPv6: true, PoolID6: "p6"}))
	})
	if err != nil || len(id) != 64 {
		t.Fatalf("host ID %q: %v", id, err)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(func(tx *Tx) error {
		n, err := tx.Network("dual")
		if err != nil {
			return err
		}
		if n.Pool.Subnet != p4.Subnet || n.Pool6.Subnet != p6.Subnet || n.Pool6.Gateway != netip.MustParseAddr("fd12:3456:789a::1") {
			t.Errorf("pools read with the network: %+v / %+v", n.Pool, n.Pool6)
		}
		again, err := tx.HostID()
		if again != id {
			t.Errorf("host ID changed across opens: %q, then %q", id, again)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A publication record as state files hold it, its protocol a string in
// JSON and the last bytes of its key, opens as the typed publication and
// is written back byte for byte as it was.
func TestPublicationRecordsAsStored(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	stored := []struct {
		key, value string
		want       Publication
	}{
		{"\x00\x00\x00\x00\x1f\x90tcp", `{"hostPort":8080,"proto":"tcp","port":80,"endpointId":"e1"}`,
			Publication{HostPort: 8080, Proto: ports.TCP, Port: 80, EndpointID: "e1"}},
		{"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x35udp", `{"hostIp":"::1","hostPort":53,"proto":"udp","port":53,"endpointId":"e1"}`,
			Publication{HostIP: netip.IPv6Loopback(), HostPort: 53, Proto: ports.UDP, Port: 53, EndpointID: "e1"}},
	}
	err = s.Update(func(tx *Tx) error {
		if err := tx.PutSandbox(Sandbox{ID: "1", Name: "web", Mode: ModeNetworks, Endpoints: []Endpoint{{ID: "e1", NetworkID: "n1"}}}); err != nil {
			return err
		}
		b, err := tx.tx.Bucket(bucketPublications).CreateBucket([]byte("web"))
		for _, r := range stored {
			if err == nil {
				err = b.Put([]byte(r.key), []byte(r.value))
			}
		}
		return err
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(func(tx *Tx) error {
		pubs, err := tx.Publications("web")
		if err != nil || !sameSet(pubs, []Publication{stored[0].want, stored[1].want}) {
			t.Fatalf("publications %+v, %v; want %+v and %+v", pubs, err, stored[0].want, stored[1].want)
		}
		for _, r := range stored {
			if err := tx.PutPublications("web", r.want); err != nil {
				return err
			}
			if key := string(publicationKey(r.want)); key != r.key {
				t.Errorf("%+v: key %q, want %q", r.want, key, r.key)
			}
		}
		b := tx.tx.Bucket(bucketPublications).Bucket([]byte("web"))
		n := 0
		b.ForEach(func(_, _ []byte) error { n++; return nil })
		if n != len(stored) {
			t.Errorf("%d records after writing them back, want %d", n, len(stored))
		}
		for _, r := range stored {
			if got := string(b.Get([]byte(r.key))); got != r.value {
				t.Errorf("written back as %s, want %s", got, r.value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A tracker collects what every transaction committed while it ran
// changed, publications included, and nothing before or after it or of
// a failed transaction.
func TestTrackerCollectsCommittedChanges(t *testing.T) {
	s := openStore(t)
	put := func(name string) error {
		return s.Update(func(tx *Tx) error { return tx.PutSandbox(Sandbox{ID: name, Name: name}) })
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	tracker := s.Track()
	if err := put("web"); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error {
		return tx.PutPublications("before", Publication{HostPort: 80, Proto: "tcp", Port: 80, EndpointID: "e1"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { tx.PutSandbox(Sandbox{ID: "failed", Name: "failed"}); return ErrNotFound }); err == nil {
		t.Fatal("a failing transaction committed")
	}
	got := tracker.Stop()
	if err := put("after"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Sandboxes, []string{"web"}) || !slices.Equal(got.Publications, []string{"before"}) || len(got.Networks) != 0 {
		t.Errorf("the tracker saw %+v, want sandbox web and the publications of before", got)
	}
}

// openStore opens a store in a directory of t's own, closed when t ends.
func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A state written by a newer ebpfnet, or a damaged one, stops the start
// in one line naming the file and what to do.
func TestOpenRefusesNewerAndDamagedStates(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyFormat, binary.BigEndian.AppendUint64(nil, Format+1))
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.db")
	_, err = Open(dir)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "newer ebpfnet") {
		t.Errorf("a state of format %d: %v, want one line naming %s as a newer version's", Format+1, err, path)
	}

	damaged := t.TempDir()
	path = filepath.Join(damaged, "state.db")
	if err := os.WriteFile(path, []byte("not a bbolt file, or the first page of one cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(damaged)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it away") {
		t.Errorf("a damaged state: %v, want one line naming %s and what to do", err, path)
	}
}

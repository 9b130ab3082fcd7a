package store

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/ipam"
)

func TestRoundTripAndLookup(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.NewPool(netip.MustParsePrefix("172.19.0.0/16"), netip.Prefix{}, netip.Addr{})
	a, _ := pool.Allocate()
	err = s.Update(func(tx *Tx) error {
		if err := tx.PutNetwork(Network{ID: "abc123", Name: "appnet", Driver: DriverBridge, Pool: pool}); err != nil {
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

func TestFailedUpdateChangesNothing(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	boom := errors.New("boom")
	err = s.Update(func(tx *Tx) error {
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

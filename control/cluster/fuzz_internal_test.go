package cluster

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// Records under ebpfnet's prefix in etcd may have been written by anything
// with access to the store: every one decodes into a record that passes
// its check, or is left out, and none stops the others being read.
func FuzzRecords(f *testing.F) {
	for _, c := range []struct{ key, value string }{
		{"addresses/n1/10.0.0.5", `{"owner":"e1","addr":"10.0.0.5","host":"192.0.2.1","sandbox":"web","aliases":["db"]}`},
		{"networks/n1", `{"id":"n1","name":"ov","subnet":"10.0.0.0/24","gateway":"10.0.0.1","vni":4096}`},
		{"hosts/192.0.2.1", `{"advertise":"192.0.2.1","hostname":"h1"}`},
		{"addresses/n1/nonsense", `{"addr":"10.0.0.300"}`}, {"addresses/x", `null`}, {"addresses//", `[]`},
	} {
		f.Add(c.key, []byte(c.value))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	good := &mvccKV{Key: []byte(prefix + "addresses/n1/10.0.0.9"), Value: []byte(`{"owner":"e9","addr":"10.0.0.9","host":"192.0.2.9"}`)}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		kvs := []*mvccKV{{Key: []byte(prefix + key), Value: value}, good}
		for _, h := range decodeAll[Host](log, kvs) {
			if h.check() != nil {
				t.Errorf("host %+v decoded though of no use", h)
			}
		}
		for _, n := range decodeAll[Network](log, kvs) {
			if n.check() != nil {
				t.Errorf("network %+v decoded though of no use", n)
			}
		}
		if !strings.HasPrefix(key, "addresses/") {
			return
		}
		held := heldAddresses(log, kvs)
		found := false
		for _, a := range held {
			if a.Owner == "e9" {
				found = true
			}
		}
		if !found {
			t.Errorf("a record at %q hid the address of another: %+v", key, held)
		}
	})
}

// The daemon's --cluster-store and --cluster-store-opt values are read or
// refused in one line naming what is wrong.
func FuzzStoreFlags(f *testing.F) {
	for _, s := range []string{"etcd://10.0.0.1:2379,10.0.0.2:2379", "etcd://h:1", "consul://h:1", "etcd://", "kv.cacertfile=/x",
		"discovery.ttl=15", "discovery.heartbeat=0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseStore(s); err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("--cluster-store %q: %q", s, err)
		}
		if _, err := ParseStoreOptions([]string{s}); err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("--cluster-store-opt %q: %q", s, err)
		}
	})
}

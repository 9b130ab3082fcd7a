package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A TLS setting the store refuses (a CA that did not sign its
// certificate, or no client certificate where it asks for one) is said
// as such, by Join or by the requests that follow: not taken for a store
// out of reach, which the host would wait for forever in silence.
func TestTLSMisconfigurationIsNamed(t *testing.T) {
	s := newStoreWith(t, testbed.StartSecureEtcd)
	opts := s.etcd.StoreOptions() // kv.cacertfile, kv.certfile, kv.keyfile
	for _, c := range []struct {
		what string
		opts []string
	}{
		{"a CA that did not sign the store's certificate", []string{"kv.cacertfile=" + s.etcd.TLS.ClientCert, opts[1], opts[2]}},
		{"no client certificate", opts[:1]},
	} {
		o, err := cluster.ParseStoreOptions(c.opts)
		if err != nil {
			t.Fatal(err)
		}
		h, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: s.dial, TLS: o.TLS})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = h.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net1", Name: "ov"})
			cancel()
			h.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") {
			t.Errorf("%s: %v; want the TLS failure said", c.what, err)
		}
	}
}

package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
)

// A registration whose answer was lost (the host record written, the
// connection gone before the answer came: an election, a blip) is made
// again under the same lease, not refused for a whole TTL by the record
// this host just wrote, as if another host had its advertise address.
func TestRegisterAgainAfterALostAnswer(t *testing.T) {
	s := newStore(t)
	link := &lossy{dial: s.dial, trigger: []byte("/ebpfnet/v1/hosts/" + hostAddr(1).String())}
	c, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: link.Dial, LeaseTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !link.fired.Load() {
		t.Fatal("the host record was never written")
	}
	n := overlay(t, s.join(t, 2, 0))
	// The store answers again at once: 4 s is plenty to register.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		if _, last = c.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep"}); last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("4 s after a lost answer to its registration, the host cannot take an address: %v", last)
}

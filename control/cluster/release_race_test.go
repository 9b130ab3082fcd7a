package cluster_test

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ebpfnet/ebpfnet/control/cluster"
)

// hooked is a way to etcd that runs hook before the nth request, once
// armed, that carries trigger.
type hooked struct {
	dial    func(ctx context.Context, address string) (net.Conn, error)
	trigger []byte
	nth     int32
	armed   atomic.Bool
	seen    atomic.Int32
	hook    func()
}

func (h *hooked) Dial(ctx context.Context, address string) (net.Conn, error) {
	c, err := h.dial(ctx, address)
	if err != nil {
		return nil, err
	}
	return &hookedConn{Conn: c, h: h}, nil
}

type hookedConn struct {
	net.Conn
	h *hooked
}

func (c *hookedConn) Write(b []byte) (int, error) {
	if c.h.armed.Load() && bytes.Contains(b, c.h.trigger) && c.h.seen.Add(1) == c.h.nth {
		c.h.hook()
	}
	return c.Conn.Write(b)
}

// An address whose record changed between ReleaseAddress's read and its
// delete (its owner's record written again: names, a new lease) is still
// the owner's: it is given back, or the release fails. It is not
// reported given back while it stays.
func TestReleaseAddressChangedMeanwhile(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw := s.client(t)
	var key string
	link := &hooked{dial: s.dial, nth: 2} // the read, then the delete
	c, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: link.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := overlay(t, c)
	addr, err := c.AllocateAddress(ctx, n.ID, cluster.Address{Owner: "ep", Sandbox: "web"})
	if err != nil {
		t.Fatal(err)
	}
	key = "/ebpfnet/v1/addresses/" + n.ID + "/" + addr.String()
	resp, err := raw.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the address's record: %v, %v", resp, err)
	}
	record := string(resp.Kvs[0].Value)
	link.trigger = []byte(key)
	link.hook = func() {
		if _, err := raw.Put(ctx, key, record, clientv3.WithLease(clientv3.LeaseID(c.Lease()))); err != nil { // the owner's still
			t.Error(err)
		}
	}
	link.armed.Store(true)
	err = c.ReleaseAddress(ctx, n.ID, addr, "ep")
	if link.seen.Load() < 2 {
		t.Fatalf("the release's delete was not seen (%d requests)", link.seen.Load())
	}
	resp, err2 := raw.Get(ctx, key)
	if err == nil && (err2 != nil || len(resp.Kvs) != 0) {
		t.Errorf("ReleaseAddress(%s, ep) returned nil, and the address is still held: %d record(s) (%v)", addr, len(resp.Kvs), err2)
	}
}

package cluster_test

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"time"
)

// lossy is a way to etcd that loses the answer to one request: the first
// connection to carry trigger stops delivering what the store sends,
// and is closed shortly after, once the store had time to act on it.
type lossy struct {
	dial    func(ctx context.Context, address string) (net.Conn, error)
	trigger []byte
	fired   atomic.Bool
}

func (l *lossy) Dial(ctx context.Context, address string) (net.Conn, error) {
	c, err := l.dial(ctx, address)
	if err != nil {
		return nil, err
	}
	return &lossyConn{Conn: c, l: l}, nil
}

type lossyConn struct {
	net.Conn
	l    *lossy
	deaf atomic.Bool
}

func (c *lossyConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil && bytes.Contains(b, c.l.trigger) && c.l.fired.CompareAndSwap(false, true) {
		c.deaf.Store(true)
		time.AfterFunc(300*time.Millisecond, func() { c.Conn.Close() })
	}
	return n, err
}

func (c *lossyConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if err != nil || !c.deaf.Load() {
			return n, err
		}
		// the answer is lost
	}
}

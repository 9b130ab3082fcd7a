package engine

import (
	"context"
	"net"
	"net/netip"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// dialUpstream is how forwarded queries reach upstream from the
// dataplane's namespace: it opens the sockets the resolver exchanges them
// over in that namespace, where they stay whichever goroutine uses them, so
// the resolver enters the namespace only to open a socket, not per query.
func (e *Engine) dialUpstream(ctx context.Context, network string, server netip.AddrPort) (net.Conn, error) {
	return e.dialInHost(ctx, network, server.String())
}

// dialInHost connects from the dataplane's namespace, as the host's own
// traffic leaves: to DNS servers upstream, to the cluster store.
func (e *Engine) dialInHost(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	// On a thread of its own, not the engine's (inHost): a TCP connect to
	// a dead server waits out ctx, and publishing would wait behind it.
	err := namespace.Do(e.cfg.NetNS, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// ParseStoreOptions reads the daemon's --cluster-store-opt values,
// Docker's KEY=VALUE settings of the store's TLS: kv.cacertfile (the CA
// the members' certificates are checked against; the system's without
// it), kv.certfile and kv.keyfile (this host's client certificate, for a
// store that asks for one). With none, the store is spoken to in plain
// text; with any, over TLS.
func ParseStoreOptions(opts []string) (*tls.Config, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	files := map[string]string{}
	for _, opt := range opts {
		key, value, ok := strings.Cut(opt, "=")
		switch {
		case !ok || value == "":
			return nil, errdefs.Invalidf("invalid cluster store option %q: want KEY=VALUE", opt)
		case key != "kv.cacertfile" && key != "kv.certfile" && key != "kv.keyfile":
			return nil, errdefs.Invalidf("unknown cluster store option %q: want kv.cacertfile, kv.certfile or kv.keyfile", key)
		}
		files[key] = value
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca, ok := files["kv.cacertfile"]; ok {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, errdefs.Invalidf("cluster store option kv.cacertfile: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errdefs.Invalidf("cluster store option kv.cacertfile: no PEM certificate in %s", ca)
		}
	}
	cert, hasCert := files["kv.certfile"]
	key, hasKey := files["kv.keyfile"]
	if hasCert != hasKey {
		return nil, errdefs.Invalidf("cluster store options kv.certfile and kv.keyfile go together: give both, or neither")
	}
	if hasCert {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, errdefs.Invalidf("cluster store options kv.certfile %s and kv.keyfile %s: %v", cert, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// checkTLS shakes hands with each member it can reach, as this host's
// client would, and says what is wrong when one refuses this host's TLS:
// a store that speaks TLS to a host that does not, a certificate signed
// by another CA, a client certificate it asks for and is not given, or
// TLS to a store that speaks plain text. What it cannot reach says
// nothing.
func (c *Cluster) checkTLS() error {
	dial := c.cfg.Dial
	if dial == nil {
		dial = func(ctx context.Context, address string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", address)
		}
	}
	for _, endpoint := range c.cfg.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.handshake(ctx, dial, endpoint)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) handshake(ctx context.Context, dial func(context.Context, string) (net.Conn, error), endpoint string) error {
	conn, err := dial(ctx, endpoint)
	if err != nil {
		return nil
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	host, _, _ := net.SplitHostPort(endpoint)
	cfg := &tls.Config{InsecureSkipVerify: true} // only to learn whether it speaks TLS at all
	if c.cfg.TLS != nil {
		cfg = c.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
	}
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(conn, cfg)
	err = tc.HandshakeContext(ctx)
	if err == nil {
		if c.cfg.TLS == nil {
			return errdefs.Invalidf("cluster store %s speaks TLS: give its CA with --cluster-store-opt kv.cacertfile=FILE, and kv.certfile and kv.keyfile if it asks for a client certificate", endpoint)
		}
		// With TLS 1.3 a member refuses a client certificate after the
		// handshake: its alert is the first thing read.
		_, err = tc.Read(make([]byte, 1))
		var timeout net.Error
		if err == nil || errors.As(err, &timeout) && timeout.Timeout() {
			return nil
		}
	}
	if c.cfg.TLS == nil {
		return nil // neither TLS nor an answer to it: plain text, or nothing
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return nil
	}
	return errdefs.Invalidf("TLS to cluster store %s: %v", endpoint, err)
}

package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// StoreOptions are what the daemon's --cluster-store-opt values set;
// zero values leave the defaults.
type StoreOptions struct {
	TLS       *tls.Config // nil: plain text
	LeaseTTL  time.Duration
	Heartbeat time.Duration
}

// maxLeaseSeconds bounds discovery.ttl and discovery.heartbeat: a host
// dead for a day is dropped.
const maxLeaseSeconds = 86400

// ParseStoreOptions reads the daemon's --cluster-store-opt values,
// Docker's KEY=VALUE settings:
//   - the store's TLS: kv.cacertfile (the CA the members' certificates
//     are checked against; the system's without it), kv.certfile and
//     kv.keyfile (this host's client certificate, for a store that asks
//     for one). With none, the store is spoken to in plain text; with
//     any, over TLS.
//   - the lease, in whole seconds: discovery.ttl (how long this host's
//     records outlive its last renewal) and discovery.heartbeat (how
//     often it is renewed; a tenth of the TTL without it). A heartbeat
//     alone makes a TTL of three, as Docker's does.
func ParseStoreOptions(opts []string) (StoreOptions, error) {
	var o StoreOptions
	if len(opts) == 0 {
		return o, nil
	}
	files := map[string]string{}
	for _, opt := range opts {
		key, value, ok := strings.Cut(opt, "=")
		if !ok || value == "" {
			return StoreOptions{}, errdefs.Invalidf("invalid cluster store option %q: want KEY=VALUE", opt)
		}
		switch key {
		case "kv.cacertfile", "kv.certfile", "kv.keyfile":
			files[key] = value
		case "discovery.ttl", "discovery.heartbeat":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > maxLeaseSeconds {
				return StoreOptions{}, errdefs.Invalidf("invalid cluster store option %s %q: want whole seconds, 1 to %d", key, value, maxLeaseSeconds)
			}
			if key == "discovery.ttl" {
				o.LeaseTTL = time.Duration(n) * time.Second
			} else {
				o.Heartbeat = time.Duration(n) * time.Second
			}
		default:
			return StoreOptions{}, errdefs.Invalidf("unknown cluster store option %q: want kv.cacertfile, kv.certfile, kv.keyfile, discovery.ttl or discovery.heartbeat", key)
		}
	}
	switch {
	case o.LeaseTTL == 0 && o.Heartbeat != 0:
		o.LeaseTTL = 3 * o.Heartbeat
	case o.Heartbeat == 0 && o.LeaseTTL != 0:
		o.Heartbeat = o.LeaseTTL / 10
	case o.Heartbeat >= o.LeaseTTL && o.LeaseTTL != 0:
		return StoreOptions{}, errdefs.Invalidf("cluster store option discovery.heartbeat %d s must be shorter than discovery.ttl %d s",
			int(o.Heartbeat.Seconds()), int(o.LeaseTTL.Seconds()))
	}
	if len(files) == 0 {
		return o, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca, ok := files["kv.cacertfile"]; ok {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return StoreOptions{}, errdefs.Invalidf("cluster store option kv.cacertfile: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return StoreOptions{}, errdefs.Invalidf("cluster store option kv.cacertfile: no PEM certificate in %s", ca)
		}
	}
	cert, hasCert := files["kv.certfile"]
	key, hasKey := files["kv.keyfile"]
	if hasCert != hasKey {
		return StoreOptions{}, errdefs.Invalidf("cluster store options kv.certfile and kv.keyfile go together: give both, or neither")
	}
	if hasCert {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return StoreOptions{}, errdefs.Invalidf("cluster store options kv.certfile %s and kv.keyfile %s: %v", cert, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	o.TLS = cfg
	return o, nil
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

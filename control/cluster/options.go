package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

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

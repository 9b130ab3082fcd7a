package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// EtcdTLS are the PEM files of a secure test etcd: a CA of its own, the
// members' certificate (for their addresses and loopback) and a client
// certificate, each with its key.
type EtcdTLS struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

func newEtcdTLS(tb TB, dir string, addrs []netip.Addr) *EtcdTLS {
	tb.Helper()
	caKey, caCert := newCert(tb, &x509.Certificate{Subject: pkix.Name{CommonName: "ebpfnet test CA"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}, nil, nil)
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, a := range addrs {
		ips = append(ips, a.AsSlice())
	}
	serverKey, server := newCert(tb, &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"}, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, caKey)
	clientKey, client := newCert(tb, &x509.Certificate{Subject: pkix.Name{CommonName: "ebpfnet"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, caKey)
	t := &EtcdTLS{CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem")}
	writePEM(tb, t.CA, "CERTIFICATE", caCert.Raw)
	writePEM(tb, t.ServerCert, "CERTIFICATE", server.Raw)
	writePEM(tb, t.ServerKey, "EC PRIVATE KEY", marshalKey(tb, serverKey))
	writePEM(tb, t.ClientCert, "CERTIFICATE", client.Raw)
	writePEM(tb, t.ClientKey, "EC PRIVATE KEY", marshalKey(tb, clientKey))
	return t
}

// newCert makes a key and a certificate of it from template, signed by
// parent's key, or by itself when parent is nil.
func newCert(tb TB, template, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	template.SerialNumber = serial
	template.NotBefore, template.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return key, cert
}

func marshalKey(tb TB, key *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func writePEM(tb TB, path, kind string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

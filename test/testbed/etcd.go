package testbed

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
)

// EtcdMember is a member of a test etcd cluster: the network namespace it
// runs in and its address there.
type EtcdMember struct {
	NetNS string
	Addr  netip.Addr
}

// Etcd is an etcd cluster of Debian's etcd-server (3.4), one process per
// member, each in its member's namespace, with its data in the test's
// temporary directory. The test's cleanup stops every member.
type Etcd struct {
	tb      TB
	dir     string
	members []EtcdMember
	procs   []*etcdProcess
	// TLS is nil for a cluster that speaks plain text to its clients.
	TLS *EtcdTLS
}

type etcdProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// EtcdBinary is Debian's etcd server.
const EtcdBinary = "/usr/bin/etcd"

// StartEtcd starts a cluster of members and waits until each answers.
func StartEtcd(tb TB, members ...EtcdMember) *Etcd {
	tb.Helper()
	return startEtcd(tb, false, members)
}

// StartSecureEtcd is StartEtcd for a cluster that speaks TLS to its
// clients and takes only those with a certificate of its CA.
func StartSecureEtcd(tb TB, members ...EtcdMember) *Etcd {
	tb.Helper()
	return startEtcd(tb, true, members)
}

func startEtcd(tb TB, secure bool, members []EtcdMember) *Etcd {
	tb.Helper()
	e := &Etcd{tb: tb, dir: tb.TempDir(), members: members, procs: make([]*etcdProcess, len(members))}
	if secure {
		var addrs []netip.Addr
		for _, m := range members {
			addrs = append(addrs, m.Addr)
		}
		e.TLS = newEtcdTLS(tb, e.dir, addrs)
	}
	tb.Cleanup(func() {
		for i := range e.procs {
			e.Stop(i)
		}
	})
	for i := range members {
		e.Start(i)
	}
	for i := range members {
		e.WaitHealthy(i)
	}
	return e
}

func (e *Etcd) name(i int) string { return fmt.Sprintf("member%d", i) }

// Start starts member i, again after Stop: its data stays, so it rejoins.
func (e *Etcd) Start(i int) {
	e.tb.Helper()
	var cluster []string
	for j, m := range e.members {
		cluster = append(cluster, fmt.Sprintf("%s=http://%s", e.name(j), netip.AddrPortFrom(m.Addr, 2380)))
	}
	m := e.members[i]
	scheme := "http://"
	var secure []string
	if e.TLS != nil {
		scheme = "https://"
		secure = []string{"--cert-file", e.TLS.ServerCert, "--key-file", e.TLS.ServerKey,
			"--trusted-ca-file", e.TLS.CA, "--client-cert-auth"}
	}
	client, peer := scheme+netip.AddrPortFrom(m.Addr, 2379).String(), "http://"+netip.AddrPortFrom(m.Addr, 2380).String()
	args := append([]string{"nsenter", "--net=" + m.NetNS, EtcdBinary,
		"--name", e.name(i), "--data-dir", filepath.Join(e.dir, e.name(i)),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", filepath.Base(e.dir),
		// Elections in a second rather than in several, for the tests
		// that stop a member.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--log-level", "warn", "--logger", "zap"}, secure...)
	cmd, exited := startLogged(e.tb, e.dir, e.name(i), args...)
	e.procs[i] = &etcdProcess{cmd, exited}
}

// Stop kills member i at once, as a crash would.
func (e *Etcd) Stop(i int) {
	if p := e.procs[i]; p != nil {
		p.cmd.Process.Kill()
		<-p.exited
		e.procs[i] = nil
	}
}

// WaitHealthy waits until member i answers as a member of a cluster with
// a leader.
func (e *Etcd) WaitHealthy(i int) {
	e.tb.Helper()
	m := e.members[i]
	args := []string{"--net=" + m.NetNS, "etcdctl", "--endpoints", netip.AddrPortFrom(m.Addr, 2379).String(), "--command-timeout", "1s"}
	if e.TLS != nil {
		args = append(args, "--cacert", e.TLS.CA, "--cert", e.TLS.ClientCert, "--key", e.TLS.ClientKey)
	}
	waitFor(e.tb, e.dir, e.name(i), e.procs[i].exited, func() bool {
		return exec.Command("nsenter", append(args, "endpoint", "health")...).Run() == nil
	})
}

// Endpoints are the members' client addresses.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.members {
		out = append(out, netip.AddrPortFrom(m.Addr, 2379).String())
	}
	return out
}

// Store is the cluster in the daemon's --cluster-store form.
func (e *Etcd) Store() string { return "etcd://" + strings.Join(e.Endpoints(), ",") }

// StoreOptions are the daemon's --cluster-store-opt values for the
// cluster: its CA and a client certificate when it speaks TLS.
func (e *Etcd) StoreOptions() []string {
	if e.TLS == nil {
		return nil
	}
	return []string{"kv.cacertfile=" + e.TLS.CA, "kv.certfile=" + e.TLS.ClientCert, "kv.keyfile=" + e.TLS.ClientKey}
}

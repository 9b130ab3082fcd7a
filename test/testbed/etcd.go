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
	e := &Etcd{tb: tb, dir: tb.TempDir(), members: members, procs: make([]*etcdProcess, len(members))}
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
	client, peer := "http://"+netip.AddrPortFrom(m.Addr, 2379).String(), "http://"+netip.AddrPortFrom(m.Addr, 2380).String()
	cmd, exited := startLogged(e.tb, e.dir, e.name(i), "nsenter", "--net="+m.NetNS, EtcdBinary,
		"--name", e.name(i), "--data-dir", filepath.Join(e.dir, e.name(i)),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", filepath.Base(e.dir),
		// Elections in a second rather than in several, for the tests
		// that stop a member.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--log-level", "warn", "--logger", "zap")
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
	waitFor(e.tb, e.dir, e.name(i), e.procs[i].exited, func() bool {
		return exec.Command("nsenter", "--net="+m.NetNS, "etcdctl", "--endpoints", netip.AddrPortFrom(m.Addr, 2379).String(),
			"--command-timeout", "1s", "endpoint", "health").Run() == nil
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

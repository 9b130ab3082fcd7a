package testbed

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Cluster is hosts on one underlay, each running a member of one etcd
// cluster and a daemon that joined it (--cluster-store). The underlay is
// a bridge in a namespace of its own: bridged in the root namespace, its
// frames would meet br_netfilter and Docker's FORWARD DROP.
type Cluster struct {
	Hosts    []*Host
	Etcd     *Etcd
	Underlay string // the underlay's namespace, by name
	// options are --cluster-store-opt values every daemon is given,
	// beside the store's TLS.
	options []string
}

// UnderlayAddr is host i's address on the underlay: its VTEP and where
// its etcd member listens.
func UnderlayAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 88, 0, byte(i + 1)}) }

// NewCluster makes n hosts in a cluster, their daemons given the
// --cluster-store-opt values options. Each host's underlay interface is
// under0.
func NewCluster(tb TB, n int, options ...string) *Cluster {
	tb.Helper()
	return newCluster(tb, n, StartEtcd, nil, options)
}

// NewClusterWith is NewCluster with setup run on each host's namespace
// before anything of the cluster is in it (its underlay interface, its
// etcd member, its daemon), as NewHostWith's setup is: to prepare the
// hosts as real ones are. i is the host's index; UnderlayAddr(i) its
// address.
func NewClusterWith(tb TB, n int, setup func(i int, h *Host), options ...string) *Cluster {
	tb.Helper()
	return newCluster(tb, n, StartEtcd, setup, options)
}

// NewSecureCluster is NewCluster with an etcd that speaks TLS and asks
// the daemons for a client certificate (--cluster-store-opt).
func NewSecureCluster(tb TB, n int) *Cluster {
	tb.Helper()
	return newCluster(tb, n, StartSecureEtcd, nil, nil)
}

func newCluster(tb TB, n int, startEtcd func(TB, ...EtcdMember) *Etcd, setup func(int, *Host), options []string) *Cluster {
	tb.Helper()
	c := &Cluster{options: options}
	id := make([]byte, 3)
	rand.Read(id)
	c.Underlay = fmt.Sprintf("ebu%x", id)
	mustRun(tb, "ip", "netns", "add", c.Underlay)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", c.Underlay).Run() })
	mustRun(tb, "ip", "-n", c.Underlay, "link", "add", "br0", "type", "bridge")
	mustRun(tb, "ip", "-n", c.Underlay, "link", "set", "br0", "up")
	var members []EtcdMember
	for i := range n {
		// The daemons start once etcd answers, with the cluster's flags.
		h := newHost(tb, func(h *Host) {
			if setup != nil {
				setup(i, h)
			}
			host := filepath.Base(h.NetNS)
			port := fmt.Sprintf("h%d", i)
			mustRun(tb, "ip", "-n", host, "link", "add", "under0", "type", "veth", "peer", "name", port, "netns", c.Underlay)
			mustRun(tb, "ip", "-n", c.Underlay, "link", "set", port, "master", "br0", "up")
			mustRun(tb, "ip", "-n", host, "addr", "add", UnderlayAddr(i).String()+"/24", "dev", "under0")
			mustRun(tb, "ip", "-n", host, "link", "set", "under0", "up")
		})
		c.Hosts = append(c.Hosts, h)
		members = append(members, EtcdMember{NetNS: h.NetNS, Addr: UnderlayAddr(i)})
	}
	c.Etcd = startEtcd(tb, members...)
	// Daemons stop before etcd does (cleanups run last first), so that
	// they leave the cluster instead of waiting for a store that is gone.
	tb.Cleanup(func() {
		for _, h := range c.Hosts {
			h.Stop(syscall.SIGTERM)
		}
	})
	for i, h := range c.Hosts {
		h.DaemonFlags(c.DaemonFlags(i)...)
		h.Start()
	}
	return c
}

// DaemonFlags are the flags that make host i's daemon join the cluster.
func (c *Cluster) DaemonFlags(i int) []string {
	flags := []string{"--cluster-store", c.Etcd.Store(), "--cluster-advertise", UnderlayAddr(i).String()}
	for _, opt := range append(c.Etcd.StoreOptions(), c.options...) {
		flags = append(flags, "--cluster-store-opt", opt)
	}
	return flags
}

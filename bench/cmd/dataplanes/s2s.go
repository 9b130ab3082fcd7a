package main

import (
	"os/exec"
	"path/filepath"
)

// Sandbox to sandbox on one network. ebpfnet's side: two sandboxes of a
// network of their own, whose packets the sender's program delivers into
// the receiver's namespace (bpf_redirect_peer), never through the bridge.
// The plain bridge's: the kernel's bridge alone, in a namespace of its own
// whose netfilter is empty and whose br_netfilter is off (the machine's
// module is loaded, and a new namespace calls iptables from the bridge by
// default), with two veth-connected namespaces on a subnet of its own.
// Each side has its own client and server namespaces, so neither's
// TIME_WAIT sockets can trip the other's connections.
const (
	s2sSubnet      = "10.93.0.0/24" // ebpfnet's network
	s2sClient      = "10.93.0.2"
	s2sServer      = "10.93.0.3"
	bridgeClient   = "10.94.0.2"
	bridgeServer   = "10.94.0.3"
	bridgeMask     = "/24"
	s2sName        = "sandbox-to-sandbox" // ebpfnet's row
	plainBridge    = "plain-bridge"       // its baseline
	plainBridgeDev = "br0"
)

// s2sSide is one side's client namespace.
type s2sSide struct{ ebpfnet, bridge string }

// startS2S builds both sides and starts their servers.
func (b *bed) startS2S() {
	network := b.h.Name("s2s")
	b.h.MustCLI("network", "create", "--subnet", s2sSubnet, network)
	client, server := b.h.Name("s2sa"), b.h.Name("s2sb")
	b.h.MustCLI("sandbox", "create", client, "--network", network, "--ip", s2sClient)
	b.h.MustCLI("sandbox", "create", server, "--network", network, "--ip", s2sServer)
	b.servers(server)
	b.s2s.ebpfnet = client

	br, bclient, bserver := b.h.Name("brhost"), b.h.Name("bra"), b.h.Name("brb")
	for _, ns := range []string{br, bclient, bserver} {
		b.sh("ip", "netns", "add", ns)
		b.r.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		b.sh("ip", "-n", ns, "link", "set", "lo", "up")
	}
	// Only where the sysctls exist: without br_netfilter the bridge
	// never calls netfilter anyway.
	if matches, _ := filepath.Glob("/proc/sys/net/bridge/bridge-nf-call-*"); len(matches) > 0 {
		b.sh("ip", "netns", "exec", br, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0",
			"net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	}
	b.sh("ip", "-n", br, "link", "add", plainBridgeDev, "type", "bridge")
	b.sh("ip", "-n", br, "link", "set", plainBridgeDev, "up")
	for i, side := range []struct{ ns, ip string }{{bclient, bridgeClient}, {bserver, bridgeServer}} {
		port := []string{"pba", "pbb"}[i]
		b.sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", side.ns)
		b.sh("ip", "-n", br, "link", "set", port, "master", plainBridgeDev, "up")
		b.sh("ip", "-n", side.ns, "addr", "add", side.ip+bridgeMask, "dev", "eth0")
		b.sh("ip", "-n", side.ns, "link", "set", "eth0", "up")
	}
	b.servers(bserver)
	b.s2s.bridge = bclient
	// As in the host and outside namespaces: tens of thousands of short
	// connections from one client address.
	for _, ns := range []string{client, server, bclient, bserver} {
		b.sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=4096")
	}
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// The testbed: one client namespace behind two uplinks of one host. uplink0
// serves ebpfnet (its bridge ebpf0, sandbox web), uplink1 Docker (its
// bridge docker0, iptables rules and docker-proxy processes, container
// web; see docker.go). Each side has a server of its own, the same
// program, and each dataplane's client its own source address.
const (
	hostIP       = "10.99.0.1" // uplink0
	hostIPOthers = "10.99.0.3" // uplink0 too: where the N-1 other publications live
	hostIPDocker = "10.98.0.1" // uplink1
	clientDirect = "10.99.0.2"
	clientTC     = "10.99.0.4"
	clientIPT    = "10.98.0.2"
	clientDE     = "10.99.0.5" // the client of Docker's container on an ebpfnet network
	hostIPXDP    = "10.97.0.1" // uplink2, with ebpfnet's XDP fast path
	clientXDP    = "10.97.0.2"
	hostIPNoCsum = "10.96.0.1" // uplink3, TC alone, for a client like uplink2's
	clientNoCsum = "10.96.0.2"
	// IPv6: the uplinks' addresses and the clients', one per dataplane.
	hostIP6       = "2001:db8:99::1" // uplink0
	hostIPDocker6 = "2001:db8:98::1" // uplink1
	clientDirect6 = "2001:db8:99::2"
	clientTC6     = "2001:db8:99::4"
	clientIPT6    = "2001:db8:98::2"
	webSubnet6    = "fd00:be::/64"  // ebpfnet's sandbox network
	dockerSubnet6 = "fd00:d0c::/64" // docker0's
	dockerBridge  = "docker0"
	dockerBIP     = "172.30.0.1/16" // not Docker's default 172.17.0.1/16, which ebpfnet's bridge takes
	echoPort      = 7777
	iperfPort     = 5201
	ebpfPort      = 8080 // published by ebpfnet
	dockerPort    = 9080 // published by Docker's rules and docker-proxy
	dockerIperf   = 9201
	dockerEPort   = 9180 // published by docker run -p on an ebpfnet network
	dockerEIperf  = 9281
	otherPorts    = 10000 // where the N-1 other publications start
)

type bed struct {
	r         *runner
	h         *testbed.Host
	host, out string  // namespace names
	docker    docker  // Docker's side
	cni       cniSide // the CNI side, nil c without the reference plugins
	s2s       s2sSide // the sandbox-to-sandbox clients (s2s.go)
	network   string  // the ebpfnet network of web
	web       string  // the ebpfnet sandbox
	dnsClient string  // the ebpfnet sandbox that asks its embedded DNS
	webIP     string
	webIP6    string
	self      string
}

func newBed(r *runner, dockerMode string) *bed {
	b := &bed{r: r, self: must(os.Executable())}
	b.h = testbed.NewHostWith(r, func(h *testbed.Host) {
		out := h.AddOutside()
		b.host, b.out = filepath.Base(h.NetNS), filepath.Base(out.NS)
		b.sh("ip", "-n", b.host, "addr", "add", hostIPOthers+"/24", "dev", "uplink0")
		b.sh("ip", "-n", b.out, "addr", "add", clientTC+"/24", "dev", "eth0")
		b.sh("ip", "-n", b.out, "addr", "add", clientTC6+"/64", "dev", "eth0", "nodad")
		for _, client := range []string{clientDE, clientPM, clientCE, clientMon} {
			b.sh("ip", "-n", b.out, "addr", "add", client+"/24", "dev", "eth0")
		}
		b.sh("ip", "-n", b.host, "link", "add", "uplink1", "type", "veth", "peer", "name", "eth1", "netns", b.out)
		b.sh("ip", "-n", b.host, "addr", "add", hostIPDocker+"/24", "dev", "uplink1")
		b.sh("ip", "-n", b.out, "addr", "add", clientIPT+"/24", "dev", "eth1")
		b.sh("ip", "-n", b.host, "addr", "add", hostIPDocker6+"/64", "dev", "uplink1", "nodad")
		b.sh("ip", "-n", b.out, "addr", "add", clientIPT6+"/64", "dev", "eth1", "nodad")
		b.sh("ip", "-n", b.host, "link", "set", "uplink1", "up")
		b.sh("ip", "-n", b.out, "link", "set", "eth1", "up")
		b.sh("ip", "-n", b.out, "route", "add", dockerSubnet6, "via", hostIPDocker6)
		// uplink2 has the XDP fast path. Its client sends complete
		// checksums, as frames from a wire carry; a local stack would
		// leave them to offload, and XDP would pass every frame to TC.
		// Without offload there is no TSO either. uplink3 is the same for
		// TC alone: XDP against TC with the same client.
		for _, u := range []struct{ host, client, hostIP, clientIP string }{
			{"uplink2", "eth2", hostIPXDP, clientXDP}, {"uplink3", "eth3", hostIPNoCsum, clientNoCsum},
		} {
			b.sh("ip", "-n", b.host, "link", "add", u.host, "type", "veth", "peer", "name", u.client, "netns", b.out)
			b.sh("ip", "-n", b.host, "addr", "add", u.hostIP+"/24", "dev", u.host)
			b.sh("ip", "-n", b.out, "addr", "add", u.clientIP+"/24", "dev", u.client)
			b.sh("ip", "-n", b.host, "link", "set", u.host, "up")
			b.sh("ip", "-n", b.out, "link", "set", u.client, "up")
			b.sh("ip", "netns", "exec", b.out, "ethtool", "-K", u.client, "tx", "off")
		}
		// Tens of thousands of short connections per run: without these the
		// clients' TIME_WAIT sockets pile up and slow every connect() down
		// (the port search), whatever the dataplane.
		for _, ns := range []string{b.host, b.out} {
			b.sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=4096")
		}
	}, "--uplink", "uplink0", "--uplink", "uplink2", "--uplink", "uplink3", "--uplink-mode", "uplink2=xdp")
	// The direct paths route to the sandbox's own addresses, which only
	// gateway mode nat-unprotected allows, as with Docker 28.
	b.network = b.h.Name("net")
	b.h.MustCLI("network", "create", "--ipv6", "--subnet", webSubnet6,
		"-o", "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected",
		"-o", "com.docker.network.bridge.gateway_mode_ipv6=nat-unprotected", b.network)
	b.web = b.h.Name("web")
	b.h.MustCLI("sandbox", "create", b.web, "--network", b.network,
		"-p", fmt.Sprintf("%d:%d", ebpfPort, echoPort), "-p", fmt.Sprintf("%d:%d/udp", ebpfPort, echoPort),
		"-p", fmt.Sprintf("%d:%d", iperfPort, iperfPort))
	b.webIP = b.h.IP(b.web, b.network)
	b.webIP6 = b.h.Sandbox(b.web).NetworkSettings.Networks[b.network].GlobalIPv6Address
	b.h.MustCLI("sandbox", "create", b.h.Name("others"))
	b.servers(b.web)
	b.startDNS()
	b.startDocker(dockerMode)
	if _, err := os.Stat(testbed.ReferencePlugins + "/bridge"); err == nil {
		b.startCNI()
	}
	b.startS2S()
	time.Sleep(300 * time.Millisecond) // servers and proxies start listening
	return b
}

func (b *bed) sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		b.r.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// background runs a command in a namespace until the run ends.
func (b *bed) background(ns string, argv ...string) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	if err := cmd.Start(); err != nil {
		b.r.Fatalf("start %v in %s: %v", argv, ns, err)
	}
	b.r.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// servers runs the echo server and iperf3's on their ports in a namespace.
func (b *bed) servers(ns string) {
	b.background(ns, b.self, "serve", fmt.Sprint(echoPort))
	b.background(ns, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
}

// setPublications makes ebpfnet hold the measured publications and n-1
// others, on a sandbox of their own and a host address of their own, so
// the host's own sockets (on its other addresses) never hold their ports.
func (b *bed) setPublications(n int) {
	others := b.h.Name("others")
	b.h.CLI("unpublish", fmt.Sprintf("%d-%d", otherPorts, otherPorts+49999), others)
	if n > 1 {
		b.h.MustCLI("publish", fmt.Sprintf("%s:%d-%d:%d-%d", hostIPOthers, otherPorts, otherPorts+n-2, otherPorts, otherPorts+n-2), others)
	}
}

// measure runs one load in a namespace and returns what it measured.
func (b *bed) measure(ns, mode, addr, local string, d time.Duration) (Load, error) {
	args := []string{"netns", "exec", ns, b.self, "load", "-mode", mode, "-addr", addr, "-d", d.String()}
	if local != "" {
		args = append(args, "-local", local)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		return Load{}, fmt.Errorf("%s load to %s from %s: %w: %s", mode, addr, ns, err, stderr(err))
	}
	var l Load
	err = json.Unmarshal(out, &l)
	return l, err
}

// iperf measures one TCP stream's throughput in Gbit/s, and the segments
// its sender retransmitted.
func (b *bed) iperf(ns, host string, port int, local string, d time.Duration) (float64, int, error) {
	args := []string{"netns", "exec", ns, "iperf3", "-c", host, "-p", fmt.Sprint(port), "-t", fmt.Sprint(max(1, int(d.Seconds()))), "-J"}
	if local != "" {
		args = append(args, "-B", local)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 to %s:%d from %s: %w: %s %s", host, port, ns, err, stderr(err), out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, err
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, r.End.SumSent.Retransmits, nil
}

func stderr(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return strings.TrimSpace(string(exit.Stderr))
	}
	return ""
}

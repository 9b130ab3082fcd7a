package main

import (
	"bytes"
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
// serves ebpfnet (its bridge ebpf0, sandbox web), uplink1 the Docker-like
// side (bridge dk0 with Docker's iptables rules and docker-proxy, server
// namespace dockerweb). Each side has a server of its own, the same
// program, and each dataplane's client its own source address.
const (
	hostIP       = "10.99.0.1" // uplink0
	hostIPOthers = "10.99.0.3" // uplink0 too: where the N-1 other publications live
	hostIPDocker = "10.98.0.1" // uplink1
	clientDirect = "10.99.0.2"
	clientTC     = "10.99.0.4"
	clientIPT    = "10.98.0.2"
	dockerBridge = "dk0"
	dockerNet    = "172.30.0.0/16"
	dockerGW     = "172.30.0.1"
	dockerWeb    = "172.30.0.2"
	echoPort     = 7777
	iperfPort    = 5201
	ebpfPort     = 8080 // published by ebpfnet
	dockerPort   = 9080 // published by Docker's rules and docker-proxy
	dockerIperf  = 9201
	otherPorts   = 10000 // where the N-1 other publications start
)

type bed struct {
	r         *runner
	h         *testbed.Host
	host, out string // namespace names
	dockerWeb string
	web       string // the ebpfnet sandbox
	webIP     string
	self      string
}

func newBed(r *runner) *bed {
	b := &bed{r: r, self: must(os.Executable())}
	b.h = testbed.NewHostWith(r, func(h *testbed.Host) {
		out := h.AddOutside()
		b.host, b.out = filepath.Base(h.NetNS), filepath.Base(out.NS)
		b.sh("ip", "-n", b.host, "addr", "add", hostIPOthers+"/24", "dev", "uplink0")
		b.dockerWeb = h.Prefix + "-dockerweb"
		b.sh("ip", "-n", b.out, "addr", "add", clientTC+"/24", "dev", "eth0")
		b.sh("ip", "-n", b.host, "link", "add", "uplink1", "type", "veth", "peer", "name", "eth1", "netns", b.out)
		b.sh("ip", "-n", b.host, "addr", "add", hostIPDocker+"/24", "dev", "uplink1")
		b.sh("ip", "-n", b.out, "addr", "add", clientIPT+"/24", "dev", "eth1")
		b.sh("ip", "-n", b.host, "link", "set", "uplink1", "up")
		b.sh("ip", "-n", b.out, "link", "set", "eth1", "up")
		// Tens of thousands of short connections per run: without these the
		// clients' TIME_WAIT sockets pile up and slow every connect() down
		// (the port search), whatever the dataplane.
		for _, ns := range []string{b.host, b.out} {
			b.sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=4096")
		}
		// Docker's side: a bridge, a server namespace on it.
		b.sh("ip", "-n", b.host, "link", "add", dockerBridge, "type", "bridge")
		b.sh("ip", "-n", b.host, "addr", "add", dockerGW+"/16", "dev", dockerBridge)
		b.sh("ip", "-n", b.host, "link", "set", dockerBridge, "up")
		b.sh("ip", "netns", "add", b.dockerWeb)
		r.Cleanup(func() { exec.Command("ip", "netns", "del", b.dockerWeb).Run() })
		b.sh("ip", "-n", b.host, "link", "add", "dkv0", "type", "veth", "peer", "name", "eth0", "netns", b.dockerWeb)
		b.sh("ip", "-n", b.host, "link", "set", "dkv0", "master", dockerBridge, "up")
		b.sh("ip", "-n", b.dockerWeb, "addr", "add", dockerWeb+"/16", "dev", "eth0")
		b.sh("ip", "-n", b.dockerWeb, "link", "set", "eth0", "up")
		b.sh("ip", "-n", b.dockerWeb, "link", "set", "lo", "up")
		b.sh("ip", "-n", b.dockerWeb, "route", "add", "default", "via", dockerGW)
	}, "--uplink", "uplink0")
	b.web = b.h.Name("web")
	b.h.MustCLI("sandbox", "create", b.web,
		"-p", fmt.Sprintf("%d:%d", ebpfPort, echoPort), "-p", fmt.Sprintf("%d:%d/udp", ebpfPort, echoPort),
		"-p", fmt.Sprintf("%d:%d", iperfPort, iperfPort))
	b.webIP = b.h.IP(b.web, "bridge")
	b.h.MustCLI("sandbox", "create", b.h.Name("others"))
	for _, ns := range []string{b.web, b.dockerWeb} {
		b.background(ns, b.self, "serve", fmt.Sprint(echoPort))
		b.background(ns, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	}
	b.setIptables(1)
	for _, p := range []struct{ proto, port, target string }{
		{"tcp", fmt.Sprint(dockerPort), fmt.Sprint(echoPort)},
		{"udp", fmt.Sprint(dockerPort), fmt.Sprint(echoPort)},
		{"tcp", fmt.Sprint(dockerIperf), fmt.Sprint(iperfPort)},
	} {
		b.dockerProxy(p.proto, p.port, p.target)
	}
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

// dockerProxy runs the real docker-proxy as dockerd does: it reports on
// fd 3 ("0" when it listens, else the error) and exits without it.
func (b *bed) dockerProxy(proto, port, target string) {
	r, w, err := os.Pipe()
	if err != nil {
		b.r.Fatalf("pipe: %v", err)
	}
	defer r.Close()
	cmd := exec.Command("ip", "netns", "exec", b.host, "/usr/sbin/docker-proxy", "-proto", proto, "-host-ip", "0.0.0.0",
		"-host-port", port, "-container-ip", dockerWeb, "-container-port", target)
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		b.r.Fatalf("start docker-proxy: %v", err)
	}
	w.Close()
	b.r.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, _ := r.Read(buf)
	if msg := strings.TrimSpace(string(buf[:n])); msg != "0" {
		b.r.Fatalf("docker-proxy %s/%s did not start: %q", proto, port, msg)
	}
}

// setIptables loads the rules Docker writes for the measured port and n-1
// other published ports, the measured one last, as for the container
// started last.
func (b *bed) setIptables(n int) {
	var nat, filter bytes.Buffer
	other := func(i int) string { return fmt.Sprintf("172.30.%d.%d", 1+i/250, 3+i%250) }
	for i := range n - 1 {
		fmt.Fprintf(&nat, "-A DOCKER ! -i %s -p tcp -m tcp --dport %d -j DNAT --to-destination %s:%d\n", dockerBridge, otherPorts+i, other(i), echoPort)
		fmt.Fprintf(&filter, "-A DOCKER -d %s/32 ! -i %s -o %s -p tcp -m tcp --dport %d -j ACCEPT\n", other(i), dockerBridge, dockerBridge, echoPort)
	}
	for _, p := range []struct {
		proto      string
		port, dest int
	}{{"tcp", dockerPort, echoPort}, {"udp", dockerPort, echoPort}, {"tcp", dockerIperf, iperfPort}} {
		fmt.Fprintf(&nat, "-A DOCKER ! -i %s -p %s -m %s --dport %d -j DNAT --to-destination %s:%d\n", dockerBridge, p.proto, p.proto, p.port, dockerWeb, p.dest)
		fmt.Fprintf(&filter, "-A DOCKER -d %s/32 ! -i %s -o %s -p %s -m %s --dport %d -j ACCEPT\n", dockerWeb, dockerBridge, dockerBridge, p.proto, p.proto, p.dest)
	}
	rules := fmt.Sprintf(`*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s %[1]s ! -o %[2]s -j MASQUERADE
-A POSTROUTING -s %[3]s/32 -d %[3]s/32 -p tcp -m tcp --dport %[4]d -j MASQUERADE
-A DOCKER -i %[2]s -j RETURN
%[5]sCOMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o %[2]s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o %[2]s -j DOCKER
-A FORWARD -i %[2]s ! -o %[2]s -j ACCEPT
-A FORWARD -i %[2]s -o %[2]s -j ACCEPT
%[6]s-A DOCKER-ISOLATION-STAGE-1 -i %[2]s ! -o %[2]s -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o %[2]s -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -o ebpf0 -j ACCEPT
-A DOCKER-USER -i ebpf0 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
`, dockerNet, dockerBridge, dockerWeb, echoPort, nat.String(), filter.String())
	cmd := exec.Command("ip", "netns", "exec", b.host, "iptables-restore")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.r.Fatalf("iptables-restore: %v\n%s", err, out)
	}
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

// iperf measures one TCP stream's throughput in Gbit/s.
func (b *bed) iperf(ns, host string, port int, local string, d time.Duration) (float64, error) {
	args := []string{"netns", "exec", ns, "iperf3", "-c", host, "-p", fmt.Sprint(port), "-t", fmt.Sprint(max(1, int(d.Seconds()))), "-J"}
	if local != "" {
		args = append(args, "-B", local)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 to %s:%d from %s: %w: %s %s", host, port, ns, err, stderr(err), out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, err
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

func stderr(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return strings.TrimSpace(string(exit.Stderr))
	}
	return ""
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// Docker's side of the testbed, on uplink1. With Docker installed (`make
// bench-deps` installs Debian's docker.io) it is a real dockerd, started in
// the host namespace with a containerd of its own, serving from a container
// published with `docker run -p`: Docker's own rules and Docker's own
// docker-proxy processes. Without Docker (or with -docker rules) the same
// bridge, rules and docker-proxy processes are set up by hand, the way
// dockerd sets them up.
type docker struct {
	how      string // which of the two, for the results' header
	serverIP string // the server's address on docker0
	rules    string // iptables-save of nat and filter with the server published: N=1
	// d is the real dockerd, nil when its rules are emulated. It also runs
	// the server on an ebpfnet network (ebpfnetNet), with ebpfnet as its
	// network and IPAM plugin.
	d          *testbed.Docker
	ebpfnetNet string
	// dnsNS is the namespace of the container that asks dockerd's
	// embedded DNS (dns.go); empty without dockerd.
	dnsNS string
}

// published is one port the server publishes through Docker.
type published struct {
	host, target int
	proto        string
}

// flag is the port as `docker run -p` takes it.
func (p published) flag() string { return fmt.Sprintf("%d:%d/%s", p.host, p.target, p.proto) }

var dockerPublished = []published{
	{dockerPort, echoPort, "tcp"},
	{dockerPort, echoPort, "udp"},
	{dockerIperf, iperfPort, "tcp"},
}

func (b *bed) startDocker(mode string) {
	if mode == "auto" {
		mode = "rules"
		if testbed.DockerInstalled() {
			mode = "dockerd"
		}
	}
	switch mode {
	case "dockerd":
		b.runDockerd()
	case "rules":
		b.emulateDocker()
	default:
		b.r.Fatalf("invalid -docker %q: want auto, dockerd or rules", mode)
	}
	// As on any Docker host with other bridges: FORWARD's policy is DROP,
	// and DOCKER-USER lets the no-NAT paths to ebpfnet's bridges (eb+)
	// through, and the CNI side's (cb+, where CNI's firewall plugin would).
	for _, dir := range []string{"-i", "-o"} {
		for _, bridges := range []string{"eb+", "cb+"} {
			b.sh("ip", "netns", "exec", b.host, "iptables", "-I", "DOCKER-USER", dir, bridges, "-j", "ACCEPT")
		}
		if b.docker.d != nil { // Docker 20.10's ip6tables rules have no DOCKER-USER
			b.sh("ip", "netns", "exec", b.host, "ip6tables", "-I", "FORWARD", dir, "eb+", "-j", "ACCEPT")
		}
	}
	b.docker.rules = b.sh("ip", "netns", "exec", b.host, "iptables-save", "-t", "nat") +
		b.sh("ip", "netns", "exec", b.host, "iptables-save", "-t", "filter")
}

// runDockerd starts a real dockerd (testbed.StartDocker) inside the host
// namespace, imports an image holding the servers and runs it with -p.
func (b *bed) runDockerd() {
	// IPv6 on docker0 with Docker's ip6tables rules (experimental in 20.10).
	d := testbed.StartDocker(b.r, b.h.NetNS, "--bip", dockerBIP, "--userland-proxy", "--iptables",
		"--ipv6", "--fixed-cidr-v6", dockerSubnet6, "--ip6tables", "--experimental")
	// The image: this program (its echo server) and iperf3, each with the
	// shared libraries it links.
	rootfs := filepath.Join(b.r.TempDir(), "rootfs")
	testbed.CopyWithLibs(b.r, rootfs, b.self, "/serve")
	testbed.CopyWithLibs(b.r, rootfs, must(exec.LookPath("iperf3")), "/usr/bin/iperf3")
	if err := os.MkdirAll(rootfs+"/tmp", 0o1777); err != nil { // iperf3's buffers
		b.r.Fatalf("create %s/tmp: %v", rootfs, err)
	}
	d.ImportImage(rootfs, "bench-serve")

	run := []string{"run", "-d", "--name", "web"}
	for _, p := range dockerPublished {
		run = append(run, "-p", p.flag())
	}
	d.MustCLI(append(run, "bench-serve", "/serve", "serve", fmt.Sprint(echoPort))...)
	d.MustCLI("exec", "-d", "web", "/usr/bin/iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	b.docker.serverIP = d.MustCLI("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web")
	b.docker.how = "dockerd " + d.MustCLI("version", "-f", "{{.Server.Version}}") + " with docker run -p and its docker-proxy"

	// The same server, run by Docker on an ebpfnet network: docker run -p
	// through the plugin.
	b.docker.d, b.docker.ebpfnetNet = d, "ebpfnet-web"
	d.MustCLI("network", "create", "-d", b.h.Prefix, "--ipam-driver", b.h.Prefix, b.docker.ebpfnetNet)
	d.MustCLI("run", "-d", "--name", "webe", "--network", b.docker.ebpfnetNet,
		"-p", fmt.Sprintf("%d:%d", dockerEPort, echoPort), "-p", fmt.Sprintf("%d:%d/udp", dockerEPort, echoPort),
		"-p", fmt.Sprintf("%d:%d", dockerEIperf, iperfPort), "bench-serve", "/serve", "serve", fmt.Sprint(echoPort))
	d.MustCLI("exec", "-d", "webe", "/usr/bin/iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	b.dockerDNS(d)
}

// dockerRunTimings times docker run -p of the server, on Docker's bridge
// and on an ebpfnet network, with what the scale put there present: N-1
// sets of Docker's rules, N-1 ebpfnet publications.
func (b *bed) dockerRunTimings(n, times int) []Timing {
	bridge := Timing{What: "docker run -p, Docker's bridge", N: n}
	onEbpfnet := Timing{What: "docker run -p, ebpfnet network", N: n}
	for range times {
		for _, t := range []*Timing{&bridge, &onEbpfnet} {
			args := []string{"run", "-d", "--name", "timed", "-p", "7001:7777"}
			if t == &onEbpfnet {
				args = append(args, "--network", b.docker.ebpfnetNet)
			}
			t0 := time.Now()
			b.docker.d.MustCLI(append(args, "bench-serve", "/serve", "serve", fmt.Sprint(echoPort))...)
			t.Ms = append(t.Ms, ms(time.Since(t0)))
			b.docker.d.MustCLI("rm", "-f", "timed")
		}
	}
	return []Timing{bridge, onEbpfnet}
}

// emulateDocker sets up by hand what dockerd would: the bridge, a server
// namespace on it (standing for the container), Docker's rules for its
// published ports, and one docker-proxy per port.
func (b *bed) emulateDocker() {
	const serverIP = "172.30.0.2"
	ns := b.h.Name("dockerweb")
	b.sh("ip", "-n", b.host, "link", "add", dockerBridge, "type", "bridge")
	b.sh("ip", "-n", b.host, "addr", "add", dockerBIP, "dev", dockerBridge)
	b.sh("ip", "-n", b.host, "link", "set", dockerBridge, "up")
	b.sh("ip", "netns", "add", ns)
	b.r.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	b.sh("ip", "-n", b.host, "link", "add", "dkv0", "type", "veth", "peer", "name", "eth0", "netns", ns)
	b.sh("ip", "-n", b.host, "link", "set", "dkv0", "master", dockerBridge, "up")
	b.sh("ip", "-n", ns, "addr", "add", serverIP+"/16", "dev", "eth0")
	b.sh("ip", "-n", ns, "link", "set", "eth0", "up")
	b.sh("ip", "-n", ns, "link", "set", "lo", "up")
	b.sh("ip", "-n", ns, "route", "add", "default", "via", strings.Split(dockerBIP, "/")[0])
	b.background(ns, b.self, "serve", fmt.Sprint(echoPort))
	b.background(ns, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	b.docker = docker{how: "Docker's rules by iptables-restore and docker-proxy from " + dpkgVersion("docker.io"), serverIP: serverIP}

	var nat, filter strings.Builder
	for _, p := range dockerPublished {
		fmt.Fprintf(&nat, "-A POSTROUTING -s %[1]s/32 -d %[1]s/32 -p %[2]s -m %[2]s --dport %[3]d -j MASQUERADE\n", serverIP, p.proto, p.target)
		fmt.Fprintf(&nat, "-A DOCKER ! -i %s -p %s -m %s --dport %d -j DNAT --to-destination %s:%d\n", dockerBridge, p.proto, p.proto, p.host, serverIP, p.target)
		fmt.Fprintf(&filter, "-A DOCKER -d %s/32 ! -i %s -o %s -p %s -m %s --dport %d -j ACCEPT\n", serverIP, dockerBridge, dockerBridge, p.proto, p.proto, p.target)
		b.dockerProxy(p, serverIP)
	}
	b.restore(fmt.Sprintf(`*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s %[1]s ! -o %[2]s -j MASQUERADE
-A DOCKER -i %[2]s -j RETURN
%[3]sCOMMIT
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
%[4]s-A DOCKER-ISOLATION-STAGE-1 -i %[2]s ! -o %[2]s -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o %[2]s -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
`, dockerBIP, dockerBridge, nat.String(), filter.String()))
}

// dockerProxy runs the real docker-proxy as dockerd does: it reports on
// fd 3 ("0" when it listens, else the error) and exits without it.
func (b *bed) dockerProxy(p published, serverIP string) {
	ready, w, err := os.Pipe()
	if err != nil {
		b.r.Fatalf("pipe: %v", err)
	}
	defer ready.Close()
	cmd := exec.Command("ip", "netns", "exec", b.host, "docker-proxy", "-proto", p.proto, "-host-ip", "0.0.0.0",
		"-host-port", fmt.Sprint(p.host), "-container-ip", serverIP, "-container-port", fmt.Sprint(p.target))
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		b.r.Fatalf("start docker-proxy: %v", err)
	}
	w.Close()
	b.r.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, _ := ready.Read(buf)
	if msg := strings.TrimSpace(string(buf[:n])); msg != "0" {
		b.r.Fatalf("docker-proxy %s did not start: %q", p.flag(), msg)
	}
}

// setIptables gives Docker's DOCKER chains the rules of n-1 other
// published ports, placed before the server's as for containers started
// earlier, so every measured packet walks past them all.
func (b *bed) setIptables(n int) {
	var nat, filter strings.Builder
	other := func(i int) string { return fmt.Sprintf("172.30.%d.%d", 1+i/250, 3+i%250) }
	for i := range n - 1 {
		fmt.Fprintf(&nat, "-A DOCKER ! -i %s -p tcp -m tcp --dport %d -j DNAT --to-destination %s:%d\n", dockerBridge, otherPorts+i, other(i), echoPort)
		fmt.Fprintf(&filter, "-A DOCKER -d %s/32 ! -i %s -o %s -p tcp -m tcp --dport %d -j ACCEPT\n", other(i), dockerBridge, dockerBridge, echoPort)
	}
	others := map[string]string{"*nat": nat.String(), "*filter": filter.String()}
	var rules strings.Builder
	table := ""
	for line := range strings.Lines(b.docker.rules) {
		if strings.HasPrefix(line, "*") {
			table = strings.TrimSpace(line)
		}
		if strings.HasPrefix(line, "-A DOCKER ") && strings.Contains(line, "--dport") {
			rules.WriteString(others[table])
			others[table] = ""
		}
		rules.WriteString(line)
	}
	for table, left := range others {
		if left != "" {
			b.r.Fatalf("no published port's rule in %s's DOCKER chain to put others before", table)
		}
	}
	b.restore(rules.String())
}

// restore replaces the host namespace's tables named in rules.
func (b *bed) restore(rules string) {
	cmd := exec.Command("ip", "netns", "exec", b.host, "iptables-restore")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.r.Fatalf("iptables-restore: %v\n%s", err, out)
	}
}

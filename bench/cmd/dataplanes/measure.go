package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// dataplane is one way of reaching a server.
type dataplane struct {
	Name     string `json:"name"`
	Baseline string `json:"baseline"` // the no-NAT path it is compared with
	ns       string // where its client runs
	host     string // what its client connects to
	port     int    // echo port there
	iperf    int    // iperf3 port there
	local    string // its client's source address
	// monitor runs `ebpfnet monitor` (every event, JSON) while measuring.
	monitor bool
}

func (b *bed) dataplanes() []dataplane {
	dps := []dataplane{
		{"direct", "direct", b.out, b.webIP, echoPort, iperfPort, clientDirect, false},
		{"iptables", "direct", b.out, hostIPDocker, dockerPort, dockerIperf, clientIPT, false},
		{"ebpfnet-tc", "direct", b.out, hostIP, ebpfPort, iperfPort, clientTC, false},
		// The same with every event written and read: what emission
		// costs when a monitor listens (ebpfnet-tc is with none).
		{"ebpfnet-tc-monitor", "direct", b.out, hostIP, ebpfPort, iperfPort, clientMon, true},
		{"ebpfnet-xdp", "direct", b.out, hostIPXDP, ebpfPort, iperfPort, clientXDP, false},
		{"ebpfnet-tc-nocsum", "direct", b.out, hostIPNoCsum, ebpfPort, iperfPort, clientNoCsum, false},
		// The same over IPv6: the sandbox's own IPv6 address, and the
		// port published on [::].
		{"direct6", "direct6", b.out, b.webIP6, echoPort, iperfPort, clientDirect6, false},
		{"ebpfnet-tc6", "direct6", b.out, hostIP6, ebpfPort, iperfPort, clientTC6, false},
		// Host clients share a source: the client closes first, so servers
		// keep no TIME_WAIT state that one path could trip another over.
		{"hostdirect", "hostdirect", b.host, b.webIP, echoPort, iperfPort, "", false},
		{"docker-proxy", "hostdirect", b.host, "127.0.0.1", dockerPort, dockerIperf, "", false},
		{"ebpfnet-local", "hostdirect", b.host, "127.0.0.1", ebpfPort, iperfPort, "", false},
		// Sandbox to sandbox on one network (s2s.go): the kernel's bridge
		// alone, and ebpfnet's redirect.
		{plainBridge, plainBridge, b.s2s.bridge, bridgeServer, echoPort, iperfPort, bridgeClient, false},
		{s2sName, plainBridge, b.s2s.ebpfnet, s2sServer, echoPort, iperfPort, s2sClient, false},
	}
	if b.docker.d != nil {
		// docker run -p on an ebpfnet network, beside Docker's own bridge
		// (iptables) and ebpfnet's own sandbox (ebpfnet-tc); and Docker's
		// ip6tables DNAT for the same port over IPv6.
		dps = slices.Insert(dps, 3, dataplane{"docker-ebpfnet", "direct", b.out, hostIP, dockerEPort, dockerEIperf, clientDE, false})
		i := slices.IndexFunc(dps, func(d dataplane) bool { return d.Name == "ebpfnet-tc6" })
		dps = slices.Insert(dps, i, dataplane{"iptables6", "direct6", b.out, hostIPDocker6, dockerPort, dockerIperf, clientIPT6, false})
	}
	if b.cni.c != nil {
		// The same bridge plugin, with portmap or with ebpfnet chained.
		i := slices.IndexFunc(dps, func(d dataplane) bool { return d.Name == "hostdirect" })
		dps = slices.Insert(dps, i,
			dataplane{"cni-portmap", "direct", b.out, hostIP, cniPortmapPort, cniPortmapIperf, clientPM, false},
			dataplane{"cni-ebpfnet", "direct", b.out, hostIP, cniEbpfnetPort, cniEbpfnetIperf, clientCE, false})
	}
	return dps
}

// dataplane is the path named name.
func (b *bed) dataplane(name string) dataplane {
	dps := b.dataplanes()
	return dps[slices.IndexFunc(dps, func(d dataplane) bool { return d.Name == name })]
}

// Sample is one measurement.
type Sample struct {
	Dataplane string  `json:"dataplane"`
	Workload  string  `json:"workload"` // conn (per s), rr (per s), udp (per s), pps (per s), gbps
	N         int     `json:"n"`        // publications or rules present
	Round     int     `json:"round"`
	Value     float64 `json:"value"`
	P50       float64 `json:"p50us,omitempty"`
	P99       float64 `json:"p99us,omitempty"`
	// Retransmits are the TCP segments the sender resent (gbps: iperf3's
	// end.sum_sent.retransmits).
	Retransmits int `json:"retransmits,omitempty"`
}

// Timing is how long one control operation took, in ms.
type Timing struct {
	What string    `json:"what"`
	N    int       `json:"n"`
	Ms   []float64 `json:"ms"`
}

// Results is everything a run measured.
type Results struct {
	Env        string      `json:"env"`
	Rounds     int         `json:"rounds"`
	Duration   string      `json:"duration"`
	Dataplanes []dataplane `json:"dataplanes"`
	Samples    []Sample    `json:"samples"`
	Timings    []Timing    `json:"timings"`
	RSSKiB     int         `json:"daemonRssKiB"`
	RSSAtN     int         `json:"daemonRssAtN"`
	DNS        []DNSSample `json:"dns"`
	// DNSNote says why a server is missing from the DNS table.
	DNSNote string `json:"dnsNote,omitempty"`
	// SandboxToSandbox is ebpfnet's sandbox-to-sandbox path against the
	// plain bridge, figure by figure (filled when written).
	SandboxToSandbox []Comparison `json:"sandboxToSandbox,omitempty"`
	// Sandboxes is the control plane at scale (sandboxes.go), and
	// SandboxesNote the limit that stopped it short, if one did.
	Sandboxes     []ScaleSample `json:"sandboxes,omitempty"`
	SandboxesNote string        `json:"sandboxesNote,omitempty"`
	// DockerScale is docker run and rm on an ebpfnet network at scale
	// (dockerscale.go), and DockerScaleNote what stopped it short or why
	// it is missing.
	DockerScale     []DockerScaleSample `json:"dockerScale,omitempty"`
	DockerScaleNote string              `json:"dockerScaleNote,omitempty"`
	// Pods is pod creation through containerd's CRI at scale (pods.go),
	// and PodsNote what stopped it short or why it is missing.
	Pods     []PodSample `json:"pods,omitempty"`
	PodsNote string      `json:"podsNote,omitempty"`
}

func run(r *runner, cfg config) Results {
	if cfg.sandboxesOnly || cfg.podsOnly { // on hosts of their own: no testbed of dataplanes
		res := Results{Env: environment("not used"), Rounds: 1, Duration: fmt.Sprintf("%d creates and removes", cfg.sandboxTimes)}
		if cfg.podsOnly {
			res.Duration = fmt.Sprintf("%d pod creations on each side", cfg.podTimes)
		}
		measureAtScale(r, cfg, &res)
		return res
	}
	b := newBed(r, cfg.docker)
	dps := b.dataplanes()
	res := Results{Env: environment(b.docker.how), Rounds: cfg.rounds, Duration: cfg.duration.String(), Dataplanes: dps}
	log.Printf("%s", res.Env)
	if cfg.dnsOnly {
		res.Dataplanes = nil
		res.DNS = b.measureDNS(cfg.rounds, cfg.duration)
		return res
	}
	for _, stage := range []struct {
		alone   bool
		measure func(n, rounds int, d time.Duration) []Sample
		n       int
	}{
		{cfg.balanceOnly, b.measureBalance, cfg.balanceBackends},
		{cfg.sourcesOnly, b.measureSourceLists, cfg.sourcePrefixes},
		{cfg.egressOnly, b.measureEgress, cfg.egressPrefixes},
	} {
		if stage.alone {
			res.Dataplanes = nil
			res.Samples = stage.measure(stage.n, cfg.rounds, cfg.duration)
			return res
		}
	}
	if cfg.controlOnly {
		res.Dataplanes = nil
		client := api.NewClient(b.h.Socket())
		for _, n := range cfg.scale {
			b.setPublications(n)
			res.Timings = append(res.Timings, b.publishTimings(client, n, 1000)...)
			log.Printf("N=%d done", n)
		}
		return res
	}

	// Every workload on every dataplane, interleaved: a b c … a b c …
	for round := 1; round <= cfg.rounds; round++ {
		for _, w := range []string{"conn", "rr", "udp", "pps", "gbps"} {
			for _, dp := range dps {
				// Small-datagram floods only from outside over IPv4,
				// where the uplink programs (TC, XDP) differ.
				if w == "pps" && dp.Baseline != "direct" {
					continue
				}
				res.Samples = append(res.Samples, b.sample(dp, w, 1, round, cfg.duration))
			}
		}
		log.Printf("round %d of %d done", round, cfg.rounds)
	}

	// The embedded DNS servers, before the scaling below replaces the host's
	// rules with a copy.
	res.DNS = b.measureDNS(cfg.rounds, cfg.duration)
	if b.docker.dnsNS == "" {
		res.DNSNote = "dockerd's column is missing: Docker's side is emulated (-docker rules), and only a real dockerd has an embedded DNS."
	}

	// Scaling: the same connections with N-1 other publications (rules).
	client := api.NewClient(b.h.Socket())
	maxN := slices.Max(cfg.scale)
	for _, n := range cfg.scale {
		b.setIptables(n)
		b.setPublications(n)
		for round := 1; round <= cfg.rounds; round++ {
			for _, dp := range dps {
				if dp.Name == "iptables" || dp.Name == "ebpfnet-tc" {
					res.Samples = append(res.Samples, b.sample(dp, "conn", n, round, cfg.duration))
				}
			}
		}
		// Control-plane timings at every N for ebpfnet; iptables' at the
		// ends of the scale only (a delete among 50,000 rules takes seconds).
		res.Timings = append(res.Timings, b.publishTimings(client, n, 1000)...)
		if n == cfg.scale[0] || n == maxN {
			res.Timings = append(res.Timings, b.iptablesTimings(n, 10)...)
		}
		if n == cfg.scale[0] || n == min(10000, maxN) {
			if b.docker.d != nil {
				res.Timings = append(res.Timings, b.dockerRunTimings(n, cfg.rounds+2)...)
			}
			if b.cni.c != nil {
				res.Timings = append(res.Timings, b.cniAddTimings(n, cfg.rounds+2)...)
			}
		}
		if n == maxN {
			res.RSSKiB, res.RSSAtN = rss(b.h.DaemonPID()), n
		}
		log.Printf("N=%d done", n)
	}
	if cfg.sourcePrefixes > 0 {
		res.Samples = append(res.Samples, b.measureSourceLists(cfg.sourcePrefixes, cfg.rounds, cfg.duration)...)
	}
	if cfg.balanceBackends > 0 {
		res.Samples = append(res.Samples, b.measureBalance(cfg.balanceBackends, cfg.rounds, cfg.duration)...)
	}
	if cfg.egressPrefixes > 0 {
		res.Samples = append(res.Samples, b.measureEgress(cfg.egressPrefixes, cfg.rounds, cfg.duration)...)
	}
	measureAtScale(r, cfg, &res)
	return res
}

// measureAtScale is the control plane at scale: sandboxes over the API,
// then containers through Docker, then pods through containerd's CRI
// (not with -sandboxes-only; alone with -pods-only), each on hosts of
// their own that are gone before the next.
func measureAtScale(r *runner, cfg config, res *Results) {
	if !cfg.podsOnly {
		r.scoped(func() { res.Sandboxes, res.SandboxesNote = measureSandboxes(r, cfg.sandboxes, cfg.sandboxTimes) })
	}
	if len(cfg.dockerContainers) > 0 && !cfg.podsOnly {
		r.scoped(func() {
			res.DockerScale, res.DockerScaleNote = measureDockerScale(r, cfg.dockerContainers, cfg.sandboxTimes)
		})
	}
	if len(cfg.pods) > 0 && !cfg.sandboxesOnly {
		r.scoped(func() { res.Pods, res.PodsNote = measurePods(r, cfg.pods, cfg.podTimes) })
	}
}

func (b *bed) sample(dp dataplane, workload string, n, round int, d time.Duration) Sample {
	s := Sample{Dataplane: dp.Name, Workload: workload, N: n, Round: round}
	if dp.monitor {
		defer b.monitoring()()
	}
	if workload == "gbps" {
		v, retransmits, err := b.iperf(dp.ns, dp.host, dp.iperf, dp.local, d)
		if err != nil {
			b.r.Fatalf("%v", err)
		}
		s.Value, s.Retransmits = v, retransmits
		return s
	}
	l, err := b.measure(dp.ns, workload, net.JoinHostPort(dp.host, fmt.Sprint(dp.port)), dp.local, d)
	if err != nil {
		b.r.Fatalf("%v", err)
	}
	s.Value, s.P50, s.P99 = l.Rate, l.P50, l.P99
	return s
}

// monitoring starts `ebpfnet monitor`, reading every event, and returns
// what stops it; it waits until the datapath writes events.
func (b *bed) monitoring() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := b.h.Command(ctx, "monitor", "--type", "all", "-o", "json")
	if err := cmd.Start(); err != nil {
		b.r.Fatalf("start ebpfnet monitor: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); b.h.Status().Monitoring == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.r.Fatalf("ebpfnet monitor never switched events on")
		}
	}
	return func() { cancel(); cmd.Wait() }
}

// publishTimings times publishing and unpublishing one port with n
// present and, interleaved with them so that the disk is the same, the
// floor of any durable change: a bbolt transaction writing one small key
// (two fsyncs), as the daemon's store does, in a file on the same
// filesystem as the daemon's state.
func (b *bed) publishTimings(client *api.Client, n, times int) []Timing {
	db, err := bolt.Open(filepath.Join(b.r.TempDir(), "floor.db"), 0o600, nil)
	if err != nil {
		b.r.Fatalf("open bbolt: %v", err)
	}
	defer db.Close()
	add, remove := Timing{What: "ebpfnet publish", N: n}, Timing{What: "ebpfnet unpublish", N: n}
	floor := Timing{What: commitFloorName, N: n}
	// A request that reads the same sandbox: what the API costs without a
	// commit.
	read := Timing{What: readName, N: n}
	for i := range times {
		t0 := time.Now()
		err := db.Update(func(tx *bolt.Tx) error {
			bucket, err := tx.CreateBucketIfNotExists([]byte("floor"))
			if err != nil {
				return err
			}
			return bucket.Put([]byte("key"), []byte(fmt.Sprint(i)))
		})
		if err != nil {
			b.r.Fatalf("bbolt commit: %v", err)
		}
		floor.Ms = append(floor.Ms, ms(time.Since(t0)))
		t0 = time.Now()
		if _, err := client.Publish(context.Background(), b.web, api.Ports{Mappings: []api.PortMapping{{Proto: "tcp", HostPort: 7000, Port: 7777}}}); err != nil {
			b.r.Fatalf("publish: %v", err)
		}
		add.Ms = append(add.Ms, ms(time.Since(t0)))
		t0 = time.Now()
		if _, err := client.Unpublish(context.Background(), b.web, []api.PortMapping{{HostPort: 7000}}); err != nil {
			b.r.Fatalf("unpublish: %v", err)
		}
		remove.Ms = append(remove.Ms, ms(time.Since(t0)))
		t0 = time.Now()
		if _, err := client.Sandbox(context.Background(), b.web); err != nil {
			b.r.Fatalf("inspect: %v", err)
		}
		read.Ms = append(read.Ms, ms(time.Since(t0)))
	}
	return []Timing{add, remove, floor, read}
}

// readName names the timing of a request that commits nothing.
const readName = "ebpfnet inspect (a read, no commit)"

// commitFloorName names the floor's timing.
const commitFloorName = "bbolt commit of one key (the floor)"

// iptablesTimings times adding and deleting the two rules Docker writes for
// one port (nat DNAT, filter ACCEPT), with n ports' rules present.
func (b *bed) iptablesTimings(n, times int) []Timing {
	add, remove := Timing{What: "iptables add", N: n}, Timing{What: "iptables delete", N: n}
	rules := [][]string{
		{"-t", "nat", "DOCKER", "!", "-i", dockerBridge, "-p", "tcp", "-m", "tcp", "--dport", "7000", "-j", "DNAT", "--to-destination", b.docker.serverIP + ":7777"},
		{"-t", "filter", "DOCKER", "-d", b.docker.serverIP + "/32", "!", "-i", dockerBridge, "-o", dockerBridge, "-p", "tcp", "-m", "tcp", "--dport", "7777", "-j", "ACCEPT"},
	}
	apply := func(op string) float64 {
		t0 := time.Now()
		for _, r := range rules {
			args := append([]string{"netns", "exec", b.host, "iptables", r[0], r[1], op}, r[2:]...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				b.r.Fatalf("iptables %s: %v %s", op, err, out)
			}
		}
		return ms(time.Since(t0))
	}
	for range times {
		add.Ms = append(add.Ms, apply("-A"))
		remove.Ms = append(remove.Ms, apply("-D"))
	}
	return []Timing{add, remove}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rss is a process's resident memory in KiB.
func rss(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kib int
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kib)
			return kib
		}
	}
	return 0
}

// environment is the one-line header every result carries.
func environment(docker string) string {
	return fmt.Sprintf("kernel %s, %d CPUs, %s, ebpfnet %s, %s, %s, iptables and docker-proxy columns: %s, %s",
		firstLine("uname", "-r"), runtime.NumCPU(), runtime.Version(), firstLine("git", "describe", "--always", "--dirty"),
		firstLine("iptables", "--version"), firstLine("iperf3", "--version"), docker, time.Now().UTC().Format("2006-01-02"))
}

// firstLine is the first line a command prints.
func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return string(line)
}

func dpkgVersion(pkg string) string {
	return firstLine("dpkg-query", "-W", "-f", pkg+" ${Version}", pkg)
}

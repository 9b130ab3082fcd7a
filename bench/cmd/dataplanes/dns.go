package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// The embedded DNS servers side by side: ebpfnet's, answering in a sandbox
// of a user-defined ebpfnet network, and dockerd's, answering in a
// container of a user-defined Docker bridge network; both at 127.0.0.11
// inside the client's namespace, both forwarding to one upstream server in
// the outside namespace (this program's upstream subcommand), each through
// its own uplink. dnsperf runs inside each namespace: first at full speed
// (the capacity), then at half the lower capacity of the two, where
// latency and the server's CPU time per query are comparable.

// The upstream's addresses: the outside namespace's on uplink0 (ebpfnet's
// side, where the host's resolv.conf points too) and on uplink1 (Docker's).
const (
	upstreamEbpfnet = testbed.UpstreamDNS
	upstreamDocker  = clientIPT
	upstreamTTL     = 300 // longer than any run: the cache's case holds
	dnsPeer         = "dnspeer"
	dnsClient       = "dnsclient"
	dnsSubnet       = "172.29.0.0/16" // Docker's user network; its default pools would take ebpfnet's 172.17
	dnsClients      = 8               // dnsperf -c, as in issue 14's first try
	dnsOutstanding  = 64              // dnsperf -q: below dockerd's 100 concurrent forwards, which it drops past
	repeatedNames   = 10
)

// DNS workloads.
const (
	dnsNames     = "names"     // a container's name on the same network: answered locally
	dnsForwarded = "forwarded" // a new name every query: forwarded upstream every time
	dnsRepeated  = "repeated"  // a few forwarded names again and again: a cache answers them
)

var dnsWorkloads = []string{dnsNames, dnsForwarded, dnsRepeated}

// DNSSample is one dnsperf run against one server.
type DNSSample struct {
	Server   string  `json:"server"` // ebpfnet or dockerd
	Workload string  `json:"workload"`
	Round    int     `json:"round"`
	Offered  float64 `json:"offered,omitempty"` // dnsperf -Q; 0 at full speed
	QPS      float64 `json:"qps"`               // answered NOERROR per second
	Lost     int     `json:"lost"`              // never answered (dnsperf -t 1)
	Failed   int     `json:"failed"`            // answered with another code (SERVFAIL past a bound)
	P50      float64 `json:"p50us,omitempty"`   // only at a fixed load (dnsperf -v)
	P99      float64 `json:"p99us,omitempty"`
	CPUus    float64 `json:"cpuUsPerQuery"` // the server process's utime+stime over queries answered
}

// dnsServer is one side: where its client runs and which process answers.
type dnsServer struct {
	name  string
	enter []string // the prefix that runs a command in the client's namespace
	pid   int
	local string // a name on the client's network
}

func (b *bed) dnsServers() []dnsServer {
	servers := []dnsServer{{"ebpfnet", []string{"ip", "netns", "exec", b.dnsClient}, b.h.DaemonPID(), b.web}}
	if b.docker.dnsNS != "" {
		servers = append(servers, dnsServer{"dockerd", []string{"nsenter", "--net=" + b.docker.dnsNS}, b.docker.d.PID(), dnsPeer})
	}
	return servers
}

// startDNS starts the upstream and ebpfnet's client sandbox; Docker's
// client container is started with dockerd (runDockerd), before its rules
// are saved.
func (b *bed) startDNS() {
	b.background(b.out, b.self, "upstream", upstreamEbpfnet+":53", upstreamDocker+":53")
	b.dnsClient = b.h.Name(dnsClient)
	b.h.MustCLI("sandbox", "create", b.dnsClient, "--network", b.network, "--dns", upstreamEbpfnet)
}

// dockerDNS runs Docker's DNS client and its peer on a user-defined bridge
// network, where dockerd answers 127.0.0.11.
func (b *bed) dockerDNS(d *testbed.Docker) {
	d.MustCLI("network", "create", "--subnet", dnsSubnet, "dnsnet")
	for _, name := range []string{dnsPeer, dnsClient} {
		d.MustCLI("run", "-d", "--name", name, "--network", "dnsnet", "--dns", upstreamDocker,
			"bench-serve", "/serve", "serve", fmt.Sprint(echoPort))
	}
	b.docker.dnsNS = d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", dnsClient)
}

// measureDNS runs every workload: capacity on both servers, round by
// round, then the fixed load on both.
func (b *bed) measureDNS(rounds int, d time.Duration) []DNSSample {
	var out []DNSSample
	servers := b.dnsServers()
	for _, w := range dnsWorkloads {
		capacity := map[string][]float64{}
		for round := 1; round <= rounds; round++ {
			for _, s := range servers {
				sample := b.dnsperf(s, w, round, 0, d)
				capacity[s.name] = append(capacity[s.name], sample.QPS)
				out = append(out, sample)
			}
		}
		offered := 0.0
		for _, qps := range capacity {
			if c := summarize(qps).med / 2; offered == 0 || c < offered {
				offered = c
			}
		}
		offered = max(100, float64(int(offered/100)*100))
		for round := 1; round <= rounds; round++ {
			for _, s := range servers {
				out = append(out, b.dnsperf(s, w, round, offered, d))
			}
		}
		log.Printf("DNS %s done", w)
	}
	return out
}

// dnsperf runs dnsperf once in s's client namespace, at full speed or at
// offered queries per second.
func (b *bed) dnsperf(s dnsServer, workload string, round int, offered float64, d time.Duration) DNSSample {
	sample := DNSSample{Server: s.name, Workload: workload, Round: round, Offered: offered}
	label := fmt.Sprintf("%s-%d-%d", s.name, round, int(offered)) // forwarded names are new to every run
	names := b.dnsNames(s, workload, label, offered, d)
	defer os.Remove(names)
	args := append(slices.Clone(s.enter), "dnsperf", "-s", "127.0.0.11", "-d", names, "-c", fmt.Sprint(dnsClients),
		"-q", fmt.Sprint(dnsOutstanding), "-t", "1", "-l", fmt.Sprintf("%.3f", d.Seconds()))
	if workload == dnsForwarded {
		args = append(args, "-n", "1") // never a name twice, whatever the cache
	}
	if offered > 0 {
		args = append(args, "-Q", fmt.Sprint(int(offered)), "-v") // -v: one line per answer, with its latency
	}
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.r.Fatalf("dnsperf pipe: %v", err)
	}
	cpu0 := cpuTime(s.pid)
	if err := cmd.Start(); err != nil {
		b.r.Fatalf("start dnsperf: %v", err)
	}
	res, perr := parseDNSPerf(stdout)
	if err := cmd.Wait(); err != nil || perr != nil {
		b.r.Fatalf("dnsperf %s against %s: %v %v\n%s", workload, s.name, err, perr, stderr.String())
	}
	cpu := cpuTime(s.pid) - cpu0
	if res.noerror == 0 {
		b.r.Fatalf("dnsperf %s against %s: none of %d answers NOERROR: is the server up?", workload, s.name, res.completed)
	}
	// Only good answers count: a fast SERVFAIL is no answer.
	sample.QPS = res.qps * float64(res.noerror) / float64(res.completed)
	sample.Lost, sample.Failed, sample.P50, sample.P99 = res.lost, res.completed-res.noerror, res.p50, res.p99
	sample.CPUus = cpu.Seconds() * 1e6 / float64(res.noerror)
	return sample
}

// dnsNames writes dnsperf's input for one run and returns its path.
func (b *bed) dnsNames(s dnsServer, workload, label string, offered float64, d time.Duration) string {
	var buf bytes.Buffer
	switch workload {
	case dnsNames:
		fmt.Fprintf(&buf, "%s A\n", s.local)
	case dnsRepeated:
		for i := range repeatedNames {
			fmt.Fprintf(&buf, "r%d.repeated.test A\n", i)
		}
	case dnsForwarded:
		// More names than the run can ask: at full speed, more than any
		// server here answers; at a fixed load, what it offers and a margin.
		n := int(100_000 * d.Seconds())
		if offered > 0 {
			n = int(offered*d.Seconds()*1.2) + 1000
		}
		for i := range n {
			fmt.Fprintf(&buf, "q%d.%s.forwarded.test A\n", i, label)
		}
	}
	path := filepath.Join(b.r.TempDir(), "names")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		b.r.Fatalf("write dnsperf input: %v", err)
	}
	return path
}

type dnsperfResult struct {
	completed, noerror, lost int
	qps, p50, p99            float64
}

var (
	dnsperfCompleted = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	dnsperfLost      = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	dnsperfNoError   = regexp.MustCompile(`Response codes:.*NOERROR (\d+)`)
	dnsperfQPS       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
)

// parseDNSPerf reads dnsperf's output: its statistics, and with -v a line
// per answer, "> RCODE NAME TYPE SECONDS", whose percentiles it takes.
func parseDNSPerf(r io.Reader) (dnsperfResult, error) {
	var (
		res       dnsperfResult
		latencies []float64
		summary   strings.Builder
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "> ") {
			// Latency of good answers only, as they alone count as answered.
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && f[1] == "NOERROR" {
				latencies = append(latencies, v*1e6)
			}
			continue
		}
		summary.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	text := summary.String()
	for _, f := range []struct {
		re *regexp.Regexp
		to *int
	}{{dnsperfCompleted, &res.completed}, {dnsperfLost, &res.lost}, {dnsperfNoError, &res.noerror}} {
		m := f.re.FindStringSubmatch(text)
		if m == nil {
			if f.re == dnsperfNoError {
				continue // no answers at all: the caller says so
			}
			return res, fmt.Errorf("no %q in dnsperf's output:\n%s", f.re, text)
		}
		*f.to, _ = strconv.Atoi(m[1])
	}
	m := dnsperfQPS.FindStringSubmatch(text)
	if m == nil {
		return res, fmt.Errorf("no queries per second in dnsperf's output:\n%s", text)
	}
	res.qps, _ = strconv.ParseFloat(m[1], 64)
	if n := len(latencies); n > 0 {
		slices.Sort(latencies)
		res.p50, res.p99 = latencies[n/2], latencies[n*99/100]
	}
	return res, nil
}

// cpuTime is the CPU time a process (all its threads, living or gone) has
// used: utime + stime of /proc/PID/stat, in clock ticks of 10 ms.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's name, which may hold spaces and
	// parentheses: state is the first, utime the 12th, stime the 13th.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const userHZ = 100 // USER_HZ, which the kernel's ABI fixes at 100
	return time.Duration(utime+stime) * time.Second / userHZ
}

// upstream answers every question for an A record, on every addr (UDP and
// TCP), with the same address and a TTL, until killed.
func upstream(addrs []string) error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: upstreamTTL},
				A: net.IPv4(192, 0, 2, 10)}}
		}
		w.WriteMsg(m)
	})
	errs := make(chan error)
	for _, addr := range addrs {
		for _, network := range []string{"udp", "tcp"} {
			srv := &dns.Server{Addr: addr, Net: network, Handler: h}
			go func() { errs <- srv.ListenAndServe() }()
		}
	}
	return <-errs
}

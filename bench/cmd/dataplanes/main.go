// Command dataplanes compares ebpfnet with Docker's iptables rules and
// docker-proxy, and ebpfnet's embedded DNS with dockerd's (dns.go), side
// by side in one run on one testbed of network namespaces, and writes a
// Markdown table, a JSON results file and charts.
//
//	sudo go run ./bench/cmd/dataplanes -out bench/results          # the full run
//	sudo go run ./bench/cmd/dataplanes -quick -out bench/results   # a one-minute smoke run
//
// Every measurement is bounded in time and sends traffic only between
// namespaces the run creates; everything is removed when it ends.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ebpfnet/ebpfnet/maps"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve": // inside a server namespace
			port, _ := strconv.Atoi(os.Args[2])
			if err := serve(port); err != nil {
				log.Fatal(err)
			}
			return
		case "upstream": // the DNS servers' upstream, outside
			if err := upstream(os.Args[2:]); err != nil {
				log.Fatal(err)
			}
			return
		case "load": // inside a client namespace
			fs := flag.NewFlagSet("load", flag.ExitOnError)
			mode := fs.String("mode", "conn", "conn, rr or udp")
			addr := fs.String("addr", "", "host:port")
			local := fs.String("local", "", "source address")
			d := fs.Duration("d", time.Second, "how long")
			workers := fs.Int("workers", 4, "concurrent connections (conn)")
			fs.Parse(os.Args[2:])
			if err := load(*mode, *addr, *local, *d, *workers); err != nil {
				log.Fatal(err)
			}
			return
		}
	}
	var cfg config
	flag.BoolVar(&cfg.quick, "quick", false, "a one-minute smoke run: short measurements, N up to 1000")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds of every measurement, interleaved across dataplanes")
	flag.DurationVar(&cfg.duration, "d", 3*time.Second, "length of one measurement")
	scale := flag.String("n", "1,1000,10000,50000", "numbers of publications (iptables rules) to measure with")
	flag.StringVar(&cfg.docker, "docker", "auto", "Docker's side: dockerd (a real dockerd and containerd), rules (its rules and docker-proxy set up by hand), or auto (dockerd when installed)")
	flag.StringVar(&cfg.out, "out", "bench/results", "where results, table and charts go")
	flag.BoolVar(&cfg.dnsOnly, "dns-only", false, "measure the embedded DNS servers alone (a few minutes)")
	flag.BoolVar(&cfg.controlOnly, "control-only", false, "time publishing and unpublishing alone, at every -n (a few minutes)")
	sandboxes := flag.String("sandboxes", "1,1000,5000,10000", "numbers of sandboxes present to time sandbox create and remove with")
	flag.IntVar(&cfg.sandboxTimes, "sandbox-times", 50, "creates and removes timed at each number of sandboxes")
	flag.BoolVar(&cfg.sandboxesOnly, "sandboxes-only", false, "time sandbox create and remove alone, at every -sandboxes (on a daemon of its own), and docker run and rm at every -docker-containers")
	flag.IntVar(&cfg.sourcePrefixes, "source-prefixes", 10000, "prefixes of the source list measured on a published port (0: not measured)")
	flag.BoolVar(&cfg.sourcesOnly, "sources-only", false, "measure a published port's source list of -source-prefixes alone (a few minutes)")
	flag.IntVar(&cfg.balanceBackends, "balance-backends", 3, "sandboxes sharing a published port with --balance, measured against one (0: not measured)")
	flag.BoolVar(&cfg.balanceOnly, "balance-only", false, "measure a port balanced over -balance-backends sandboxes alone (a minute)")
	flag.IntVar(&cfg.egressPrefixes, "egress-prefixes", 1000, "prefixes of the egress list a sandbox is measured with, against none (0: not measured)")
	flag.BoolVar(&cfg.egressOnly, "egress-only", false, "measure a sandbox's egress list of -egress-prefixes alone (a minute)")
	dockerContainers := flag.String("docker-containers", "1,1000", "numbers of containers present on an ebpfnet network to time docker run and rm with, -sandbox-times times each (empty: not measured)")
	pods := flag.String("pods", "1,200", "numbers of pods present to time a pod's creation through containerd's CRI with, ebpfnet against bridge + portmap (empty: not measured)")
	flag.IntVar(&cfg.podTimes, "pod-times", 15, "pod creations timed on each side at each number of pods")
	flag.BoolVar(&cfg.podsOnly, "pods-only", false, "time pod creation alone, at every -pods (on hosts of their own)")
	flag.Parse()
	cfg.sandboxes = counts("sandboxes", *sandboxes, 20000)
	cfg.dockerContainers = counts("docker-containers", *dockerContainers, 20000)
	cfg.pods = counts("pods", *pods, 20000)
	if cfg.scale = counts("n", *scale, 50000); len(cfg.scale) == 0 {
		log.Fatal("-n wants at least one number")
	}
	if cfg.quick {
		cfg.rounds, cfg.duration, cfg.scale = 2, 500*time.Millisecond, []int{1, 1000}
		cfg.sandboxes, cfg.sandboxTimes, cfg.dockerContainers = []int{1, 100}, 10, []int{1, 10}
		cfg.pods, cfg.podTimes = []int{1, 20}, 5
		cfg.sourcePrefixes = min(cfg.sourcePrefixes, 1000)
		cfg.balanceBackends = min(cfg.balanceBackends, 3)
	}
	if cfg.balanceBackends == 1 || cfg.balanceBackends > maps.MaxBackends || cfg.balanceOnly && cfg.balanceBackends == 0 {
		log.Fatalf("-balance-backends must be from 2 to %d (0: not measured, and not with -balance-only)", maps.MaxBackends)
	}
	if cfg.egressOnly && cfg.egressPrefixes == 0 || cfg.sourcesOnly && cfg.sourcePrefixes == 0 {
		log.Fatal("-egress-only needs -egress-prefixes, -sources-only -source-prefixes")
	}
	if cfg.sandboxTimes < 1 || cfg.podTimes < 1 {
		log.Fatal("-sandbox-times and -pod-times must be at least 1")
	}
	if cfg.rounds < 1 {
		log.Fatal("-rounds must be at least 1")
	}
	if os.Geteuid() != 0 {
		log.Fatal("the benchmark builds network namespaces: run it as root")
	}
	r := &runner{dir: must(os.MkdirTemp("", "ebpfnet-bench-"))}
	defer r.finish()
	// Interrupted, the run still removes every namespace, process and pin.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		r.Fatalf("interrupted")
	}()
	res := run(r, cfg)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		r.Fatalf("create %s: %v", cfg.out, err)
	}
	if err := write(res, cfg.out); err != nil {
		r.Fatalf("write results: %v", err)
	}
	fmt.Println(markdown(res))
	fmt.Printf("results, table and charts in %s\n", filepath.Clean(cfg.out))
}

type config struct {
	quick    bool
	rounds   int
	duration time.Duration
	scale    []int
	docker   string
	out      string
	dnsOnly  bool
	// controlOnly times publish and unpublish alone.
	controlOnly bool
	// sandboxes are the numbers of sandboxes present that sandbox create
	// and remove are timed with, sandboxTimes times each, and
	// dockerContainers those of containers present that docker run and rm
	// are; sandboxesOnly times them alone.
	sandboxes        []int
	dockerContainers []int
	sandboxTimes     int
	sandboxesOnly    bool
	// pods are the numbers of pods present that a pod's creation is
	// timed with, podTimes times on each side; podsOnly times it alone.
	pods     []int
	podTimes int
	podsOnly bool
	// sourcePrefixes is the length of the source list a published port
	// is measured with; sourcesOnly measures it alone.
	sourcePrefixes int
	sourcesOnly    bool
	// balanceBackends are the sandboxes a balanced port is measured
	// with, against one; balanceOnly measures it alone.
	balanceBackends int
	balanceOnly     bool
	// egressPrefixes is the length of the egress list a sandbox is
	// measured with, against none; egressOnly measures it alone.
	egressPrefixes int
	egressOnly     bool
}

// counts parses the list flag name (numbers from 1 to most); empty is
// none.
func counts(name, list string, most int) []int {
	var out []int
	for s := range strings.SplitSeq(list, ",") {
		if list == "" {
			break
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > most {
			log.Fatalf("invalid -%s %q: want numbers from 1 to %d", name, list, most)
		}
		out = append(out, n)
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

// runner stands in for testing.TB so the testbed serves the benchmark too.
type runner struct {
	mu       sync.Mutex // cleanups may be run by a signal while the run adds one
	dir      string
	cleanups []func()
	failed   bool
}

func (r *runner) Helper() {}
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}
func (r *runner) TempDir() string                   { return must(os.MkdirTemp(r.dir, "")) }
func (r *runner) Failed() bool                      { return r.failed }
func (r *runner) Logf(format string, args ...any)   { log.Printf(format, args...) }
func (r *runner) Errorf(format string, args ...any) { r.failed = true; log.Printf(format, args...) }
func (r *runner) Fatal(args ...any)                 { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) {
	r.failed = true
	log.Printf(format, args...)
	r.finish()
	os.Exit(1)
}

// finish runs the cleanups, last first, once.
func (r *runner) finish() {
	r.unwind(0)
	os.RemoveAll(r.dir)
	testbed.RemoveBuilds()
}

// scoped runs f, then the cleanups it added: what one part of the run
// built (thousands of sandboxes, a dockerd) is gone before the next part
// is measured.
func (r *runner) scoped(f func()) {
	r.mu.Lock()
	mark := len(r.cleanups)
	r.mu.Unlock()
	f()
	r.unwind(mark)
}

// unwind runs the cleanups added after the first keep, last first.
func (r *runner) unwind(keep int) {
	for {
		r.mu.Lock()
		if len(r.cleanups) <= keep {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		f()
	}
}

package main

import (
	"fmt"
	"log"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// Pods at scale (issue 27): a pod with two hostPorts created as the
// kubelet creates it, `crictl runp` through containerd's CRI plugin, until
// the runtime answers with the ready sandbox, with N pods present (two
// hostPorts each). ebpfnet's CNI plugin in main mode against the
// reference bridge plugin followed by portmap, whose iptables chains grow
// with every pod. Each side has a host namespace and a containerd of its
// own, both hold their N pods at once, and the timed pods alternate
// between them, so both see the machine as it is.
const (
	podsEbpfnet = "ebpfnet"
	podsPortmap = "bridge + portmap"
	// podWorkers is how many pods are created or removed at once while
	// the pods present grow or go (untimed).
	podWorkers = 4
)

// podsTimedPorts are the timed pod's hostPorts; the pods present have
// theirs from 20000.
var podsTimedPorts = []string{"19000:80/tcp", "19001:443/tcp"}

// PodSample is one side's pod creations with N pods present.
type PodSample struct {
	Plugins string    `json:"plugins"`
	N       int       `json:"n"`
	Ms      []float64 `json:"ms"`
}

// podSide is one CNI configuration's pods: its host, containerd and the
// pods present.
type podSide struct {
	name    string
	cri     *testbed.CRI
	mu      sync.Mutex
	present []string // pod IDs
}

// measurePods grows the pods present on each side to each of sizes and
// times times pod creations on each side at each, alternately. The note
// says why it is missing, or what stopped it short.
func measurePods(r *runner, sizes []int, times int) (out []PodSample, note string) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return nil, "pods are not measured: containerd is missing (make bench-deps installs it)."
	}
	sides := []*podSide{ebpfnetPods(r), portmapPods(r)}
	for _, s := range sides {
		// Untimed: the first pod of a containerd unpacks the pause image.
		id, err := s.cri.TryRunPod("warmup", podsTimedPorts...)
		if err == nil {
			err = s.cri.RemovePod(id)
		}
		if err != nil {
			r.Fatalf("pods on %s: the first pod: %v", s.name, err)
		}
	}
	for _, n := range sizes {
		for _, s := range sides {
			if err := s.grow(n - 1); err != nil { // the timed pod is the N-th
				return out, fmt.Sprintf("pods: N=%d not reached on %s: %v", n, s.name, err)
			}
		}
		samples := make([]PodSample, len(sides))
		for i, s := range sides {
			samples[i] = PodSample{Plugins: s.name, N: n}
		}
		for range times {
			for i, s := range sides {
				t0 := time.Now()
				id, err := s.cri.TryRunPod("timed", podsTimedPorts...)
				if err != nil {
					return out, fmt.Sprintf("pods: N=%d: the timed pod on %s: %v", n, s.name, err)
				}
				samples[i].Ms = append(samples[i].Ms, ms(time.Since(t0)))
				if err := s.cri.RemovePod(id); err != nil {
					r.Fatalf("%v", err)
				}
			}
		}
		for _, s := range samples {
			log.Printf("pods: %s with %d present: p50 %s ms", s.Plugins, n, num(percentile(s.Ms, 50)))
		}
		out = append(out, samples...)
	}
	return out, ""
}

// ebpfnetPods are pods on an ebpfnet network, ebpfnet's CNI plugin in
// main mode.
func ebpfnetPods(r *runner) *podSide {
	h := testbed.NewHost(r)
	network := h.Name("pods")
	h.MustCLI("network", "create", "--subnet", "10.212.0.0/16", network)
	c := testbed.NewCNI(r)
	c.Spec = "1.0.0" // the newest containerd 1.6's CNI library speaks
	c.Conflist("pods", map[string]any{"type": "ebpfnet", "network": network, "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	return startPods(r, podsEbpfnet, h, c)
}

// portmapPods are pods on the reference bridge plugin's network, their
// hostPorts published by portmap, on a host ebpfnet does not serve: its
// daemon stops before the first pod (its namespace has no uplink, so
// nothing of ebpfnet's is attached there).
func portmapPods(r *runner) *podSide {
	h := testbed.NewHost(r)
	h.Stop(syscall.SIGTERM)
	c := testbed.NewCNI(r)
	c.Spec = "1.0.0"
	c.Conflist("pods", bridgePlugin(r, "cbpods0", "10.213.0.0/16"), portmapPlugin)
	return startPods(r, podsPortmap, h, c)
}

// startPods starts h's containerd, pods attached by c's configuration;
// the pods present go, podWorkers at once, before containerd does.
func startPods(r *runner, name string, h *testbed.Host, c *testbed.CNI) *podSide {
	s := &podSide{name: name, cri: testbed.StartCRI(r, h.NetNS, c)}
	r.Cleanup(func() {
		if err := testbed.InParallel(podWorkers, len(s.present), func(i int) error { return s.cri.RemovePod(s.present[i]) }); err != nil {
			log.Printf("remove the pods on %s: %v", name, err)
		}
	})
	return s
}

// grow creates pods until n are present, each with two hostPorts of its
// own.
func (s *podSide) grow(n int) error {
	first := len(s.present)
	if n <= first {
		return nil
	}
	return testbed.InParallel(podWorkers, n-first, func(i int) error {
		p := first + i
		id, err := s.cri.TryRunPod(fmt.Sprintf("p%d", p), fmt.Sprintf("%d:80/tcp", 20000+2*p), fmt.Sprintf("%d:443/tcp", 20001+2*p))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.present = append(s.present, id)
		s.mu.Unlock()
		return nil
	})
}

// podStat is the median (min–max) of a side's creations with n present.
func (r Results) podStat(plugins string, n int) stat {
	for _, s := range r.Pods {
		if s.Plugins == plugins && s.N == n {
			return summarize(s.Ms)
		}
	}
	return stat{}
}

// podsTable writes pod creation at scale, and the figure: ebpfnet's
// median against bridge + portmap's with the most pods present.
func podsTable(b *strings.Builder, r Results) {
	if len(r.Pods) > 0 {
		fmt.Fprintf(b, "\nPod create to ready: `crictl runp` of a pod with two hostPorts through containerd's CRI (%s), until it answers with the ready sandbox, "+
			"with N pods present (two hostPorts each); ebpfnet's CNI plugin in main mode against the reference bridge + portmap plugins (%s), "+
			"each on a host namespace and containerd of its own holding its N pods, timed alternately; ms, medians (min–max):\n\n",
			dpkgVersion("containerd"), dpkgVersion("containernetworking-plugins"))
		b.WriteString("| N | ebpfnet | × N=1 | bridge + portmap | × N=1 | ebpfnet ÷ bridge + portmap |\n| --- | --- | --- | --- | --- | --- |\n")
		first := r.Pods[0].N
		var ns []int
		for _, s := range r.Pods {
			if s.Plugins == podsEbpfnet {
				ns = append(ns, s.N)
			}
		}
		for _, n := range ns {
			e, p := r.podStat(podsEbpfnet, n), r.podStat(podsPortmap, n)
			fmt.Fprintf(b, "| %d | %s | %.2f | %s | %.2f | %.2f |\n", n, cell(e), ratio(e, r.podStat(podsEbpfnet, first)),
				cell(p), ratio(p, r.podStat(podsPortmap, first)), ratio(e, p))
		}
		last := ns[len(ns)-1]
		fmt.Fprintf(b, "\nThe figure: with %d pods present, ebpfnet creates a pod in %.2f× the time bridge + portmap take.\n", last,
			ratio(r.podStat(podsEbpfnet, last), r.podStat(podsPortmap, last)))
	}
	if r.PodsNote != "" {
		fmt.Fprintf(b, "\n%s\n", r.PodsNote)
	}
}

// podsTargets: with the most pods present, ebpfnet's median no more than
// bridge + portmap's.
func (r Results) podsTargets() []target {
	if len(r.Pods) == 0 {
		return nil
	}
	last := r.Pods[len(r.Pods)-1].N
	got := ratio(r.podStat(podsEbpfnet, last), r.podStat(podsPortmap, last))
	return []target{{fmt.Sprintf("pod create to ready with %d pods present, ebpfnet ≤ 1.0× bridge + portmap", last), fmt.Sprintf("%.2f×", got), got <= 1}}
}

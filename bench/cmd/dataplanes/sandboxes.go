package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// The control plane at scale (issue 24): creating a sandbox with one
// published port and removing it again, with N sandboxes present, each
// with a published port, spread over scaleNetworks user networks, on a
// daemon of its own. A change must cost what it touches: p50 at every N
// within 1.3× of N=1.
const (
	scaleNetworks = 10
	scaleGoal     = 1.3
	scalePort     = 19000 // the timed sandbox's; the others' from 20000
)

// ScaleSample is the control plane with N sandboxes present.
type ScaleSample struct {
	N        int       `json:"n"`
	CreateMs []float64 `json:"createMs"`
	RemoveMs []float64 `json:"removeMs"`
	RSSKiB   int       `json:"daemonRssKiB"`
	FDs      int       `json:"daemonFds"`
	Threads  int       `json:"daemonThreads"`
}

// measureSandboxes grows the sandboxes present to each of sizes and times
// times creates and removes at each. A create the daemon refuses (a limit
// of the machine's) ends the growth; the note says which.
func measureSandboxes(r *runner, sizes []int, times int) (out []ScaleSample, note string) {
	h := testbed.NewHost(r)
	ctx := context.Background()
	var nets []string
	for i := range scaleNetworks {
		name := h.Name(fmt.Sprintf("scale%d", i))
		if _, err := h.Client.CreateNetwork(ctx, api.NetworkCreate{Name: name, Subnets: []string{fmt.Sprintf("10.%d.0.0/16", 200+i)}}); err != nil {
			r.Fatalf("create network %s: %v", name, err)
		}
		nets = append(nets, name)
	}
	present := 0
	for _, n := range sizes {
		for ; present < n-1; present++ { // the timed sandbox is the N-th
			name := h.Name(fmt.Sprintf("s%d", present))
			_, err := h.Client.CreateSandbox(ctx, api.SandboxCreate{Name: name, Networks: []string{nets[present%scaleNetworks]},
				Publish: []api.PortMapping{{Proto: "tcp", HostPort: uint16(20000 + present), Port: 80}}})
			if err != nil {
				return out, fmt.Sprintf("N=%d not reached: creating sandbox %d failed: %v", n, present+1, err)
			}
		}
		s := ScaleSample{N: n}
		for i := range times {
			name := h.Name("timed")
			t0 := time.Now()
			_, err := h.Client.CreateSandbox(ctx, api.SandboxCreate{Name: name, Networks: []string{nets[i%scaleNetworks]},
				Publish: []api.PortMapping{{Proto: "tcp", HostPort: scalePort, Port: 80}}})
			if err != nil {
				return out, fmt.Sprintf("N=%d: the daemon refused the timed sandbox: %v", n, err)
			}
			s.CreateMs = append(s.CreateMs, ms(time.Since(t0)))
			t0 = time.Now()
			if err := h.Client.RemoveSandbox(ctx, name, true); err != nil {
				r.Fatalf("remove sandbox %s: %v", name, err)
			}
			s.RemoveMs = append(s.RemoveMs, ms(time.Since(t0)))
		}
		s.RSSKiB, s.FDs, s.Threads = processFigures(h.DaemonPID())
		out = append(out, s)
		log.Printf("control plane with %d sandboxes done", n)
	}
	return out, ""
}

// processFigures are a process's resident memory in KiB, open descriptors
// and threads.
func processFigures(pid int) (rssKiB, fds, threads int) {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		fmt.Sscanf(line, "Threads: %d", &threads)
	}
	return rss(pid), len(entries), threads
}

// percentile is the p-th percentile (0-100) of ms.
func percentile(ms []float64, p int) float64 {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	return s[len(s)*p/100]
}

// sandboxesTable writes the control plane at scale.
func sandboxesTable(b *strings.Builder, r Results) {
	if len(r.Sandboxes) == 0 && r.SandboxesNote == "" {
		return
	}
	fmt.Fprintf(b, "\nControl plane at scale: a sandbox with one published port created and removed with N sandboxes present (each with a published port, on %d user networks), ms over the API; the daemon's RSS, descriptors and threads at N:\n\n", scaleNetworks)
	b.WriteString("| N | create p50 / p99 | × N=1 | remove p50 / p99 | × N=1 | RSS MiB | fds | threads |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range r.Sandboxes {
		c, rm := percentile(s.CreateMs, 50), percentile(s.RemoveMs, 50)
		fmt.Fprintf(b, "| %d | %s / %s | %.2f | %s / %s | %.2f | %.1f | %d | %d |\n", s.N, num(c), num(percentile(s.CreateMs, 99)), c/percentile(r.Sandboxes[0].CreateMs, 50),
			num(rm), num(percentile(s.RemoveMs, 99)), rm/percentile(r.Sandboxes[0].RemoveMs, 50), float64(s.RSSKiB)/1024, s.FDs, s.Threads)
	}
	if r.SandboxesNote != "" {
		fmt.Fprintf(b, "\n%s\n", r.SandboxesNote)
	}
}

// sandboxTargets: create and remove p50 at every N within scaleGoal of N=1.
func (r Results) sandboxTargets() []target {
	if len(r.Sandboxes) < 2 {
		return nil
	}
	var out []target
	first := r.Sandboxes[0]
	for _, s := range r.Sandboxes[1:] {
		for _, op := range []struct {
			what     string
			ms, base []float64
		}{{"create", s.CreateMs, first.CreateMs}, {"remove", s.RemoveMs, first.RemoveMs}} {
			x := percentile(op.ms, 50) / percentile(op.base, 50)
			out = append(out, target{fmt.Sprintf("sandbox %s with %d present, p50 ≤ %.1f× N=%d", op.what, s.N, scaleGoal, first.N),
				fmt.Sprintf("%s ms, %.2f×", num(percentile(op.ms, 50)), x), x <= scaleGoal})
		}
	}
	return out
}

package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
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
	// What the kernel alone takes for the same namespace, interfaces and
	// programs, with the same N present (kernelFloor).
	FloorCreateMs []float64 `json:"kernelFloorCreateMs"`
	FloorRemoveMs []float64 `json:"kernelFloorRemoveMs"`
	// A reconcile at N (ebpfnet reconcile): how long it took, and the
	// creates made while it ran, which its steps under the engine's lock
	// hold up.
	ReconcileMs    float64   `json:"reconcileMs"`
	CreateDuringMs []float64 `json:"createDuringReconcileMs"`
	RSSKiB         int       `json:"daemonRssKiB"`
	FDs            int       `json:"daemonFds"`
	Threads        int       `json:"daemonThreads"`
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
		if _, err := h.Client.CreateNetwork(ctx, api.NetworkCreate{Name: name, Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + i)}), 16)}}); err != nil {
			r.Fatalf("create network %s: %v", name, err)
		}
		nets = append(nets, name)
	}
	floor, err := newKernelFloor(r, h)
	if err != nil {
		r.Fatalf("kernel floor: %v", err)
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
			// The floor first, each time: both see the machine as it is.
			fc, err := floor.create(i)
			if err != nil {
				r.Fatalf("kernel floor: %v", err)
			}
			fr, err := floor.remove(i)
			if err != nil {
				r.Fatalf("kernel floor: %v", err)
			}
			s.FloorCreateMs, s.FloorRemoveMs = append(s.FloorCreateMs, ms(fc)), append(s.FloorRemoveMs, ms(fr))
			name := h.Name("timed")
			t0 := time.Now()
			_, err = h.Client.CreateSandbox(ctx, api.SandboxCreate{Name: name, Networks: []string{nets[i%scaleNetworks]},
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
		s.ReconcileMs, s.CreateDuringMs = reconcileWhileCreating(r, h, nets[0])
		s.RSSKiB, s.FDs, s.Threads = processFigures(h.DaemonPID())
		out = append(out, s)
		log.Printf("control plane with %d sandboxes done", n)
	}
	return out, ""
}

// reconcileWhileCreating asks the daemon to reconcile, and creates and
// removes a sandbox on network over and over until it is done (at most
// 5,000 times or 15 minutes), timing each create: a reconcile works a
// sandbox at a time under the engine's lock, and what it does with the
// whole state at once must not hold a change up for longer than a change
// takes.
func reconcileWhileCreating(r *runner, h *testbed.Host, network string) (reconcileMs float64, createMs []float64) {
	ctx := context.Background()
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- h.Client.Reconcile(ctx) }()
	for range 5000 {
		if time.Since(t0) > 15*time.Minute {
			break
		}
		select {
		case err := <-done:
			if err != nil {
				r.Fatalf("reconcile: %v", err)
			}
			return ms(time.Since(t0)), createMs
		default:
		}
		name := h.Name("during")
		c0 := time.Now()
		if _, err := h.Client.CreateSandbox(ctx, api.SandboxCreate{Name: name, Networks: []string{network},
			Publish: []api.PortMapping{{Proto: "tcp", HostPort: scalePort, Port: 80}}}); err != nil {
			r.Fatalf("create sandbox %s during a reconcile: %v", name, err)
		}
		createMs = append(createMs, ms(time.Since(c0)))
		if err := h.Client.RemoveSandbox(ctx, name, true); err != nil {
			r.Fatalf("remove sandbox %s: %v", name, err)
		}
	}
	if err := <-done; err != nil {
		r.Fatalf("reconcile: %v", err)
	}
	return ms(time.Since(t0)), createMs
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

// scaleOp is one of the two changes timed at each N.
type scaleOp struct {
	what        string
	ms, floorMs func(ScaleSample) []float64
}

var scaleOps = []scaleOp{
	{"create", func(s ScaleSample) []float64 { return s.CreateMs }, func(s ScaleSample) []float64 { return s.FloorCreateMs }},
	{"remove", func(s ScaleSample) []float64 { return s.RemoveMs }, func(s ScaleSample) []float64 { return s.FloorRemoveMs }},
}

// overFloor is how many times the kernel floor's p50 a change's p50 is
// at s: what the control plane adds to the kernel's own work, as a
// factor, which unlike a difference of two medians stays put when both
// are small.
func (op scaleOp) overFloor(s ScaleSample) float64 {
	return percentile(op.ms(s), 50) / percentile(op.floorMs(s), 50)
}

// sandboxesTable writes the control plane at scale: sandboxes over the
// API, then containers through Docker (dockerScaleTable), then pods
// through containerd's CRI (podsTable).
func sandboxesTable(b *strings.Builder, r Results) {
	if len(r.Sandboxes) > 0 {
		fmt.Fprintf(b, "\nControl plane at scale: a sandbox with one published port created and removed with N sandboxes present (each with a published port, on %d user networks), ms over the API; "+
			"the kernel floor is what the kernel alone takes for the same namespace, veth pair, programs, addresses and route, with the same N present, and ÷ floor the p50 over the floor's p50, × N=1; the daemon's RSS, descriptors and threads at N:\n\n", scaleNetworks)
		b.WriteString("| N | create p50 / p99 | × N=1 | floor p50 | × N=1 | ÷ floor | remove p50 / p99 | × N=1 | floor p50 | × N=1 | ÷ floor | RSS MiB | fds | threads |\n" +
			"| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		first := r.Sandboxes[0]
		for _, s := range r.Sandboxes {
			fmt.Fprintf(b, "| %d |", s.N)
			for _, op := range scaleOps {
				p50 := percentile(op.ms(s), 50)
				floor := percentile(op.floorMs(s), 50)
				fmt.Fprintf(b, " %s / %s | %.2f | %s | %.2f | %.2f |", num(p50), num(percentile(op.ms(s), 99)), p50/percentile(op.ms(first), 50),
					num(floor), floor/percentile(op.floorMs(first), 50), op.overFloor(s)/op.overFloor(first))
			}
			fmt.Fprintf(b, " %.1f | %d | %d |\n", float64(s.RSSKiB)/1024, s.FDs, s.Threads)
		}
	}
	if len(r.Sandboxes) > 0 {
		b.WriteString("\nA reconcile at N (ebpfnet reconcile), with a sandbox created and removed over and over while it runs; ms:\n\n" +
			"| N | reconcile | creates during it | their p50 | their longest | create p99 alone |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, s := range r.Sandboxes {
			fmt.Fprintf(b, "| %d | %s | %d | %s | %s | %s |\n", s.N, num(s.ReconcileMs), len(s.CreateDuringMs), num(percentile(s.CreateDuringMs, 50)),
				num(slices.Max(append([]float64{0}, s.CreateDuringMs...))), num(percentile(s.CreateMs, 99)))
		}
	}
	if r.SandboxesNote != "" {
		fmt.Fprintf(b, "\n%s\n", r.SandboxesNote)
	}
	dockerScaleTable(b, r)
	podsTable(b, r)
}

// scaleTarget: what's p50 at n (ms) within scaleGoal of its p50 at
// first (firstMs).
func scaleTarget(what string, n, first int, ms, firstMs []float64) target {
	x := percentile(ms, 50) / percentile(firstMs, 50)
	return target{fmt.Sprintf("%s with %d present, p50 ≤ %.1f× N=%d", what, n, scaleGoal, first),
		fmt.Sprintf("%s ms, %.2f×", num(percentile(ms, 50)), x), x <= scaleGoal}
}

// sandboxTargets: create and remove p50 at every N within scaleGoal of
// N=1; and, as the kernel's own work for a sandbox grows with the
// namespaces and interfaces there are (a floor under any control plane),
// their p50 over the kernel floor's within scaleGoal of the same at N=1:
// the control plane adds no more at N than at 1.
func (r Results) sandboxTargets() []target {
	if len(r.Sandboxes) < 2 {
		return nil
	}
	var out []target
	first := r.Sandboxes[0]
	for _, s := range r.Sandboxes[1:] {
		for _, op := range scaleOps {
			out = append(out, scaleTarget("sandbox "+op.what, s.N, first.N, op.ms(s), op.ms(first)))
			over := op.overFloor(s) / op.overFloor(first)
			out = append(out, target{fmt.Sprintf("sandbox %s with %d present, p50 over the kernel floor's ≤ %.1f× N=%d's", op.what, s.N, scaleGoal, first.N),
				fmt.Sprintf("%.2f× the floor, %.2f× N=%d's %.2f× (the floor itself %.2f× N=%d)", op.overFloor(s), over, first.N, op.overFloor(first),
					percentile(op.floorMs(s), 50)/percentile(op.floorMs(first), 50), first.N), over <= scaleGoal})
		}
	}
	return out
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// stat is the median and range of some samples.
type stat struct{ med, lo, hi float64 }

func summarize(vs []float64) stat {
	if len(vs) == 0 {
		return stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med, s[0], s[len(s)-1]}
}

// values picks one field of the samples of a dataplane, workload and N.
func (r Results) values(dp, workload string, n int, field func(Sample) float64) []float64 {
	var out []float64
	for _, s := range r.Samples {
		if s.Dataplane == dp && s.Workload == workload && s.N == n {
			out = append(out, field(s))
		}
	}
	return out
}

func (r Results) stat(dp, workload string, n int) stat {
	return summarize(r.values(dp, workload, n, func(s Sample) float64 { return s.Value }))
}

func p50(s Sample) float64 { return s.P50 }
func p99(s Sample) float64 { return s.P99 }

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func cell(s stat) string { return fmt.Sprintf("%s (%s–%s)", num(s.med), num(s.lo), num(s.hi)) }

func ratio(a, b stat) float64 {
	if b.med == 0 {
		return 0
	}
	return a.med / b.med
}

func markdown(r Results) string {
	var b strings.Builder
	if len(r.Dataplanes) == 0 { // a part alone (-dns-only, -balance-only…): no path's table
		fmt.Fprintf(&b, "%s; %d rounds of %s per measurement.\n", r.Env, r.Rounds, r.Duration)
		if len(r.DNS) > 0 {
			dnsTable(&b, r)
		}
		sourcesTable(&b, r)
		balanceTable(&b, r)
		egressTable(&b, r)
		timingsTable(&b, r)
		sandboxesTable(&b, r)
		writeTargets(&b, slices.Concat(r.sourcesTarget(), r.balanceTarget(), r.egressTarget(), r.controlTargets(), r.dnsTargets(), r.sandboxTargets(), r.dockerScaleTargets(), r.podsTargets()))
		return b.String()
	}
	fmt.Fprintf(&b, "%s; %d rounds of %s per measurement, interleaved across dataplanes; medians (min–max) and ratios to the no-NAT path of the same client (%s: to %s).\n\n", r.Env, r.Rounds, r.Duration, s2sName, plainBridge)
	b.WriteString("| dataplane | new connections/s | × | one TCP stream, Gbit/s | × | retransmits | keepalive round trips/s | × | p50 / p99 µs | UDP round trips/s | × | small UDP echoed/s | × |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, dp := range r.Dataplanes {
		conn, base := r.stat(dp.Name, "conn", 1), r.stat(dp.Baseline, "conn", 1)
		gbps, gbase := r.stat(dp.Name, "gbps", 1), r.stat(dp.Baseline, "gbps", 1)
		rr, rbase := r.stat(dp.Name, "rr", 1), r.stat(dp.Baseline, "rr", 1)
		udp, ubase := r.stat(dp.Name, "udp", 1), r.stat(dp.Baseline, "udp", 1)
		lat50 := summarize(r.values(dp.Name, "rr", 1, p50))
		lat99 := summarize(r.values(dp.Name, "rr", 1, p99))
		retrans := summarize(r.values(dp.Name, "gbps", 1, func(s Sample) float64 { return float64(s.Retransmits) }))
		pps, pbase := r.stat(dp.Name, "pps", 1), r.stat(dp.Baseline, "pps", 1)
		ppsCells := "– | –"
		if pps.med > 0 {
			ppsCells = fmt.Sprintf("%s | %.2f", cell(pps), ratio(pps, pbase))
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %s | %.2f | %.0f | %s | %.2f | %s / %s | %s | %.2f | %s |\n", dp.Name, cell(conn), ratio(conn, base),
			cell(gbps), ratio(gbps, gbase), retrans.med, cell(rr), ratio(rr, rbase), num(lat50.med), num(lat99.med), cell(udp), ratio(udp, ubase), ppsCells)
	}
	b.WriteString("\nRetransmits: TCP segments the iperf3 sender resent in one stream (median over rounds). Small UDP: 64-byte datagrams sent flat out for the whole measurement, echoes counted (from outside over IPv4 only). ebpfnet-xdp's client, on uplink2, sends complete checksums (transmit checksum offload off, and so no TSO), as a NIC's frames have them; ebpfnet-tc-nocsum is the same client on uplink3, which has TC alone: XDP against TC with one client.\n")
	s2sTable(&b, r)
	dnsTable(&b, r)
	ns := r.scale()
	b.WriteString("\nNew connections/s with N published ports (N sets of Docker's rules for iptables; the measured port's last):\n\n")
	b.WriteString("| N | iptables | × N=1 | ebpfnet-tc | × N=1 |\n| --- | --- | --- | --- | --- |\n")
	for _, n := range ns {
		ipt, ebp := r.stat("iptables", "conn", n), r.stat("ebpfnet-tc", "conn", n)
		fmt.Fprintf(&b, "| %d | %s | %.2f | %s | %.2f |\n", n, cell(ipt), ratio(ipt, r.stat("iptables", "conn", ns[0])),
			cell(ebp), ratio(ebp, r.stat("ebpfnet-tc", "conn", ns[0])))
	}
	sourcesTable(&b, r)
	balanceTable(&b, r)
	egressTable(&b, r)
	timingsTable(&b, r)
	sandboxesTable(&b, r)
	writeTargets(&b, r.targets())
	return b.String()
}

// s2sFigures are the workloads sandbox to sandbox is compared on.
var s2sFigures = []string{"conn", "gbps", "rr"}

var s2sFigureNames = map[string]string{
	"conn": "new connections/s",
	"gbps": "one TCP stream, Gbit/s",
	"rr":   "keepalive round trips/s",
}

// Comparison is one figure of a dataplane against its baseline: the
// medians over rounds and their ratio.
type Comparison struct {
	Dataplane     string  `json:"dataplane"`
	Baseline      string  `json:"baseline"`
	Workload      string  `json:"workload"`
	Value         float64 `json:"value"`
	BaselineValue float64 `json:"baselineValue"`
	Ratio         float64 `json:"ratio"`
}

// sandboxToSandbox compares ebpfnet's sandbox-to-sandbox path with the
// plain bridge; nil when the run measured neither.
func (r Results) sandboxToSandbox() []Comparison {
	var out []Comparison
	for _, w := range s2sFigures {
		v, base := r.stat(s2sName, w, 1), r.stat(plainBridge, w, 1)
		if v.med == 0 && base.med == 0 {
			continue
		}
		out = append(out, Comparison{s2sName, plainBridge, w, v.med, base.med, ratio(v, base)})
	}
	return out
}

// s2sTable writes the sandbox-to-sandbox comparison.
func s2sTable(b *strings.Builder, r Results) {
	if len(r.sandboxToSandbox()) == 0 {
		return
	}
	fmt.Fprintf(b, "\nSandbox to sandbox on one network: ebpfnet (%s, the sender's program redirects into the receiver's namespace) against the kernel's bridge alone "+
		"(%s: a namespace of its own, netfilter empty, br_netfilter off, two veth-connected namespaces), the same server and client; medians (min–max):\n\n", s2sName, plainBridge)
	fmt.Fprintf(b, "| figure | %s | %s | × |\n| --- | --- | --- | --- |\n", s2sName, plainBridge)
	for _, w := range s2sFigures {
		v, base := r.stat(s2sName, w, 1), r.stat(plainBridge, w, 1)
		fmt.Fprintf(b, "| %s | %s | %s | %.2f |\n", s2sFigureNames[w], cell(v), cell(base), ratio(v, base))
	}
	v50, v99 := summarize(r.values(s2sName, "rr", 1, p50)), summarize(r.values(s2sName, "rr", 1, p99))
	b50, b99 := summarize(r.values(plainBridge, "rr", 1, p50)), summarize(r.values(plainBridge, "rr", 1, p99))
	fmt.Fprintf(b, "| round trip p50 / p99 µs | %s / %s | %s / %s | |\n", num(v50.med), num(v99.med), num(b50.med), num(b99.med))
}

// timingsTable writes the control-plane timings at every N.
func timingsTable(b *strings.Builder, r Results) {
	if len(r.Timings) == 0 {
		return
	}
	ns := r.scale()
	b.WriteString("\nAdding and removing one published port with N present, ms (p50 / p99):\n\n| operation |")
	for _, n := range ns {
		fmt.Fprintf(b, " N=%d |", n)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --- |", len(ns)) + "\n")
	for _, what := range r.operations() {
		fmt.Fprintf(b, "| %s |", what)
		for _, n := range ns {
			if p50, p99, ok := r.timing(what, n); ok {
				fmt.Fprintf(b, " %s / %s |", num(p50), num(p99))
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "\nThe floor is what any durable change costs on this disk (two fsyncs), timed between ebpfnet's publish and unpublish; an inspect of the same sandbox is what a request costs without one.\n")
	if r.RSSKiB > 0 {
		fmt.Fprintf(b, "\nDaemon RSS with %d publications: %.1f MiB.\n", r.RSSAtN, float64(r.RSSKiB)/1024)
	}
}

func writeTargets(b *strings.Builder, ts []target) {
	b.WriteString("\nTargets:\n\n")
	for _, t := range ts {
		mark := "met"
		if !t.met {
			mark = "**missed**"
		}
		fmt.Fprintf(b, "- %s: %s (%s)\n", t.what, t.got, mark)
	}
}

// operations names the timed control operations, in the order first timed.
func (r Results) operations() []string {
	var out []string
	for _, t := range r.Timings {
		if !slices.Contains(out, t.What) {
			out = append(out, t.What)
		}
	}
	return out
}

// timing is the p50 and p99 of an operation timed with n present.
func (r Results) timing(what string, n int) (p50, p99 float64, ok bool) {
	for _, t := range r.Timings {
		if t.What == what && t.N == n && len(t.Ms) > 0 {
			return percentile(t.Ms, 50), percentile(t.Ms, 99), true
		}
	}
	return 0, 0, false
}

func (r Results) scale() []int {
	var ns []int
	for _, s := range r.Samples {
		if s.Dataplane == "ebpfnet-tc" && s.Workload == "conn" && !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	for _, t := range r.Timings {
		if t.What == commitFloorName && !slices.Contains(ns, t.N) {
			ns = append(ns, t.N)
		}
	}
	slices.Sort(ns)
	return ns
}

type target struct {
	what, got string
	met       bool
}

// targets checks the figures against the project's targets; nothing fails
// on a miss, the table says so.
func (r Results) targets() []target {
	var out []target
	cmp := func(what string, got, want float64) {
		out = append(out, target{what, fmt.Sprintf("%.2f×", got), got >= want})
	}
	cmp("client → published port, connections/s ≥ 1.0× direct", ratio(r.stat("ebpfnet-tc", "conn", 1), r.stat("direct", "conn", 1)), 1.0)
	cmp("client → published port, Gbit/s ≥ 1.0× direct", ratio(r.stat("ebpfnet-tc", "gbps", 1), r.stat("direct", "gbps", 1)), 1.0)
	cmp("host → 127.0.0.1:P, connections/s ≥ 2× docker-proxy", ratio(r.stat("ebpfnet-local", "conn", 1), r.stat("docker-proxy", "conn", 1)), 2.0)
	cmp("host → 127.0.0.1:P, connections/s ≥ 0.95× hostdirect", ratio(r.stat("ebpfnet-local", "conn", 1), r.stat("hostdirect", "conn", 1)), 0.95)
	if ns := r.scale(); len(ns) > 1 {
		n := ns[len(ns)-1]
		cmp(fmt.Sprintf("with %d publications, connections/s within 5%% of N=1", n), ratio(r.stat("ebpfnet-tc", "conn", n), r.stat("ebpfnet-tc", "conn", ns[0])), 0.95)
	}
	for _, c := range r.sandboxToSandbox() {
		cmp(fmt.Sprintf("sandbox → sandbox on one network, %s ≥ 1.0× the plain bridge", s2sFigureNames[c.Workload]), c.Ratio, 1.0)
	}
	out = append(out, r.sourcesTarget()...)
	out = append(out, r.balanceTarget()...)
	out = append(out, r.egressTarget()...)
	out = append(out, r.controlTargets()...)
	out = append(out, r.dnsTargets()...)
	out = append(out, r.sandboxTargets()...)
	out = append(out, r.dockerScaleTargets()...)
	out = append(out, r.podsTargets()...)
	if r.RSSKiB > 0 {
		mib := float64(r.RSSKiB) / 1024
		out = append(out, target{fmt.Sprintf("daemon RSS with %d publications < 64 MiB", r.RSSAtN), fmt.Sprintf("%.1f MiB", mib), mib < 64})
	}
	return out
}

// measuredN is the N that workload's samples measured against those at
// base (no list, one backend); 0: not measured.
func (r Results) measuredN(workload string, base int) int {
	for _, s := range r.Samples {
		if s.Workload == workload && s.N != base {
			return s.N
		}
	}
	return 0
}

// connWithinRun is a target of issues 26 and 29: what ebpfnet-tc's workload
// measured at n costs new connections nothing beyond the run's own range
// (within 5%) of base.
func (r Results) connWithinRun(what, workload string, n, base int) target {
	got := ratio(r.stat("ebpfnet-tc", workload, n), r.stat("ebpfnet-tc", workload, base))
	return target{what, fmt.Sprintf("%.2f×", got), got >= 0.95}
}

// controlTargets are issue 14's targets for publishing and unpublishing
// with the most publications present: a p99 within 1.5× of the floor's.
func (r Results) controlTargets() []target {
	ns := r.scale()
	if len(ns) == 0 {
		return nil
	}
	n := ns[len(ns)-1]
	_, floor, ok := r.timing(commitFloorName, n)
	if !ok {
		return nil
	}
	var out []target
	for _, what := range []string{"ebpfnet publish", "ebpfnet unpublish"} {
		if _, p99, ok := r.timing(what, n); ok {
			out = append(out, target{fmt.Sprintf("%s with %d present, p99 ≤ 1.5× the floor's (%s ms)", what, n, num(floor)),
				fmt.Sprintf("%s ms, %.2f×", num(p99), p99/floor), p99 <= 1.5*floor})
		}
	}
	return out
}

// write puts results.json, results.md and the charts in dir.
func write(r Results, dir string) error {
	r.SandboxToSandbox = r.sandboxToSandbox()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), data, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(r)), 0o644); err != nil || len(r.Dataplanes) == 0 {
		return err
	}
	if err := scalingChart(r, filepath.Join(dir, "connections-vs-n.png")); err != nil {
		return err
	}
	return latencyChart(r, filepath.Join(dir, "latency.png"))
}

func scalingChart(r Results, path string) error {
	p := plot.New()
	p.Title.Text = "New connections/s vs published ports"
	p.X.Label.Text = "N published ports (iptables: rule sets)"
	p.Y.Label.Text = "connections/s (median)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	var lines []any
	for _, dp := range []string{"iptables", "ebpfnet-tc"} {
		var pts plotter.XYs
		for _, n := range r.scale() {
			pts = append(pts, plotter.XY{X: float64(n), Y: r.stat(dp, "conn", n).med})
		}
		lines = append(lines, dp, pts)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	ns := r.scale()
	p.X.Min, p.X.Max = float64(ns[0])/2, float64(ns[len(ns)-1])*2 // a log axis needs a range
	p.Y.Min = 0
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

func latencyChart(r Results, path string) error {
	p := plot.New()
	p.Title.Text = "Keepalive request/response latency"
	p.Y.Label.Text = "µs (median over rounds)"
	var names []string
	var v50, v99 plotter.Values
	for _, dp := range r.Dataplanes {
		names = append(names, dp.Name)
		v50 = append(v50, summarize(r.values(dp.Name, "rr", 1, p50)).med)
		v99 = append(v99, summarize(r.values(dp.Name, "rr", 1, p99)).med)
	}
	w := vg.Points(14)
	b50, err := plotter.NewBarChart(v50, w)
	if err != nil {
		return err
	}
	b99, err := plotter.NewBarChart(v99, w)
	if err != nil {
		return err
	}
	b50.Color, b99.Color = plotutil.Color(0), plotutil.Color(1)
	b50.Offset, b99.Offset = -w/2, w/2
	p.Add(b50, b99)
	p.Legend.Add("p50", b50)
	p.Legend.Add("p99", b99)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(8*vg.Inch, 4*vg.Inch, path)
}

// dnsWorkloadNames are the DNS workloads as the table names them.
var dnsWorkloadNames = map[string]string{
	dnsNames:     "container names",
	dnsForwarded: "forwarded names, all new",
	dnsRepeated:  fmt.Sprintf("forwarded names, %d repeated", repeatedNames),
}

// dnsStat summarizes one field of the DNS samples of a server and
// workload, at full speed (fixed false) or at the fixed load.
func (r Results) dnsStat(server, workload string, fixed bool, field func(DNSSample) float64) stat {
	var vs []float64
	for _, s := range r.DNS {
		if s.Server == server && s.Workload == workload && (s.Offered > 0) == fixed {
			vs = append(vs, field(s))
		}
	}
	return summarize(vs)
}

func (r Results) dnsOffered(workload string) float64 {
	for _, s := range r.DNS {
		if s.Workload == workload && s.Offered > 0 {
			return s.Offered
		}
	}
	return 0
}

// dnsServers are the servers measured, ebpfnet first.
func (r Results) dnsServers() []string {
	var out []string
	for _, s := range r.DNS {
		if !slices.Contains(out, s.Server) {
			out = append(out, s.Server)
		}
	}
	return out
}

func qps(s DNSSample) float64     { return s.QPS }
func dnsP50(s DNSSample) float64  { return s.P50 }
func dnsP99(s DNSSample) float64  { return s.P99 }
func dnsCPU(s DNSSample) float64  { return s.CPUus }
func dnsLost(s DNSSample) float64 { return float64(s.Lost + s.Failed) }

func dnsTable(b *strings.Builder, r Results) {
	if len(r.DNS) == 0 {
		return
	}
	fmt.Fprintf(b, "\nEmbedded DNS at 127.0.0.11, asked by dnsperf (%d clients, %d outstanding) inside a sandbox (ebpfnet) or a container (dockerd) of a user-defined network, "+
		"forwarding to one upstream outside: first at full speed (capacity), then at a fixed load of half the lower capacity. "+
		"Only NOERROR answers count as answered; lost or failed is the median of a run at full speed plus one at the fixed load. "+
		"CPU is the answering process's utime+stime over the queries it answered, at full speed and at the fixed load (the targets' figure).\n\n", dnsClients, dnsOutstanding)
	if r.DNSNote != "" {
		fmt.Fprintf(b, "%s\n\n", r.DNSNote)
	}
	b.WriteString("| workload | server | capacity q/s | × dockerd | CPU µs/query | fixed load q/s | answered q/s | p50 / p99 µs | lost or failed | CPU µs/query | × dockerd |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, w := range dnsWorkloads {
		for _, server := range r.dnsServers() {
			capacity, fixed := r.dnsStat(server, w, false, qps), r.dnsStat(server, w, true, qps)
			cpu := r.dnsStat(server, w, true, dnsCPU)
			lost := r.dnsStat(server, w, false, dnsLost).med + r.dnsStat(server, w, true, dnsLost).med
			capX, cpuX := "–", "–"
			if server != "dockerd" && slices.Contains(r.dnsServers(), "dockerd") {
				capX = fmt.Sprintf("%.2f", ratio(capacity, r.dnsStat("dockerd", w, false, qps)))
				cpuX = fmt.Sprintf("%.2f", ratio(cpu, r.dnsStat("dockerd", w, true, dnsCPU)))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %.0f | %s | %s / %s | %.0f | %s | %s |\n", dnsWorkloadNames[w], server, cell(capacity), capX,
				num(r.dnsStat(server, w, false, dnsCPU).med), r.dnsOffered(w), cell(fixed), num(r.dnsStat(server, w, true, dnsP50).med), num(r.dnsStat(server, w, true, dnsP99).med),
				lost, num(cpu.med), cpuX)
		}
	}
}

// dnsTargets are issue 14's targets for the embedded DNS; the ones
// against Docker only with a real dockerd.
func (r Results) dnsTargets() []target {
	if len(r.DNS) == 0 {
		return nil
	}
	var out []target
	if slices.Contains(r.dnsServers(), "dockerd") {
		cpu := ratio(r.dnsStat("ebpfnet", dnsNames, true, dnsCPU), r.dnsStat("dockerd", dnsNames, true, dnsCPU))
		out = append(out, target{"DNS container names, server CPU per query ≤ 0.5× dockerd's", fmt.Sprintf("%.2f×", cpu), cpu > 0 && cpu <= 0.5})
		rep := ratio(r.dnsStat("ebpfnet", dnsRepeated, false, qps), r.dnsStat("dockerd", dnsRepeated, false, qps))
		out = append(out, target{"DNS forwarded repeated names, q/s ≥ 5× dockerd's", fmt.Sprintf("%.2f×", rep), rep >= 5})
	}
	p99 := r.dnsStat("ebpfnet", dnsNames, true, dnsP99).med
	out = append(out, target{"DNS container names, p99 < 1 ms at the fixed load", fmt.Sprintf("%.2f ms", p99/1000), p99 > 0 && p99 < 1000})
	return out
}

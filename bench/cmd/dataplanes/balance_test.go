package main

import (
	"strings"
	"testing"
)

// A balanced port's figures are its medians against one backend's, and a
// run of this part alone (no path's table) still shows them and the
// target.
func TestBalanceFigure(t *testing.T) {
	var r Results
	for i, v := range []struct {
		load string
		n    int
		vs   []float64
	}{{"conn", 1, []float64{1000, 900, 1100}}, {"conn", 3, []float64{800, 950, 1200}}, {"rr", 1, []float64{50000}}, {"rr", 3, []float64{45000}}} {
		for round, value := range v.vs {
			r.Samples = append(r.Samples, Sample{Dataplane: "ebpfnet-tc", Workload: balanced(v.load), N: v.n, Round: round + 1, Value: value})
		}
		if i == 0 { // samples of other stages
			r.Samples = append(r.Samples, Sample{Dataplane: "ebpfnet-tc", Workload: sourcesWorkload, N: 1000, Value: 1})
		}
	}
	if n := r.balanceBackends(); n != 3 {
		t.Fatalf("balanceBackends %d, want 3", n)
	}
	ts := r.balanceTarget()
	if len(ts) != 1 || ts[0].got != "0.95×" || !ts[0].met || !strings.Contains(ts[0].what, "3 backends") {
		t.Errorf("targets %+v, want 0.95× over 3 backends, met", ts)
	}
	md := markdown(r)
	for _, want := range []string{"| figure | one backend | 3 backends | × |", "| new connections/s | 1000 (900–1100) | 950 (800–1200) | 0.95 |",
		"| keepalive round trips/s | 50000 (50000–50000) | 45000 (45000–45000) | 0.90 |", "Docker cannot balance", "connections/s within 5% of one backend: 0.95× (met)"} {
		if !strings.Contains(md, want) {
			t.Errorf("the results have no %q:\n%s", want, md)
		}
	}
	if r.Samples = r.Samples[:1]; r.balanceBackends() != 0 || len(r.balanceTarget()) != 0 {
		t.Errorf("one backend alone: %d backends, targets %v", r.balanceBackends(), r.balanceTarget())
	}
}

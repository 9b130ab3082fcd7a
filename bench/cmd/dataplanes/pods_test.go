package main

import (
	"strings"
	"testing"
)

// The figure is ebpfnet's median against bridge + portmap's with the
// most pods present, whatever the order the sides were sampled in.
func TestPodsFigure(t *testing.T) {
	r := Results{Pods: []PodSample{
		{podsEbpfnet, 1, []float64{300, 100, 200}}, {podsPortmap, 1, []float64{100, 100}},
		{podsEbpfnet, 200, []float64{150, 100, 900}}, {podsPortmap, 200, []float64{600}},
	}}
	ts := r.podsTargets()
	if len(ts) != 1 || ts[0].got != "0.25×" || !ts[0].met || !strings.Contains(ts[0].what, "200 pods") {
		t.Errorf("targets %+v, want 0.25× with 200 pods, met", ts)
	}
	var b strings.Builder
	podsTable(&b, r)
	for _, want := range []string{"| 1 | 200 (100–300) | 1.00 | 100 (100–100) | 1.00 | 2.00 |", "| 200 | 150 (100–900) | 0.75 | 600 (600–600) | 6.00 | 0.25 |",
		"with 200 pods present, ebpfnet creates a pod in 0.25× the time"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, b.String())
		}
	}
	r.Pods = nil
	r.PodsNote = "pods are not measured"
	b.Reset()
	if podsTable(&b, r); !strings.Contains(b.String(), r.PodsNote) || len(r.podsTargets()) != 0 {
		t.Errorf("without pods: %q, targets %v", b.String(), r.podsTargets())
	}
}

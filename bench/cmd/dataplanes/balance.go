package main

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Balanced ports: new connections/s and keepalive round trips to a port
// published with --balance by N sandboxes, against the same port published
// by web alone without it, as the bed has it. A balanced flow's first
// packet picks its backend in the port's Maglev table; its others follow
// conntrack, as any published flow's do. ebpfnet alone: Docker refuses a
// second container on a published host port, so it has no column.
const balanceWorkload = "balance"

// balanceLoads are the workloads measured on a balanced port; a sample's
// workload is theirs and balanceWorkload's (balanced).
var balanceLoads = []string{"conn", "rr"}

func balanced(load string) string { return load + "-" + balanceWorkload }

// measureBalance samples ebpfnet-tc with its port published by web alone
// (N 1) and balanced over n sandboxes, each with the bed's echo server,
// rounds times, interleaved.
func (b *bed) measureBalance(n, rounds int, d time.Duration) []Sample {
	client := api.NewClient(b.h.Socket())
	published := api.PortMapping{Proto: ports.TCP, HostPort: ebpfPort, Port: echoPort}
	b.setPublications(1)
	backends := []string{b.web}
	for i := 2; i <= n; i++ {
		name := b.h.Name(fmt.Sprintf("web%d", i))
		b.h.MustCLI("sandbox", "create", name, "--network", b.network)
		b.servers(name)
		backends = append(backends, name)
	}
	time.Sleep(300 * time.Millisecond) // the servers start listening
	publishing := 1                    // web, as the bed published it
	set := func(k int) {
		ctx := context.Background()
		for _, sb := range backends[:publishing] {
			if _, err := client.Unpublish(ctx, sb, []api.PortMapping{{Proto: ports.TCP, HostPort: ebpfPort}}); err != nil {
				b.r.Fatalf("unpublish %d of %s: %v", ebpfPort, sb, err)
			}
		}
		publishing = 0
		for _, sb := range backends[:k] {
			if _, err := client.Publish(ctx, sb, api.Ports{Mappings: []api.PortMapping{published}, Balance: k > 1}); err != nil {
				b.r.Fatalf("publish %d on %s (balance %t): %v", ebpfPort, sb, k > 1, err)
			}
			publishing++
		}
	}
	dp := b.dataplane("ebpfnet-tc")
	var out []Sample
	for round := 1; round <= rounds; round++ {
		for _, k := range []int{1, n} {
			set(k)
			for _, load := range balanceLoads {
				s := b.sample(dp, load, k, round, d)
				s.Workload = balanced(load)
				out = append(out, s)
			}
		}
	}
	// Logged because a backend that took no flow would make the figure
	// one backend's again. A backend's count goes with its publication:
	// these are the last round's.
	var spread []string
	for _, f := range b.h.Status().BackendFlows {
		spread = append(spread, fmt.Sprintf("%s %d", f.Sandbox, f.Flows))
	}
	set(1)
	log.Printf("a port balanced over %d backends done; the new flows status counted for each in the last round: %s", n, strings.Join(spread, ", "))
	return out
}

// balanceTable writes the balanced port's samples: medians and the ratio
// of N backends to one.
func balanceTable(b *strings.Builder, r Results) {
	n := r.balanceBackends()
	if n == 0 {
		return
	}
	fmt.Fprintf(b, "\nA port published with --balance by %d sandboxes (ebpfnet-tc's client; new flows spread by Maglev), against the same port published by one without it. "+
		"ebpfnet alone: Docker cannot balance a published port (a second container on its host port is refused).\n\n", n)
	fmt.Fprintf(b, "| figure | one backend | %d backends | × |\n| --- | --- | --- | --- |\n", n)
	for _, load := range balanceLoads {
		one, many := r.stat("ebpfnet-tc", balanced(load), 1), r.stat("ebpfnet-tc", balanced(load), n)
		fmt.Fprintf(b, "| %s | %s | %s | %.2f |\n", s2sFigureNames[load], cell(one), cell(many), ratio(many, one))
	}
}

// balanceBackends is how many backends the run's balanced port had; 0:
// not measured.
func (r Results) balanceBackends() int { return r.measuredN(balanced("conn"), 1) }

// balanceTarget is issue 26's: balancing costs new connections nothing
// beyond the run's own range (within 5%).
func (r Results) balanceTarget() []target {
	n := r.balanceBackends()
	if n == 0 {
		return nil
	}
	return []target{r.connWithinRun(fmt.Sprintf("a port balanced over %d backends, connections/s within 5%% of one backend", n), balanced("conn"), n, 1)}
}

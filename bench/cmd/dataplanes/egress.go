package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// Egress lists: new connections/s and keepalive round trips from web to
// a server outside, masqueraded, with an egress list of N prefixes (the
// server's written last) against none. Every packet web sends is checked
// in one LPM lookup of its address and the destination. ebpfnet alone:
// Docker has no egress lists (users write DOCKER-USER rules by hand).
const egressWorkload = "egress"

// egressLoads are the workloads measured from web out; a sample's
// workload is theirs and egressWorkload's.
var egressLoads = []string{"conn", "rr"}

func egressed(load string) string { return load + "-" + egressWorkload }

// egressServer is the outside's address web's client reaches: the echo
// server runs in the outside's namespace for this stage alone.
const egressServer = clientDirect

// measureEgress samples web's client to the outside's echo server without
// an egress list (N 0) and with n prefixes, rounds times, interleaved.
func (b *bed) measureEgress(n, rounds int, d time.Duration) []Sample {
	client := api.NewClient(b.h.Socket())
	web := filepath.Base(b.h.NS(b.web))
	// web's client opens tens of thousands of connections a run to one
	// server port: without reuse its TIME_WAIT sockets run out of ports.
	b.sh("ip", "netns", "exec", web, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=4096")
	b.servers(b.out)
	time.Sleep(300 * time.Millisecond) // the servers start listening
	var rules []string
	for _, p := range allowPrefixes(n, egressServer) {
		rules = append(rules, p.String())
	}
	set := func(on bool) {
		list := []string{}
		if on {
			list = rules
		}
		if _, err := client.UpdateSandbox(context.Background(), b.web, api.SandboxUpdate{EgressAllow: &list}); err != nil {
			b.r.Fatalf("update the egress list of %s (%d rules): %v", b.web, len(list), err)
		}
	}
	// Labelled ebpfnet-tc, the dataplane whose figures the targets read,
	// under workloads of their own.
	dp := dataplane{Name: "ebpfnet-tc", Baseline: "ebpfnet-tc", ns: web, host: egressServer, port: echoPort}
	var out []Sample
	for round := 1; round <= rounds; round++ {
		for _, on := range []bool{false, true} {
			set(on)
			for _, load := range egressLoads {
				s := b.sample(dp, load, 0, round, d)
				s.Workload = egressed(load)
				if on {
					s.N = n
				}
				out = append(out, s)
			}
		}
	}
	set(false)
	log.Printf("egress lists of %d prefixes done", n)
	return out
}

// egressTable writes the egress list's samples: medians and the ratio of
// N prefixes to none.
func egressTable(b *strings.Builder, r Results) {
	n := r.egressPrefixes()
	if n == 0 {
		return
	}
	fmt.Fprintf(b, "\nFrom a sandbox out to a server outside (masqueraded), with an egress list of %d prefixes (the server's written last) against none. "+
		"ebpfnet alone: Docker has no egress lists.\n\n", n)
	b.WriteString("| figure | no list | with the list | × |\n| --- | --- | --- | --- |\n")
	for _, load := range egressLoads {
		none, with := r.stat("ebpfnet-tc", egressed(load), 0), r.stat("ebpfnet-tc", egressed(load), n)
		fmt.Fprintf(b, "| %s | %s | %s | %.2f |\n", s2sFigureNames[load], cell(none), cell(with), ratio(with, none))
	}
}

// egressPrefixes is how many prefixes the run's egress list held; 0: not
// measured.
func (r Results) egressPrefixes() int { return r.measuredN(egressed("conn"), 0) }

// egressTarget is issue 29's: the list costs new connections nothing
// beyond the run's own range (within 5%).
func (r Results) egressTarget() []target {
	n := r.egressPrefixes()
	if n == 0 {
		return nil
	}
	return []target{r.connWithinRun(fmt.Sprintf("from a sandbox with %d egress prefixes, connections/s within 5%% of no list", n), egressed("conn"), n, 0)}
}

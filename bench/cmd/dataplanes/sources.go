package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"strings"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Source lists: new connections/s to a published port allowed to N
// prefixes, the client's the last written, against the same port with no
// list. ebpfnet checks a flow's first packet in one LPM lookup; Docker's
// column has the same prefixes as the DOCKER-USER rules users write (a
// RETURN per prefix after one for established flows, then a DROP of the
// rest from the uplink), which every new flow's packets walk.
const sourcesWorkload = "conn-sources"

// allowPrefixes are n prefixes: n-1 /24s of 100.64.0.0/10 (no client's),
// then client's /32.
func allowPrefixes(n int, client string) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for i := range n - 1 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>8), byte(i), 0}), 24))
	}
	return append(out, netip.PrefixFrom(netip.MustParseAddr(client), 32))
}

// measureSourceLists samples iptables and ebpfnet-tc without lists (N 0)
// and with n prefixes, rounds times, interleaved.
func (b *bed) measureSourceLists(n, rounds int, d time.Duration) []Sample {
	client := api.NewClient(b.h.Socket())
	published := api.PortMapping{Proto: ports.TCP, HostPort: ebpfPort, Port: echoPort}
	b.setIptables(1)
	b.setPublications(1)
	set := func(on bool) {
		ctx := context.Background()
		if on {
			if _, err := client.Publish(ctx, b.web, api.Ports{Mappings: []api.PortMapping{published},
				Sources: api.Sources{Allow: allowPrefixes(n, clientTC)}}); err != nil {
				b.r.Fatalf("publish with %d allowed prefixes: %v", n, err)
			}
			rules, err := dockerUserAllow(b.docker.rules, allowPrefixes(n, clientIPT))
			if err != nil {
				b.r.Fatalf("%v", err)
			}
			b.restore(rules)
			return
		}
		// No list: published again without one (its flows end with it).
		if _, err := client.Unpublish(ctx, b.web, []api.PortMapping{{Proto: ports.TCP, HostPort: ebpfPort}}); err != nil {
			b.r.Fatalf("unpublish %d: %v", ebpfPort, err)
		}
		if _, err := client.Publish(ctx, b.web, api.Ports{Mappings: []api.PortMapping{published}}); err != nil {
			b.r.Fatalf("publish %d: %v", ebpfPort, err)
		}
		b.restore(b.docker.rules)
	}
	var out []Sample
	for round := 1; round <= rounds; round++ {
		for _, on := range []bool{false, true} {
			set(on)
			for _, dp := range b.dataplanes() {
				if dp.Name == "iptables" || dp.Name == "ebpfnet-tc" {
					s := b.sample(dp, "conn", 1, round, d)
					s.Workload, s.N = sourcesWorkload, 0
					if on {
						s.N = n
					}
					out = append(out, s)
				}
			}
		}
	}
	set(false)
	log.Printf("source lists of %d prefixes done", n)
	return out
}

// dockerUserAllow is rules (iptables-save's nat and filter tables) with the
// DOCKER-USER rules that let prefixes alone reach Docker's published ports
// from uplink1, before the chain's last rule.
func dockerUserAllow(rules string, prefixes []netip.Prefix) (string, error) {
	var allow strings.Builder
	fmt.Fprintf(&allow, "-A DOCKER-USER -i uplink1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n")
	for _, p := range prefixes {
		fmt.Fprintf(&allow, "-A DOCKER-USER -i uplink1 -s %s -j RETURN\n", p)
	}
	fmt.Fprintf(&allow, "-A DOCKER-USER -i uplink1 -j DROP\n")
	var out strings.Builder
	for line := range strings.Lines(rules) {
		if strings.HasPrefix(line, "-A DOCKER-USER -j RETURN") {
			out.WriteString(allow.String())
			allow.Reset()
		}
		if line == "COMMIT\n" && allow.Len() > 0 && strings.Contains(out.String(), ":DOCKER-USER") {
			out.WriteString(allow.String()) // a chain with no RETURN of its own
			allow.Reset()
		}
		out.WriteString(line)
	}
	if allow.Len() > 0 {
		return "", fmt.Errorf("no DOCKER-USER chain in Docker's rules to put a source list in")
	}
	return out.String(), nil
}

// sourcesTable writes the source lists' samples: medians and the ratio of
// N prefixes to none.
func sourcesTable(b *strings.Builder, r Results) {
	n := r.sourcePrefixes()
	if n == 0 {
		return
	}
	fmt.Fprintf(b, "\nNew connections/s to a published port allowed to %d prefixes (the client's written last), against the port with no list; iptables: the same prefixes as DOCKER-USER rules:\n\n", n)
	b.WriteString("| dataplane | no list | with the list | × |\n| --- | --- | --- | --- |\n")
	for _, dp := range []string{"iptables", "ebpfnet-tc"} {
		none, with := r.stat(dp, sourcesWorkload, 0), r.stat(dp, sourcesWorkload, n)
		fmt.Fprintf(b, "| %s | %s | %s | %.2f |\n", dp, cell(none), cell(with), ratio(with, none))
	}
}

// sourcePrefixes is how many prefixes the run's lists held; 0: none.
func (r Results) sourcePrefixes() int { return r.measuredN(sourcesWorkload, 0) }

// sourcesTarget is issue 26's: the lists cost new connections nothing
// beyond the run's own range (within 5%).
func (r Results) sourcesTarget() []target {
	n := r.sourcePrefixes()
	if n == 0 {
		return nil
	}
	return []target{r.connWithinRun(fmt.Sprintf("with %d allowed prefixes, connections/s within 5%% of no list", n), sourcesWorkload, n, 0)}
}

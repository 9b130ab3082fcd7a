package bench

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// BenchmarkDNS measures the embedded DNS server from inside a sandbox:
// concurrent UDP clients ask for another sandbox's name (answered locally)
// or for a name the upstream answers (forwarded from the host's namespace).
// It reports queries per second and latency percentiles.
func BenchmarkDNS(b *testing.B) {
	var out testbed.Outside
	h := testbed.NewHostWith(b, func(h *testbed.Host) { out = h.AddOutside() })
	testbed.ServeDNS(b, out.NS, testbed.UpstreamDNS+":53", dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		resp := new(dns.Msg).SetReply(q)
		resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 10)})
		w.WriteMsg(resp)
	}))
	app, web, cl := h.Name("app"), h.Name("web"), h.Name("cl")
	h.MustCLI("network", "create", app)
	h.MustCLI("sandbox", "create", web, "--network", app)
	h.MustCLI("sandbox", "create", cl, "--network", app)
	for _, c := range []struct{ name, qname string }{{"local", web}, {"forwarded", "outside.test"}} {
		b.Run(c.name, func(b *testing.B) { queries(b, h.NS(cl), dns.Fqdn(c.qname)) })
	}
}

const clients = 8

func queries(b *testing.B, ns, qname string) {
	conns := make([]*dns.Conn, clients)
	err := namespace.Do(ns, func() error {
		for i := range conns {
			c, err := dns.DialTimeout("udp", "127.0.0.11:53", time.Second)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  int
		wg        sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for i, c := range conns {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			mine := make([]time.Duration, 0, n)
			for range n {
				q := new(dns.Msg).SetQuestion(qname, dns.TypeA)
				t0 := time.Now()
				c.SetDeadline(t0.Add(2 * time.Second))
				err := c.WriteMsg(q)
				var resp *dns.Msg
				if err == nil {
					resp, err = c.ReadMsg()
				}
				if err != nil || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 {
					mu.Lock()
					failures++
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failures > 0 {
		b.Fatalf("%d of %d queries failed", failures, b.N)
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 { return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

package test

import (
	"context"
	"net"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// scrape reads the daemon's Prometheus metrics from its API socket.
func scrape(t *testing.T, h *testbed.Host) map[string]*dto.MetricFamily {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.Socket())
	}}}
	resp, err := c.Get("http://ebpfnet/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return families
}

// value sums a family's samples whose labels include want.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	f := families[name]
	if f == nil {
		return 0
	}
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// The metrics move with traffic: conntrack entries by state and
// protocol, NAT ports in use on the uplink, the embedded DNS's answers,
// and how long publishing takes.
func TestMetrics(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	app := h.Name("app")
	h.MustCLI("network", "create", app)
	web, asker := h.Name("web"), h.Name("asker")
	h.MustCLI("sandbox", "create", web, "--network", app, "-p", "8080:7777")
	h.MustCLI("sandbox", "create", asker, "--network", app)
	testbed.Serve(t, h.NS(web))
	before := scrape(t, h)

	// A masqueraded connection held open, a published flow, a name asked.
	held, err := testbed.Dial(h.NS(web), "tcp", net.JoinHostPort(out.IP, "7777"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	mustWork(t, "outside to the published port", testbed.TCPTo(out.NS, out.HostIP+":8080"))
	if o, err := h.CLI("exec", asker, "--", "busybox", "nslookup", web, "127.0.0.11"); err != nil {
		t.Fatalf("nslookup %s: %v\n%s", web, err, o)
	}
	h.MustCLI("publish", "8081:7777", web)
	h.MustCLI("unpublish", "8081", web)
	after := scrape(t, h)

	for _, c := range []struct {
		what   string
		name   string
		labels map[string]string
		min    float64 // the least the metric must have grown by
	}{
		{"established TCP entries", "ebpfnet_conntrack_entries", map[string]string{"proto": "tcp", "table": "ct", "state": "tcp_established"}, 2},
		{"NAT ports in use on the uplink", "ebpfnet_nat_ports_in_use", map[string]string{"uplink": "uplink0", "address": out.HostIP}, 1},
		{"local DNS answers", "ebpfnet_dns_queries_total", map[string]string{"outcome": "local"}, 1},
		{"publish timings", "ebpfnet_port_change_seconds", map[string]string{"operation": "publish"}, 1},
		{"unpublish timings", "ebpfnet_port_change_seconds", map[string]string{"operation": "unpublish"}, 1},
		{"translated packets", "ebpfnet_packets_total", map[string]string{"program": "uplink", "verdict": "dnat"}, 1},
	} {
		if grew := value(after, c.name, c.labels) - value(before, c.name, c.labels); grew < c.min {
			t.Errorf("%s: %s%v grew by %v, want at least %v", c.what, c.name, c.labels, grew, c.min)
		}
	}
	if after["ebpfnet_conntrack_reclaimed_total"] == nil || after["ebpfnet_dns_cache_entries"] == nil {
		t.Error("ebpfnet_conntrack_reclaimed_total or ebpfnet_dns_cache_entries is missing")
	}
	// The daemon's own health, which a soak watches for leaks.
	for _, name := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
		if value(after, name, nil) <= 0 {
			t.Errorf("%s is missing or zero", name)
		}
	}
}

package test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// The bandwidth tests' limit, and how close to it a TCP stream must come.
const (
	limitBits     = 50e6
	limitLow      = 0.90
	limitHigh     = 1.02
	iperfPort     = 5201
	iperfFreePort = 5202
	// A policer passes a TCP stream's bytes in bursts a retransmission
	// timeout apart (desired.BurstTime): a window of a few seconds holds
	// one burst more or less, which is a few percent.
	iperfTime      = 9 * time.Second
	iperfShortTime = 9 * time.Second
)

// iperfRate runs one stream from (or, reverse, to) the sandbox at ns and
// the outside's iperf3 server on port.
func iperfRate(t testing.TB, ns, server string, port int, d time.Duration, reverse bool) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+20*time.Second)
	defer cancel()
	bps, err := testbed.Iperf(ctx, ns, server, port, d, reverse)
	if err != nil {
		t.Fatal(err)
	}
	return bps
}

// checkNearLimit fails unless bps is within limitLow..limitHigh of limit.
func checkNearLimit(t *testing.T, what string, bps, limit float64) {
	t.Helper()
	t.Logf("%s: %.1f Mbit/s, %.1f%% of %.0f Mbit/s", what, bps/1e6, 100*bps/limit, limit/1e6)
	if r := bps / limit; r < limitLow || r > limitHigh {
		t.Errorf("%s: %.1f Mbit/s is %.1f%% of the %.0f Mbit/s limit, want %.0f-%.0f%%", what, bps/1e6, 100*r, limit/1e6, 100*limitLow, 100*limitHigh)
	}
}

// TestBandwidthLimit limits a sandbox to 50 Mbit/s each way: one TCP
// stream (iperf3) to and from the outside gets 90-102% of it while an
// unlimited sandbox's stream at the same time is not slowed; the limits
// change live through the API, survive a kill -9 of the daemon, and
// reconcile rebuilds their map entries.
func TestBandwidthLimit(t *testing.T) {
	h, out := newPublishingHost(t)
	lim, free := h.Name("lim"), h.Name("free")
	h.MustCLI("sandbox", "create", lim, "--egress-rate", "50mbit", "--ingress-rate", "50mbit")
	h.MustCLI("sandbox", "create", free)
	if bw := h.Sandbox(lim).HostConfig.Bandwidth; bw != (api.Bandwidth{EgressRate: 50e6, IngressRate: 50e6}) {
		t.Errorf("inspect shows bandwidth %+v", bw)
	}
	testbed.IperfServer(t, out.NS, iperfPort)
	testbed.IperfServer(t, out.NS, iperfFreePort)

	for _, reverse := range []bool{false, true} {
		what := map[bool]string{false: "egress", true: "ingress"}[reverse]
		before := h.Counter("drop_rate_limit")
		var freeBits float64
		var wg sync.WaitGroup
		wg.Go(func() { freeBits = iperfRate(t, h.NS(free), out.IP, iperfFreePort, iperfTime, reverse) })
		limited := iperfRate(t, h.NS(lim), out.IP, iperfPort, iperfTime, reverse)
		wg.Wait()
		checkNearLimit(t, what+" of the limited sandbox", limited, limitBits)
		t.Logf("%s of the unlimited sandbox at the same time: %.1f Mbit/s", what, freeBits/1e6)
		if freeBits < 3*limitBits {
			t.Errorf("%s of the unlimited sandbox: %.1f Mbit/s, want far more than the other's limit", what, freeBits/1e6)
		}
		if h.Counter("drop_rate_limit") == before {
			t.Errorf("%s: no packet counted as drop_rate_limit", what)
		}
	}

	// Live, by sandbox update: the next stream gets the new limit.
	h.MustCLI("sandbox", "update", lim, "--egress-rate", "20mbit", "--ingress-rate", "30mbit")
	if bw := h.Sandbox(lim).HostConfig.Bandwidth; bw != (api.Bandwidth{EgressRate: 20e6, IngressRate: 30e6}) {
		t.Fatalf("after sandbox update, inspect shows %+v", bw)
	}
	checkNearLimit(t, "egress after a change to 20 Mbit/s", iperfRate(t, h.NS(lim), out.IP, iperfPort, iperfShortTime, false), 20e6)
	checkNearLimit(t, "ingress after a change to 30 Mbit/s", iperfRate(t, h.NS(lim), out.IP, iperfPort, iperfShortTime, true), 30e6)
	ctx := context.Background()
	if _, err := h.Client.UpdateSandbox(ctx, lim, api.SandboxUpdate{Bandwidth: &api.Bandwidth{EgressBurst: 1000}}); err == nil {
		t.Error("a burst without a rate was taken")
	}
	if bw := h.Sandbox(lim).HostConfig.Bandwidth; bw != (api.Bandwidth{EgressRate: 20e6, IngressRate: 30e6}) {
		t.Errorf("after a refused change, inspect shows %+v", bw)
	}

	// A kill -9, and the limits' entries lost while the daemon is down:
	// the records keep them, and the start's reconcile writes them again.
	h.Stop(syscall.SIGKILL)
	emptyPinnedMap(t, filepath.Join(h.BPFFS(), "rate_limits"))
	h.Start()
	if bw := h.Sandbox(lim).HostConfig.Bandwidth; bw != (api.Bandwidth{EgressRate: 20e6, IngressRate: 30e6}) {
		t.Errorf("after a kill -9, inspect shows %+v", bw)
	}
	checkNearLimit(t, "egress after a kill -9", iperfRate(t, h.NS(lim), out.IP, iperfPort, iperfShortTime, false), 20e6)

	// No limits: the sandbox is as free as the other.
	h.MustCLI("sandbox", "update", lim, "--egress-rate", "0", "--ingress-rate", "0")
	if bps := iperfRate(t, h.NS(lim), out.IP, iperfPort, 2*time.Second, false); bps < 3*limitBits {
		t.Errorf("without limits: %.1f Mbit/s", bps/1e6)
	}
}

// emptyPinnedMap deletes every entry of the pinned map at path.
func emptyPinnedMap(t *testing.T, path string) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var (
		k    bpf.DatapathRateKey
		keys []bpf.DatapathRateKey
	)
	for it := m.Iterate(); it.Next(&k, new(bpf.DatapathRateLimit)); {
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		t.Fatalf("%s holds no entry to lose", path)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBandwidthBadValues: a bad rate or size is refused in one line that
// names it, and changes nothing.
func TestBandwidthBadValues(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	for args, want := range map[string][]string{
		`invalid egress rate "50"`:                      {"--egress-rate", "50"},
		`invalid ingress rate "1gbt"`:                   {"--ingress-rate", "1gbt"},
		`invalid burst "lots"`:                          {"--egress-rate", "1mbit", "--burst", "lots"},
		"--burst needs --egress-rate or --ingress-rate": {"--burst", "64kb"},
	} {
		out, err := h.CLI(append([]string{"sandbox", "create", h.Name("bad")}, want...)...)
		if err == nil || !containsLine(out, args) {
			t.Errorf("%v: %v\n%s", want, err, out)
		}
	}
	if names := sandboxNames(t, h); len(names) != 0 {
		t.Errorf("sandboxes after refusals: %v", names)
	}
}

// containsLine reports whether out has a line holding s.
func containsLine(out, s string) bool {
	return slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.Contains(l, s) })
}

// TestCNIBandwidth: the bandwidth capability limits a container in main
// and chained mode (after the reference bridge plugin), as the reference
// bandwidth plugin would, which ebpfnet replaces.
func TestCNIBandwidth(t *testing.T) {
	h, out := newPublishingHost(t)
	testbed.IperfServer(t, out.NS, iperfPort)
	c := newCNI(t)
	c.Spec = "1.0.0" // the newest Debian's reference plugins speak
	h.MustCLI("network", "create", "--subnet", "10.96.0.0/24", h.Name("cninet"))
	caps := map[string]bool{"portMappings": true, "bandwidth": true}
	c.Conflist("main", map[string]any{"type": "ebpfnet", "network": h.Name("cninet"), "socket": h.Socket(), "capabilities": caps})
	chained := chainedPlugins(t, h)
	chained[1]["capabilities"] = caps
	c.Conflist("chained", chained...)
	c.In = filepath.Base(h.NetNS) // the bridge plugin builds in the namespace it runs in
	// 50 Mbit/s each way, bursts in bits as runtimes give them.
	bandwidth := func(bits int) string {
		data, _ := json.Marshal(map[string]any{"bandwidth": map[string]int{
			"ingressRate": limitBits, "ingressBurst": bits, "egressRate": limitBits, "egressBurst": bits}})
		return "CAP_ARGS=" + string(data)
	}
	for _, network := range []string{"main", "chained"} {
		t.Run(network, func(t *testing.T) {
			ns := containerNS(t, h, network)
			c.Must("add", network, ns, bandwidth(0))
			defer c.Run("del", network, ns)
			names := sandboxNames(t, h)
			if len(names) != 1 {
				t.Fatalf("sandboxes %v", names)
			}
			if bw := h.Sandbox(names[0]).HostConfig.Bandwidth; bw != (api.Bandwidth{EgressRate: limitBits, IngressRate: limitBits}) {
				t.Errorf("inspect shows %+v", bw)
			}
			// CHECK finds the limits, and finds them lost.
			c.Must("check", network, ns)
			emptyPinnedMap(t, filepath.Join(h.BPFFS(), "rate_limits"))
			if msg, err := c.Run("check", network, ns); err == nil || !strings.Contains(msg, "lost the bandwidth limits") {
				t.Errorf("CHECK with the limits lost: %v %s", err, msg)
			}
			h.MustCLI("reconcile")
			c.Must("check", network, ns)
			checkNearLimit(t, network+" egress", iperfRate(t, ns, out.IP, iperfPort, iperfShortTime, false), limitBits)
			checkNearLimit(t, network+" ingress", iperfRate(t, ns, out.IP, iperfPort, iperfShortTime, true), limitBits)
			c.Must("del", network, ns)
			assertNothingLeft(t, h, "after DEL")
		})
	}
	// The reference plugin's own check, kept: a burst without a rate.
	ns := containerNS(t, h, "bad")
	if msg, err := c.Run("add", "main", ns, `CAP_ARGS={"bandwidth":{"egressBurst":8000}}`); err == nil || !strings.Contains(msg, "egress burst 1000 bytes without an egress rate") {
		t.Errorf("ADD with a burst and no rate: %v %s", err, msg)
	}
	assertNothingLeft(t, h, "after a refused ADD")
}

// BenchmarkBandwidthAgainstReference (make bench) measures a sandbox
// limited by ebpfnet and a container limited by the reference bandwidth
// plugin (TBF, and IFB for egress) after the reference bridge, each at 50
// Mbit/s each way, under one iperf3 stream: the stream's rate, and the
// round trips of a UDP echo every 10 ms beside it (p50, p99, lost); then
// the CPU the whole machine spent per Gbit/s at 200 Mbit/s.
func BenchmarkBandwidthAgainstReference(b *testing.B) {
	t := b // one run, whatever b.N: the figures are logged
	h, out := newPublishingHost(t)
	testbed.IperfServer(t, out.NS, iperfPort)
	lim := h.Name("lim")
	h.MustCLI("sandbox", "create", lim, "--egress-rate", "50mbit", "--ingress-rate", "50mbit")
	c := newCNI(t)
	c.Spec = "1.0.0"
	c.In = filepath.Base(h.NetNS)
	c.Conflist("ref", chainedPlugins(t, h)[0], map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	ref := containerNS(t, h, "ref")
	// The reference plugin's bursts are in bits; both get ebpfnet's
	// default burst for 50 Mbit/s.
	refAdd := func(bits int) {
		data, _ := json.Marshal(map[string]any{"bandwidth": map[string]int{
			"ingressRate": bits, "ingressBurst": 8 * 128 << 10, "egressRate": bits, "egressBurst": 8 * 128 << 10}})
		c.Must("add", "ref", ref, "CAP_ARGS="+string(data))
	}
	refAdd(limitBits)
	defer c.Run("del", "ref", ref)
	sides := []struct{ name, ns string }{{"ebpfnet", h.NS(lim)}, {"bandwidth plugin", ref}}
	for _, side := range sides {
		for _, reverse := range []bool{false, true} {
			var bps float64
			var wg sync.WaitGroup
			wg.Go(func() { bps = iperfRate(t, side.ns, out.IP, iperfPort, 6*time.Second, reverse) })
			time.Sleep(1500 * time.Millisecond)
			rtts, lost, err := testbed.EchoRTTs(side.ns, out.IP+":7777", 300, 10*time.Millisecond)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-16s %-7s under load: %5.1f Mbit/s; UDP echo round trip p50 %v, p99 %v, %d of 300 lost",
				side.name, map[bool]string{false: "egress", true: "ingress"}[reverse], bps/1e6,
				testbed.Percentile(rtts, 50), testbed.Percentile(rtts, 99), lost)
		}
	}

	// CPU per Gbit/s at 200 Mbit/s: the whole machine's busy time while
	// one stream runs each way, over the bits it carried.
	h.MustCLI("sandbox", "update", lim, "--egress-rate", "200mbit", "--ingress-rate", "200mbit")
	c.Must("del", "ref", ref)
	refAdd(200e6)
	// Rounds alternate the sides; the least of each is the figure, which
	// other work on the machine can only raise.
	least := map[string]float64{}
	for range 3 {
		for _, side := range sides {
			for _, reverse := range []bool{false, true} {
				key := side.name + " " + map[bool]string{false: "egress", true: "ingress"}[reverse]
				before := busyCPU(t)
				start := time.Now()
				bps := iperfRate(t, side.ns, out.IP, iperfPort, 5*time.Second, reverse)
				perGbit := (busyCPU(t) - before) / (bps * time.Since(start).Seconds() / 1e9)
				t.Logf("%-24s at 200 Mbit/s: %5.1f Mbit/s, %.2f CPU-seconds per Gbit", key, bps/1e6, perGbit)
				if l, ok := least[key]; !ok || perGbit < l {
					least[key] = perGbit
				}
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(least)) {
		t.Logf("%-24s least of 3: %.2f CPU-seconds per Gbit (machine-wide, iperf3 included)", key, least[key])
	}
}

// busyCPU is the CPU time the machine spent busy so far, in seconds
// (/proc/stat: every state but idle and iowait).
func busyCPU(t testing.TB) float64 {
	t.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:]
	var busy float64
	for i, f := range fields {
		v, _ := strconv.ParseFloat(f, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is counted in user already
			busy += v
		}
	}
	return busy / 100 // USER_HZ
}

package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// tcpCounters are the kernel's TCP counters that say why a sender
// retransmitted, and where a receiver or an interface dropped.
var tcpCounters = []string{
	"TcpRetransSegs",       // segments the sender resent
	"TcpExtTCPDSACKRecv",   // resent segments the receiver already had: spurious
	"TcpExtTCPLossProbes",  // tail loss probes, sent when ACKs are late
	"TcpExtTCPFastRetrans", // resent on SACK evidence (loss or reordering)
	"TcpExtTCPSACKReorder", // reordering the sender detected
	"TcpExtTCPOFOQueue",    // segments the receiver got out of order
	"TcpExtTCPRcvQDrop",    // drops at the receiver: queue full
	"TcpExtTCPBacklogDrop", // drops at the receiver: socket backlog full
	"TcpInCsumErrors",      // drops at the receiver: bad checksum
	"TcpExtTCPOFODrop",     // drops at the receiver: out-of-order queue full
}

func nstat(ns string) map[string]int {
	out, _ := exec.Command("ip", "netns", "exec", ns, "nstat", "-az").Output()
	m := map[string]int{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			m[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	return m
}

// interfaceDrops sums the receive and transmit drops of every interface
// of a namespace.
func interfaceDrops(ns string) int {
	out, _ := exec.Command("ip", "-n", ns, "-s", "-o", "link").Output()
	drops := 0
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(strings.NewReplacer(`\`, " ").Replace(l))
		for i := range f {
			// "RX:" (or "TX:"), six names (bytes packets errors dropped
			// …), then their values: dropped is the tenth after it.
			if (f[i] == "RX:" || f[i] == "TX:") && i+10 < len(f) && f[i+4] == "dropped" {
				n, _ := strconv.Atoi(f[i+10])
				drops += n
			}
		}
	}
	return drops
}

// BenchmarkRetransmits runs one iperf3 stream from outside to the
// sandbox, routed straight to its address (direct) and through its
// published port (ebpfnet-tc), on an idle machine and with both CPUs kept
// busy, and prints the sender's retransmits beside the counters that say
// why: spurious ones are answered by a DSACK; losses would show as
// drops at the receiver or on an interface.
//
//	sudo go test ./bench -run XXX -bench Retransmits -benchtime 1x
func BenchmarkRetransmits(b *testing.B) {
	var out testbed.Outside
	h := testbed.NewHostWith(b, func(h *testbed.Host) { out = h.AddOutside() })
	n := h.Name("net")
	h.MustCLI("network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected", n)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "--network", n, "-p", "5201:5201")
	srv := exec.Command("ip", "netns", "exec", web, "iperf3", "-s")
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	time.Sleep(300 * time.Millisecond)
	client := filepath.Base(out.NS)
	drops := func() int {
		return interfaceDrops(filepath.Base(h.NetNS)) + interfaceDrops(client) + interfaceDrops(web)
	}
	for _, busy := range []bool{false, true} {
		stop := make(chan struct{})
		if busy {
			for range 2 {
				go func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
					}
				}()
			}
		}
		for _, p := range []struct{ name, dst string }{{"direct", h.IP(web, n)}, {"ebpfnet-tc", hostIP}} {
			name := fmt.Sprintf("%s/busy=%v", p.name, busy)
			b.Run(name, func(b *testing.B) {
				c0, s0, d0 := nstat(client), nstat(web), drops()
				if out, err := exec.Command("ip", "netns", "exec", client, "iperf3", "-c", p.dst, "-t", "4").CombinedOutput(); err != nil {
					b.Fatalf("iperf3: %v\n%s", err, out)
				}
				c1, s1, d1 := nstat(client), nstat(web), drops()
				var line []string
				for _, k := range tcpCounters {
					if d := c1[k] - c0[k] + s1[k] - s0[k]; d != 0 {
						line = append(line, fmt.Sprintf("%s=%d", strings.TrimPrefix(strings.TrimPrefix(k, "TcpExt"), "Tcp"), d))
					}
				}
				b.Logf("%s: %s interface drops=%d", name, strings.Join(line, " "), d1-d0)
				b.ReportMetric(float64(c1["TcpRetransSegs"]-c0["TcpRetransSegs"]), "retransmits")
				b.ReportMetric(float64(c1["TcpExtTCPDSACKRecv"]-c0["TcpExtTCPDSACKRecv"]), "dsacks")
				b.ReportMetric(float64(d1-d0), "drops")
			})
		}
		close(stop)
	}
}

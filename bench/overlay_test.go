package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// BenchmarkOverlay measures two hosts of a cluster talking over an
// overlay network, sandbox to sandbox, beside the kernel alone in the
// same topology (a bridge with a VXLAN port, a veth into a namespace, no
// program) and the kernel's VXLAN alone between the same two host
// namespaces (the uplink programs on the underlay see all three): one TCP
// stream, new connections/s and round trips, 3 rounds interleaved,
// medians. Then the time to create a sandbox on the overlay with 1 and
// with 1,000 endpoints in the cluster (the 1,000 held by a third host).
//
//	sudo go test ./bench -run XXX -bench Overlay -benchtime 1x -v
func BenchmarkOverlay(b *testing.B) {
	c := testbed.NewCluster(b, 2)
	h0, h1 := c.Hosts[0], c.Hosts[1]
	ov := h0.Name("ov")
	h0.MustCLI("network", "create", "-d", "overlay", "--subnet", "10.201.0.0/16", ov)
	waitFor(b, func() bool { _, err := h1.CLI("network", "inspect", ov); return err == nil })
	client, server := h0.Name("client"), h1.Name("server")
	h0.MustCLI("sandbox", "create", client, "--network", ov)
	h1.MustCLI("sandbox", "create", server, "--network", ov)

	// The kernel's VXLAN alone, host namespace to host namespace.
	host0, host1 := filepath.Base(h0.NetNS), filepath.Base(h1.NetNS)
	for i, ns := range []string{host0, host1} {
		remote := testbed.UnderlayAddr(1 - i)
		h0.MustRun("ip", "-n", ns, "link", "add", "vxplain", "type", "vxlan", "id", "9999", "local", testbed.UnderlayAddr(i).String(),
			"remote", remote.String(), "dstport", "4789", "dev", "under0")
		h0.MustRun("ip", "-n", ns, "link", "set", "vxplain", "mtu", "1450", "up")
		h0.MustRun("ip", "-n", ns, "addr", "add", fmt.Sprintf("10.202.0.%d/24", i+1), "dev", "vxplain")
	}
	// The same topology as ebpfnet's with the kernel alone: on each host a
	// bridge with a VXLAN port and a veth into a namespace, no program on
	// the veth. Against it, ebpfnet's column is the cost of its programs;
	// against the VXLAN alone, this one is the cost of the veth and bridge,
	// which a design sending from the veth straight into a shared tunnel
	// device (collect-md, BPF tunnel keys) would partly save.
	var plain []string
	for i, ns := range []string{host0, host1} {
		name := c.Hosts[i].Name("plain")
		h0.MustRun("ip", "netns", "add", name)
		b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		plain = append(plain, "/run/netns/"+name)
		for _, args := range [][]string{
			{"-n", ns, "link", "add", "brplain", "type", "bridge"},
			{"-n", ns, "link", "add", "vxbr", "type", "vxlan", "id", "9998", "local", testbed.UnderlayAddr(i).String(),
				"remote", testbed.UnderlayAddr(1 - i).String(), "dstport", "4789", "dev", "under0"},
			{"-n", ns, "link", "add", "vpl", "type", "veth", "peer", "name", "eth0", "netns", name},
			{"-n", ns, "link", "set", "vxbr", "mtu", "1450", "master", "brplain", "up"},
			{"-n", ns, "link", "set", "vpl", "mtu", "1450", "master", "brplain", "up"},
			{"-n", ns, "link", "set", "brplain", "up"},
			{"-n", name, "link", "set", "lo", "up"},
			{"-n", name, "link", "set", "eth0", "mtu", "1450", "up"},
			{"-n", name, "addr", "add", fmt.Sprintf("10.203.0.%d/24", i+1), "dev", "eth0"},
		} {
			h0.MustRun("ip", args...)
		}
	}
	paths := []struct{ name, clientNS, serverNS, dst string }{
		{"ebpfnet-overlay", h0.NS(client), h1.NS(server), h1.IP(server, ov)},
		{"kernel-vxlan-bridge", plain[0], plain[1], "10.203.0.2"},
		{"kernel-vxlan", h0.NetNS, h1.NetNS, "10.202.0.2"},
	}
	for _, p := range paths {
		testbed.Serve(b, p.serverNS)
		srv := exec.Command("nsenter", "--net="+p.serverNS, "iperf3", "-s")
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	time.Sleep(300 * time.Millisecond)

	type figures struct{ gbps, conns, rtt50, rtt99 []float64 }
	got := map[string]*figures{}
	for round := range 3 {
		for _, p := range paths {
			f := got[p.name]
			if f == nil {
				f = &figures{}
				got[p.name] = f
			}
			f.gbps = append(f.gbps, iperf(b, p.clientNS, p.dst))
			f.conns = append(f.conns, connectionRate(b, p.clientNS, p.dst, 3*time.Second))
			p50, p99 := roundTripTimes(b, p.clientNS, p.dst, 5000)
			f.rtt50, f.rtt99 = append(f.rtt50, p50), append(f.rtt99, p99)
			b.Logf("round %d %s: %.2f Gbit/s, %.0f connections/s, round trip p50 %.0f µs p99 %.0f µs", round+1, p.name,
				f.gbps[round], f.conns[round], p50, p99)
		}
	}
	for _, p := range paths {
		f := got[p.name]
		b.Run(p.name, func(b *testing.B) {
			b.ReportMetric(median(f.gbps), "Gbit/s")
			b.ReportMetric(median(f.conns), "conns/s")
			b.ReportMetric(median(f.rtt50), "rtt-p50-µs")
			b.ReportMetric(median(f.rtt99), "rtt-p99-µs")
		})
	}
	for _, pair := range [][2]string{{"ebpfnet-overlay", "kernel-vxlan-bridge"}, {"kernel-vxlan-bridge", "kernel-vxlan"}, {"ebpfnet-overlay", "kernel-vxlan"}} {
		o, k := got[pair[0]], got[pair[1]]
		b.Logf("%s ÷ %s: stream %.2f×, connections/s %.2f×, round trip p50 %.2f×", pair[0], pair[1],
			median(o.gbps)/median(k.gbps), median(o.conns)/median(k.conns), median(o.rtt50)/median(k.rtt50))
	}

	// Creating a sandbox on the overlay, with 1 endpoint in the cluster
	// (the server) and with 1,000, held by a third host that joins.
	create := func(label string) {
		var ms []float64
		for i := range 7 {
			name := h0.Name(fmt.Sprintf("%s%d", label, i))
			t0 := time.Now()
			h0.MustCLI("sandbox", "create", name, "--network", ov)
			ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
			h0.MustCLI("sandbox", "rm", name)
		}
		b.Run("create-sandbox/"+label, func(b *testing.B) { b.ReportMetric(median(ms), "ms") })
	}
	create("endpoints-1")
	third, err := cluster.Join(cluster.Config{Endpoints: c.Etcd.Endpoints(), Advertise: netip.MustParseAddr("10.88.0.99"),
		Dial: func(ctx context.Context, address string) (conn net.Conn, err error) {
			err = namespace.Do(h0.NetNS, func() error {
				conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", address)
				return err
			})
			return conn, err
		}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { third.Close() })
	network, err := third.Network(context.Background(), ov)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err := third.AllocateAddress(context.Background(), network.ID, cluster.Address{Owner: fmt.Sprintf("ep%d", i), Sandbox: fmt.Sprintf("far%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	dev := "ebx-" + h0.Network(ov).Options["com.docker.network.driver.overlay.vxlanid_list"]
	waitFor(b, func() bool {
		var neigh []json.RawMessage
		out, _ := exec.Command("ip", "-n", host0, "-j", "neigh", "show", "dev", dev).Output()
		return json.Unmarshal(out, &neigh) == nil && len(neigh) >= 1001
	})
	create("endpoints-1000")
}

func waitFor(b *testing.B, ok func() bool) {
	b.Helper()
	for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// iperf is one 3-second TCP stream's throughput in Gbit/s.
func iperf(b *testing.B, clientNS, dst string) float64 {
	out, err := exec.Command("nsenter", "--net="+clientNS, "iperf3", "-c", dst, "-t", "3", "-J").Output()
	if err != nil {
		b.Fatalf("iperf3 to %s: %v %s", dst, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatal(err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// connectionRate opens, uses and closes connections to the echo server
// one after another for d, from a thread in clientNS.
func connectionRate(b *testing.B, clientNS, dst string, d time.Duration) float64 {
	n := 0
	err := namespace.Do(clientNS, func() error {
		buf := make([]byte, 1)
		for end := time.Now().Add(d); time.Now().Before(end); n++ {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(dst, fmt.Sprint(testbed.EchoPort)), time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Write([]byte{'x'})
			if err == nil {
				_, err = c.Read(buf)
			}
			// Closed with a reset: no TIME_WAIT, so the client's ports
			// last the whole run.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("connections to %s: %v", dst, err)
	}
	return float64(n) / d.Seconds()
}

// roundTripTimes sends n one-byte messages over one connection, each waiting
// for its echo, and returns the p50 and p99 round trip in µs.
func roundTripTimes(b *testing.B, clientNS, dst string, n int) (p50, p99 float64) {
	c, err := testbed.Dial(clientNS, "tcp", net.JoinHostPort(dst, fmt.Sprint(testbed.EchoPort)), "")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var rtt []float64
	buf := make([]byte, 1)
	for range n {
		t0 := time.Now()
		c.SetDeadline(t0.Add(time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
		rtt = append(rtt, float64(time.Since(t0).Nanoseconds())/1000)
	}
	slices.Sort(rtt)
	return rtt[len(rtt)/2], rtt[len(rtt)*99/100]
}

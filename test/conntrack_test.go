package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// serveAndClose runs a TCP server in the namespace at nsPath that answers
// every connection with one byte and closes it first, as an HTTP API does,
// so the TIME_WAIT state is the server's and clients can reuse ports.
func serveAndClose(t *testing.T, nsPath string, port int) {
	t.Helper()
	testbed.ServeTCP(t, nsPath, "tcp4", port, func(c net.Conn) {
		c.Write([]byte{'x'})
		c.Close()
	})
}

// flows opens n short flows from the namespace at nsPath to dst, with
// workers at a time, each from a fresh socket, and returns how many were
// not answered. It gives up at the deadline.
func flows(t *testing.T, nsPath, network, dst string, n, workers int, deadline time.Time) (failed int64) {
	t.Helper()
	var next, fails atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Sockets belong to the namespace they are made in: make them all there.
			namespace.Do(nsPath, func() error {
				buf := make([]byte, 16)
				for next.Add(1) <= int64(n) && time.Now().Before(deadline) {
					c, err := net.DialTimeout(network, dst, 2*time.Second)
					if err == nil {
						c.SetDeadline(time.Now().Add(2 * time.Second))
						if network == "udp4" {
							_, err = c.Write([]byte("q"))
						}
						if err == nil {
							_, err = c.Read(buf)
						}
						c.Close()
					}
					if err != nil {
						fails.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	if done := next.Load(); done < int64(n) {
		t.Fatalf("%s to %s: only %d of %d flows before the deadline", network, dst, done, n)
	}
	if err := firstErr.Load(); err != nil {
		t.Logf("%s to %s: first failure: %v", network, dst, err)
	}
	return fails.Load()
}

// A sandbox polling one outside address, as a resolver client or an API
// poller does, opens flow after flow from fresh sockets: every one is
// answered, with the default NAT range, because closed and expired flows
// give their tuples back and flows keep their own ports where they can.
func TestManyShortFlowsToOneDestination(t *testing.T) {
	h, out := newPublishingHost(t)
	sb := h.Name("poller")
	h.MustCLI("sandbox", "create", sb)
	serveAndClose(t, out.NS, 7001)
	const n = 100000
	deadline := time.Now().Add(3 * time.Minute)
	for _, c := range []struct{ network, dst string }{
		{"tcp4", out.IP + ":7001"},
		{"udp4", out.IP + ":7777"},
	} {
		start := time.Now()
		failed := flows(t, h.NS(sb), c.network, c.dst, n, 4, deadline)
		t.Logf("%d %s flows to %s in %s, %d unanswered", n, c.network, c.dst, time.Since(start).Round(time.Millisecond), failed)
		if failed != 0 {
			t.Errorf("%s: %d of %d flows unanswered", c.network, failed, n)
		}
	}
	if d := h.ProgramCounter("from_container", "drop_no_nat_port"); d != 0 {
		t.Errorf("%d flows found no NAT port", d)
	}
}

// A flood of SYNs from forged sources to a published port, more than the
// table of new flows holds, evicts no established flow: an idle
// masqueraded connection and an idle published one both still work.
func TestSYNFloodSparesEstablishedFlows(t *testing.T) {
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	testbed.Serve(t, h.NS(web))
	masqueraded, err := testbed.Dial(h.NS(web), "tcp4", out.IP+":7777", "")
	if err != nil {
		t.Fatal(err)
	}
	defer masqueraded.Close()
	published, err := testbed.Dial(out.NS, "tcp4", hostIP+":8080", "")
	if err != nil {
		t.Fatal(err)
	}
	defer published.Close()
	mustWork(t, "masqueraded connection before the flood", echoOn(masqueraded))
	mustWork(t, "published connection before the flood", echoOn(published))

	uplinkMAC := h.MAC("uplink0")
	// Flood past the largest conntrack table, whatever its name.
	capacity := 0
	for _, m := range h.Status().Maps {
		if strings.HasPrefix(m.Map, "ct") {
			capacity = max(capacity, int(m.Max))
		}
	}
	if capacity == 0 {
		t.Fatal("status shows no conntrack table")
	}
	before := h.ProgramCounter("uplink", "dnat")
	start := time.Now()
	sent, err := testbed.SYNFlood(out.NS, "eth0", uplinkMAC, netip.MustParseAddrPort(hostIP+":8080"), 2*capacity, 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	flooded := h.ProgramCounter("uplink", "dnat") - before
	t.Logf("%d forged SYNs sent in %s, %d flows created; the largest conntrack table holds %d entries (2 a flow)",
		sent, time.Since(start).Round(time.Millisecond), flooded, capacity)
	if flooded < uint64(capacity)/2 {
		t.Fatalf("only %d forged flows were created: the flood did not fill a conntrack table of %d entries", flooded, capacity)
	}
	mustWork(t, "masqueraded connection after the flood", echoOn(masqueraded))
	mustWork(t, "published connection after the flood", echoOn(published))
	mustWork(t, "new connection after the flood", testbed.TCPTo(out.NS, hostIP+":8080"))
}

// Bulk transfers through a published port and through masquerade, with
// the veths' offloads (TSO, GSO, checksum offload) on as they come: the
// data arrives whole and no receiver counts a checksum error.
func TestBulkTransferWithOffloads(t *testing.T) {
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:9000")
	const size = 32 << 20
	payload := bytes.Repeat([]byte("ebpfnet bulk transfer "), size/22)
	want := sha256.Sum256(payload)
	for _, c := range []struct {
		name, server, client, dst string
	}{
		{"published port", h.NS(web), out.NS, hostIP + ":8080"},
		{"masquerade", out.NS, h.NS(web), out.IP + ":9000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var l net.Listener
			if err := namespace.Do(c.server, func() (err error) { l, err = net.Listen("tcp4", ":9000"); return err }); err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			sum := make(chan [32]byte, 1)
			go func() {
				conn, err := l.Accept()
				if err != nil {
					sum <- [32]byte{}
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				hash := sha256.New()
				io.Copy(hash, conn)
				sum <- [32]byte(hash.Sum(nil))
			}()
			tcpBefore, _ := checksumErrors(t, c.server)
			conn, err := testbed.Dial(c.client, "tcp4", c.dst, "")
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := conn.Write(payload); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if got := <-sum; got != want {
				t.Fatal("the data arrived changed or incomplete")
			}
			if tcpAfter, _ := checksumErrors(t, c.server); tcpAfter != tcpBefore {
				t.Errorf("the receiver counted %d TCP checksum errors", tcpAfter-tcpBefore)
			}
		})
	}
}

// A NAT port is in use while its flow lives, and free again once the flow
// has closed and its lifetime passed: with four NAT ports, a fifth
// colliding flow is refused, and gets through once four have ended.
func TestNATPortsFreedWhenFlowsEnd(t *testing.T) {
	h, out := newPublishingHost(t, "--nat-ports", "61000-61003",
		"--ct-timeout", "tcp_fin_wait=1", "--ct-timeout", "tcp_time_wait=1", "--ct-timeout", "tcp_close=1")
	var sandboxes []string
	for i := range 6 {
		sb := h.Name(fmt.Sprint("s", i))
		h.MustCLI("sandbox", "create", sb)
		sandboxes = append(sandboxes, sb)
	}
	// Every flow comes from port 40000: the first keeps it, the next four
	// take the NAT ports.
	dial := func(sb string) (net.Conn, error) {
		c, err := testbed.Dial(h.NS(sb), "tcp4", out.IP+":7777", "0.0.0.0:40000")
		if err == nil {
			if _, err = testbed.Peer(c); err != nil {
				c.Close()
			}
		}
		return c, err
	}
	var conns []net.Conn
	for _, sb := range sandboxes[:5] {
		c, err := dial(sb)
		if err != nil {
			t.Fatalf("%s: %v", sb, err)
		}
		conns = append(conns, c)
	}
	if _, err := dial(sandboxes[5]); err == nil {
		t.Fatal("a sixth flow got through with every NAT port taken")
	}
	for _, c := range conns[1:] {
		c.Close()
	}
	time.Sleep(2500 * time.Millisecond) // past the closed flows' lifetimes
	c, err := dial(sandboxes[5])
	if err != nil {
		t.Fatalf("with four flows ended, the sixth: %v", err)
	}
	c.Close()
	conns[0].Close()
}

// --ct-source-max bounds what one source may hold in ct: past it, the
// source's flows still work (from ct_new) and the refusals are counted. A
// share larger than the table is refused with the value named.
func TestCTSourceMaxFlag(t *testing.T) {
	h, out := newPublishingHost(t, "--ct-source-max", "4")
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777/udp")
	testbed.ServeOn(t, h.NS(web), 7777)
	// A UDP flow is established once answered and answered back.
	for i := range 8 {
		c, err := testbed.Dial(out.NS, "udp", hostIP+":8080", "")
		mustWork(t, fmt.Sprintf("flow %d from the outside", i), err)
		for range 2 {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			_, err := c.Write([]byte("ping"))
			if err == nil {
				_, err = c.Read(buf)
			}
			mustWork(t, fmt.Sprintf("flow %d from the outside", i), err)
		}
		c.Close()
	}
	if n := h.ProgramCounter("from_container", "ct_source_full") + h.ProgramCounter("uplink", "ct_source_full"); n < 4 {
		t.Errorf("8 flows of one source with a share of 4: %d refusals counted as ct_source_full, want at least 4", n)
	}
	msg, err := exec.Command(testbed.Binary(t), "daemon", "--ct-source-max", "200000").CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "invalid --ct-source-max 200000") {
		t.Errorf("daemon --ct-source-max 200000: %v, %q; want it refused with the value named", err, msg)
	}
}

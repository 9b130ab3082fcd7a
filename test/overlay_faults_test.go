package test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// conversation is one TCP connection to an echo server that exchanges a
// message every 50 ms until stopped, counting the exchanges that failed:
// a flow that must live through a fault.
type conversation struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	done       chan struct{}
}

func converse(t *testing.T, nsPath, dst string) *conversation {
	t.Helper()
	c, err := testbed.Dial(nsPath, "tcp", net.JoinHostPort(dst, fmt.Sprint(testbed.EchoPort)), "")
	if err != nil {
		t.Fatal(err)
	}
	cv := &conversation{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(cv.done)
		defer c.Close()
		buf := make([]byte, 64)
		for i := 0; ; i++ {
			select {
			case <-cv.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			msg := fmt.Sprintf("message %d", i)
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err := c.Write([]byte(msg))
			n := 0
			if err == nil {
				n, err = c.Read(buf)
			}
			if err != nil || string(buf[:n]) != msg {
				cv.failed.Add(1)
				if err != nil {
					return // the connection is broken: every later one fails too
				}
				continue
			}
			cv.ok.Add(1)
		}
	}()
	t.Cleanup(cv.end)
	return cv
}

func (cv *conversation) end() {
	select {
	case <-cv.stop:
	default:
		close(cv.stop)
	}
	<-cv.done
}

// check fails the test unless every exchange so far got its echo, and
// more than before.
func (cv *conversation) check(t *testing.T, what string, before int64) int64 {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	ok, failed := cv.ok.Load(), cv.failed.Load()
	if failed > 0 || ok <= before {
		t.Fatalf("%s: the flow across hosts had %d exchanges fail, %d succeed (%d before)", what, failed, ok, before)
	}
	return ok
}

// partition cuts host h off from etcd (client and peer ports, both ways)
// and returns how to heal it; VXLAN traffic still flows.
func partition(t *testing.T, h *testbed.Host) (heal func()) {
	t.Helper()
	rules := [][]string{
		{"INPUT", "-p", "tcp", "--dport", "2379:2380", "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--sport", "2379:2380", "-j", "DROP"},
		{"OUTPUT", "-p", "tcp", "--dport", "2379:2380", "-j", "DROP"},
		{"OUTPUT", "-p", "tcp", "--sport", "2379:2380", "-j", "DROP"},
	}
	for _, r := range rules {
		h.InHost("iptables", append([]string{"-A"}, r...)...)
	}
	healed, began := false, time.Now()
	heal = func() {
		if !healed {
			for _, r := range rules {
				h.InHost("iptables", append([]string{"-D"}, r...)...)
			}
			healed = true
			// Beside the lease, this says whether a failure that
			// follows is a lapse.
			t.Logf("%s was cut off from etcd for %.1f s", h.Prefix, time.Since(began).Seconds())
		}
	}
	t.Cleanup(heal)
	return heal
}

// faultLease is the hosts' lease in TestOverlayFaults. 15 s was once too
// short: a daemon restarted under load with etcd out of reach took 19 s
// to be back, and the others dropped its endpoints meanwhile.
const faultLease = 25 * time.Second

// The faults a cluster of hosts must ride out, each with a flow across
// hosts running through it: a daemon restart, one etcd member down, etcd
// out of reach of one host (shorter and longer than the lease, and a
// daemon restart meanwhile), and a host gone for good.
func TestOverlayFaults(t *testing.T) {
	t.Parallel()
	began := time.Now()
	// phase marks where a failure happened, and when.
	phase := func(what string) { t.Logf("%4.1f s: %s", time.Since(began).Seconds(), what) }
	// A lease of faultLease (Docker's option): the outages meant to be
	// shorter than the lease, a daemon restart within one, are then so
	// with room to spare on a loaded machine.
	c := testbed.NewCluster(t, 3, fmt.Sprintf("discovery.ttl=%d", int(faultLease.Seconds())))
	phase("three hosts up")
	if st := c.Hosts[0].Status(); st.Cluster == nil || st.Cluster.LeaseTTL <= 10 {
		t.Fatalf("lease of a host given discovery.ttl=%d: %+v", int(faultLease.Seconds()), st.Cluster)
	}
	h0, h1, h2 := c.Hosts[0], c.Hosts[1], c.Hosts[2]
	ov := h0.Name("ov")
	h0.MustCLI("network", "create", "-d", "overlay", ov)
	var sbs []string
	for i, h := range c.Hosts {
		waitNetwork(t, h, ov)
		name := h.Name(fmt.Sprintf("s%d", i))
		h.MustCLI("sandbox", "create", name, "--network", ov)
		testbed.Serve(t, h.NS(name))
		sbs = append(sbs, name)
	}
	s2IP := h2.IP(sbs[2], ov)
	h0.MustReach(sbs[0], s2IP)
	cv := converse(t, h0.NS(sbs[0]), s2IP)
	n := cv.check(t, "before any fault", 0)

	phase("a daemon restart")
	// A daemon restart: it keeps its lease, the others never see its
	// endpoints go, the flow never stops.
	h2.Stop(syscall.SIGTERM)
	n = cv.check(t, "while host 2's daemon is down", n)
	h2.Start()
	n = cv.check(t, "after host 2's daemon restarted", n)

	phase("one etcd member of three down")
	// One etcd member of three down: creates still work.
	c.Etcd.Stop(0)
	ov2 := h1.Name("ov2")
	h1.MustCLI("network", "create", "-d", "overlay", ov2)
	waitNetwork(t, h2, ov2)
	a, b := h1.Name("a"), h2.Name("b")
	h1.MustCLI("sandbox", "create", a, "--network", ov2)
	h2.MustCLI("sandbox", "create", b, "--network", ov2)
	testbed.Serve(t, h2.NS(b))
	h1.MustReach(a, h2.IP(b, ov2))
	n = cv.check(t, "with an etcd member down", n)
	c.Etcd.Start(0)
	c.Etcd.WaitHealthy(0)

	phase("etcd out of reach of host 2, for less than the lease")
	// etcd out of reach of host 2, for less than the lease: its datapath
	// keeps forwarding, its writes fail saying why and change nothing,
	// and it catches up on a network created meanwhile when etcd is back.
	// The cut lasts about a request's budget (the failed create), well
	// within a lease renewed every tenth of its TTL.
	heal := partition(t, h2)
	ov3 := h0.Name("ov3")
	created := make(chan error, 1)
	go func() {
		out, err := h0.CLI("network", "create", "-d", "overlay", ov3)
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		created <- err
	}()
	late := h2.Name("late")
	start := time.Now()
	out, err := h2.CLI("sandbox", "create", late, "--network", ov)
	if err == nil || !strings.Contains(out, "unreachable") {
		t.Fatalf("sandbox create with etcd out of reach: %v %s", err, out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the failed create took %s", d)
	}
	if _, err := h2.CLI("sandbox", "inspect", late); err == nil {
		t.Error("the failed create left a sandbox")
	}
	if err := <-created; err != nil {
		t.Fatalf("create a network on host 0 while host 2 is cut off: %v", err)
	}
	n = cv.check(t, "with etcd out of reach of host 2", n)
	heal()
	waitRenewed(t, h2)
	waitNetwork(t, h2, ov3)
	h2.MustCLI("sandbox", "create", late, "--network", ov)
	n = cv.check(t, "after etcd came back", n)

	phase("a daemon restarted while etcd is out of reach")
	// A daemon restarted while etcd is out of reach starts all the same,
	// keeps its networks and the flow, and joins when etcd is back, with
	// the lease it had: the others never drop its endpoints.
	heal = partition(t, h2)
	h2.Stop(syscall.SIGTERM)
	h2.Start()
	if st := h2.Status(); st.Cluster == nil || !strings.Contains(st.Cluster.Error, "unreachable") {
		t.Errorf("status of a host that cannot reach etcd: %+v", st.Cluster)
	}
	n = cv.check(t, "after host 2's daemon restarted with etcd out of reach", n)
	heal()
	waitRenewed(t, h2)
	n = cv.check(t, "after host 2 joined again", n)

	phase("etcd out of reach of host 2 for longer than the lease")
	// Longer than the lease: the others drop host 2's endpoints; once back
	// it takes them again and the flow resumes (a new connection: the old
	// one may have timed out meanwhile).
	cv.end()
	heal = partition(t, h2)
	waitGoneFrom(t, h0, ov, s2IP, faultLease+10*time.Second)
	heal()
	deadline := time.Now().Add(20 * time.Second)
	for testbed.TCP(h0.NS(sbs[0]), s2IP) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("host 2's sandbox unreachable 20 s after etcd came back:\n%s", h2.DaemonLog())
		}
		time.Sleep(250 * time.Millisecond)
	}
	h0.MustReach(sbs[0], s2IP)

	phase("a host killed for good")
	// A host killed for good: after its lease, the others forget its
	// endpoints, their names included.
	s1IP := h1.IP(sbs[1], ov)
	h1.Stop(syscall.SIGKILL)
	waitGoneFrom(t, h0, ov, s1IP, faultLease+10*time.Second)
	if got := mustNotResolve(t, h0, sbs[0], sbs[1]); got != "" {
		t.Errorf("%s still resolves %s: %s", sbs[0], sbs[1], got)
	}
	if log := h0.DaemonLog(); !strings.Contains(log, "host left the cluster: its endpoints are dropped\" advertise="+testbed.UnderlayAddr(1).String()) {
		t.Errorf("host 0 did not log host 1 leaving:\n%s", log)
	}
}

// waitRenewed waits until h, its way to etcd back, has renewed its lease:
// the next fault then starts with a whole lease, as the test means it to.
// Two cuts a moment apart are one cut as long as both, and with the two
// here, longer than the lease.
func waitRenewed(t *testing.T, h *testbed.Host) {
	t.Helper()
	const within = 10 * time.Second
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		st := h.Status()
		if st.Cluster != nil && st.Cluster.Error == "" && st.Cluster.LeaseTTL >= int64((faultLease-2*time.Second).Seconds()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's lease not renewed %s after etcd came back: %+v", h.Prefix, within, st.Cluster)
		}
	}
}

// waitGoneFrom waits until h's VXLAN device of network ov knows no
// neighbour addr: the cluster dropped the endpoint.
func waitGoneFrom(t *testing.T, h *testbed.Host, ov, addr string, within time.Duration) {
	t.Helper()
	dev := "ebx-" + h.Network(ov).Options["com.docker.network.driver.overlay.vxlanid_list"]
	deadline := time.Now().Add(within)
	for {
		out := h.InHost("ip", "neigh", "show", "dev", dev)
		if !strings.Contains(out, addr+" ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %s still has %s on %s:\n%s", within, h.Prefix, addr, dev, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// mustNotResolve returns what a sandbox's resolver answers for name, ""
// when it has no address for it.
func mustNotResolve(t *testing.T, h *testbed.Host, sandbox, name string) string {
	t.Helper()
	resp, _, err := testbed.Query(h.NS(sandbox), "udp", "127.0.0.11:53", name, 1)
	if err != nil || len(resp.Answer) == 0 {
		return ""
	}
	return resp.Answer[0].String()
}

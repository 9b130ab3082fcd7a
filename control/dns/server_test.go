package dns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// Over UDP, names of the asker's networks and cached answers are answered
// while queries wait for an upstream server, however many wait: a slow
// upstream never holds up the sandbox's other names.
func TestUDPLocalAnswersDoNotWaitForUpstream(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := sandboxNS(t, 0)
	up := &scripted{reply: reply(dns.RcodeSuccess, []string{"slow.example. 60 IN A 192.0.2.1"}, nil), gate: make(chan struct{})}
	r := newResolver(up.exchange)
	r.SetView(testView())
	s := NewServers(r)
	t.Cleanup(s.Close)
	if err := s.Sync(map[string]string{"client": ns}); err != nil {
		t.Fatal(err)
	}
	exchange := func(name string, timeout time.Duration) (*dns.Msg, error) { return exchangeIn(ns, name, timeout) }
	// More queries held upstream than the machine has CPUs.
	held := runtime.GOMAXPROCS(0) + 2
	done := make(chan error, held)
	for i := range held {
		go func() {
			resp, err := exchange(fmt.Sprintf("slow%d.example.", i), 5*time.Second)
			if err == nil && len(resp.Answer) != 1 {
				err = fmt.Errorf("held query answered %v", resp)
			}
			done <- err
		}()
	}
	waitFor(t, func() bool { return up.count() == held })
	start := time.Now()
	resp, err := exchange("web.", time.Second)
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("a name of the sandbox's network while %d queries wait upstream: %v, %v", held, resp, err)
	}
	t.Logf("answered in %s with %d queries held upstream", time.Since(start), held)
	close(up.gate)
	for range held {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if st := r.Stats(); st.Local != 1 || st.Forwarded != uint64(held) {
		t.Errorf("stats %+v, want 1 local, %d forwarded", st, held)
	}
}

// sandboxNS is a new namespace with lo up, standing in for a sandbox's.
func sandboxNS(t *testing.T, i int) string {
	t.Helper()
	ns := fmt.Sprintf("/run/netns/ebpfnet-dnstest-%d-%d", time.Now().UnixNano()%1e6, i)
	if err := namespace.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { namespace.Remove(ns) })
	if out, err := exec.Command("ip", "-n", filepath.Base(ns), "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return ns
}

// exchangeIn asks the resolver of namespace ns for name's A records over
// UDP.
func exchangeIn(ns, name string, timeout time.Duration) (resp *dns.Msg, err error) {
	err = namespace.Do(ns, func() (err error) {
		c := &dns.Client{Net: "udp", Timeout: timeout}
		resp, _, err = c.Exchange(query(name, dns.TypeA), Address)
		return err
	})
	return resp, err
}

// Every sandbox's UDP socket is read on one thread: sandboxes cost no
// thread each. A sandbox's socket is closed when it goes, while the
// others answer on.
func TestUDPSandboxesShareOneThread(t *testing.T) {
	testenv.RequirePrivileges(t)
	const sandboxes = 16
	want := map[string]string{}
	for i := range sandboxes {
		want[fmt.Sprintf("s%d", i)] = sandboxNS(t, i)
	}
	want["client"] = sandboxNS(t, sandboxes)
	r := newResolver((&scripted{}).exchange)
	r.SetView(testView())
	s := NewServers(r)
	t.Cleanup(s.Close)
	threads := func() int {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := threads()
	if err := s.Sync(want); err != nil {
		t.Fatal(err)
	}
	for id, ns := range want {
		resp, err := exchangeIn(ns, "web.", time.Second)
		if err != nil {
			t.Fatalf("sandbox %s: %v", id, err)
		}
		// Only the view's sandbox knows web; the others are refused.
		if got := len(resp.Answer) == 1; got != (id == "client") {
			t.Errorf("sandbox %s answered %v", id, resp)
		}
	}
	if grown := threads() - before; grown >= sandboxes/2 {
		t.Errorf("%d threads more to serve %d sandboxes", grown, len(want))
	}
	gone := want["s0"]
	delete(want, "s0")
	if err := s.Sync(want); err != nil {
		t.Fatal(err)
	}
	// Its address is free again: the socket is closed, not just unread.
	if err := listenUDP(gone); err != nil {
		t.Errorf("listen where a removed sandbox's server was: %v", err)
	}
	if resp, err := exchangeIn(want["client"], "web.", time.Second); err != nil || len(resp.Answer) != 1 {
		t.Errorf("a remaining sandbox after another went: %v, %v", resp, err)
	}
}

// AnswerNow answers what needs no upstream server and leaves the rest,
// uncounted and unasked, to Answer.
func TestAnswerNow(t *testing.T) {
	up := &scripted{reply: reply(dns.RcodeSuccess, []string{"out.example. 60 IN A 192.0.2.1"}, nil)}
	r := newResolver(up.exchange)
	r.SetView(testView())
	if resp, ok := r.AnswerNow("client", query("web.", dns.TypeA), "udp"); !ok || len(resp.Answer) != 1 {
		t.Errorf("a local name: %v, %v", resp, ok)
	}
	if resp, ok := r.AnswerNow("client", query("out.example.", dns.TypeA), "udp"); ok || resp != nil || up.count() != 0 {
		t.Errorf("a name not cached: %v, %v, %d asked upstream; want it left to Answer", resp, ok, up.count())
	}
	if resp := r.Answer("client", query("out.example.", dns.TypeA), "udp"); len(resp.Answer) != 1 {
		t.Fatalf("forwarded: %v", resp)
	}
	if resp, ok := r.AnswerNow("client", query("out.example.", dns.TypeA), "udp"); !ok || len(resp.Answer) != 1 {
		t.Errorf("a cached name: %v, %v", resp, ok)
	}
	if st := r.Stats(); st.Local != 1 || st.Forwarded != 1 || st.CacheHit != 1 {
		t.Errorf("stats %+v, want 1 local, 1 forwarded, 1 cache hit", st)
	}
}

// Removing a sandbox's socket while the loop is reading it closes the
// socket before remove returns, not when the read ends: the address is
// free for the next sandbox of that namespace at once.
func TestRemoveWaitsForTheSocketsRead(t *testing.T) {
	testenv.RequirePrivileges(t)
	ns := sandboxNS(t, 0)
	l, err := newUDPLoop()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	reading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	handle := func(*udpListener, []byte, netip.AddrPort, []byte) []byte {
		once.Do(func() { close(reading) })
		<-release
		return nil
	}
	addr := netip.MustParseAddrPort(Address)
	var s *udpListener
	err = namespace.Do(ns, func() (err error) {
		if s, err = l.listen(addr, handle); err != nil {
			return err
		}
		c, err := net.Dial("udp4", Address)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("query"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	<-reading
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	l.remove(s)
	if err := listenUDP(ns); err != nil {
		t.Errorf("listen where a removed socket was, as soon as remove returned: %v", err)
	}
}

// listenUDP listens on the resolver's address in the namespace at ns, and
// stops: it fails while a socket there holds the address.
func listenUDP(ns string) error {
	return namespace.Do(ns, func() error {
		pc, err := net.ListenPacket("udp4", Address)
		if err == nil {
			pc.Close()
		}
		return err
	})
}

package test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// monitorProcess is `ebpfnet monitor` running against a host's daemon.
type monitorProcess struct {
	cmd    *exec.Cmd
	events chan api.Event
	exited chan error
}

// startMonitor runs `ebpfnet monitor -o json` with args and waits until it
// says it listens.
func startMonitor(t *testing.T, h *testbed.Host, args ...string) *monitorProcess {
	t.Helper()
	cmd := exec.Command(testbed.Binary(t), append([]string{"monitor", "-o", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "EBPFNET_SOCKET="+h.Socket())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &monitorProcess{cmd: cmd, events: make(chan api.Event, 1024), exited: make(chan error, 1)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-m.exited
	})
	listening := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		var said []string
		for s.Scan() {
			said = append(said, s.Text())
			if strings.HasPrefix(s.Text(), "listening for ") {
				listening <- ""
			}
		}
		listening <- strings.Join(said, "\n")
	}()
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			var ev api.Event
			if err := json.Unmarshal(s.Bytes(), &ev); err != nil {
				t.Errorf("monitor printed %q: %v", s.Text(), err)
				continue
			}
			m.events <- ev
		}
		close(m.events)
		m.exited <- cmd.Wait()
	}()
	select {
	case said := <-listening:
		if said != "" {
			t.Fatalf("monitor did not start: %s", said)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("monitor did not say it listens within 10s")
	}
	return m
}

// waitFor reads events until one satisfies match.
func (m *monitorProcess) waitFor(t *testing.T, what string, match func(api.Event) bool) api.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var seen []api.Event
	for {
		select {
		case ev, ok := <-m.events:
			if !ok {
				t.Fatalf("monitor exited before %s; saw %+v", what, seen)
			}
			if match(ev) {
				return ev
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("no event of %s within 10s; saw %+v", what, seen)
		}
	}
}

// pinnedMonitorTypes reads the monitor flag straight from the daemon's
// pinned map, as the datapath sees it.
func pinnedMonitorTypes(t *testing.T, h *testbed.Host) uint32 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(h.BPFFS(), "monitor"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v struct{ Types, Pad uint32 }
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v.Types
}

func waitMonitoring(t *testing.T, h *testbed.Host, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Status().Monitoring != want {
		if time.Now().After(deadline) {
			t.Fatalf("status says events are on for %q, want %q", h.Status().Monitoring, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `ebpfnet monitor` shows a cross-network drop with the names of both
// ends; the datapath writes events only while a monitor runs, and a
// daemon that died with one running leaves them on only until it starts
// again.
func TestMonitor(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	n1, n2 := h.Name("n1"), h.Name("n2")
	h.MustCLI("network", "create", n1)
	h.MustCLI("network", "create", n2)
	a, b := h.Name("a"), h.Name("b")
	h.MustCLI("sandbox", "create", a, "--network", n1)
	h.MustCLI("sandbox", "create", b, "--network", n2)
	c := h.Name("c")
	h.MustCLI("sandbox", "create", c, "--network", n1)
	aIP, bIP := h.IP(a, n1), h.IP(b, n2)
	if got := h.Status().Monitoring; got != "" {
		t.Fatalf("events on (%q) with no monitor running", got)
	}

	m := startMonitor(t, h, "--type", "drop")
	// Another monitor, of an unrelated sandbox, sees none of it.
	other := startMonitor(t, h, "--type", "drop", "--sandbox", c)
	waitMonitoring(t, h, "drop")
	if err := h.Ping(a, bIP); err == nil {
		t.Fatalf("%s reached %s on another network", a, bIP)
	}
	ev := m.waitFor(t, "the cross-network drop", func(ev api.Event) bool { return ev.Verdict == "drop_cross_network" })
	var hostSide string
	for _, e := range h.Status().Endpoints {
		if e.Sandbox == a {
			hostSide = e.Interface
		}
	}
	// The echo request's identifier stands in for its source port.
	if ev.Type != "drop" || ev.Program != "from_container" || ev.Proto != "icmp" || !strings.HasPrefix(ev.Before.Src, aIP+":") ||
		ev.Before.Dst != bIP || ev.After != nil || ev.Sandbox != a || ev.Network != n1 || ev.PeerSandbox != b ||
		ev.PeerNetwork != n2 || ev.Interface != hostSide || time.Since(ev.Time).Abs() > 30*time.Second {
		t.Errorf("event %+v, want from_container's drop of icmp %s (%s/%s) -> %s (%s/%s) on %s, now", ev, aIP, a, n1, bIP, b, n2, hostSide)
	}
	for drained := false; !drained; {
		select {
		case ev, ok := <-other.events:
			drained = !ok
			if ok && ev.Sandbox != c && ev.PeerSandbox != c {
				t.Errorf("a monitor of sandbox %s saw %+v", c, ev)
			}
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}

	// The monitors leave: the datapath stops writing events.
	for _, p := range []*monitorProcess{m, other} {
		p.cmd.Process.Signal(syscall.SIGINT)
		if err := <-p.exited; err != nil {
			t.Errorf("monitor exited with %v on SIGINT", err)
		}
		p.exited <- nil // for the cleanup
	}
	waitMonitoring(t, h, "")
	if got := pinnedMonitorTypes(t, h); got != 0 {
		t.Errorf("monitor map holds %#x after the last monitor left, want 0", got)
	}

	// A daemon killed with a monitor running leaves the flag set; the
	// monitor tells its user, and the next daemon clears the flag.
	m = startMonitor(t, h, "--type", "all")
	waitMonitoring(t, h, "all")
	h.Stop(syscall.SIGKILL)
	if got := pinnedMonitorTypes(t, h); got != 3 {
		t.Errorf("monitor map holds %#x after the daemon died, want 3 (drop and trace)", got)
	}
	select {
	case err := <-m.exited:
		if err == nil {
			t.Error("monitor exited cleanly when its daemon died, want an error")
		}
		m.exited <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("monitor still runs 10s after its daemon died")
	}
	h.Start()
	if got := h.Status().Monitoring; got != "" {
		t.Errorf("events on (%q) after the daemon restarted with no monitor", got)
	}
	if got := pinnedMonitorTypes(t, h); got != 0 {
		t.Errorf("monitor map holds %#x after the daemon restarted, want 0", got)
	}
}

package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// difference says where two states differ: the words of each that the
// other lacks.
func difference(before, now string) string {
	a, b := strings.Fields(before), strings.Fields(now)
	var gone, added []string
	for _, w := range a {
		if !slices.Contains(b, w) {
			gone = append(gone, w)
		}
	}
	for _, w := range b {
		if !slices.Contains(a, w) {
			added = append(added, w)
		}
	}
	return fmt.Sprintf("gone %q, added %q", gone, added)
}

// change is one engine change, its inverse, and what says it is there.
type change struct {
	name   string
	do     func() error
	undo   func() error
	exists func() bool
}

// crashBed is a host whose daemon is the failpoints build: the file that
// arms its failpoints and the trace of the steps it goes through.
type crashBed struct {
	t            *testing.T
	h            *testbed.Host
	out          testbed.Outside
	points, hits string
}

func newCrashBed(t *testing.T) *crashBed {
	var out testbed.Outside
	h := testbed.NewHostWith(t, func(h *testbed.Host) { out = h.AddOutside() })
	b := &crashBed{t: t, h: h, out: out, points: filepath.Join(t.TempDir(), "points"), hits: filepath.Join(t.TempDir(), "hits")}
	h.Stop(syscall.SIGTERM)
	h.Failpoints("EBPFNET_FAILPOINTS_FILE="+b.points, "EBPFNET_FAILPOINTS_TRACE="+b.hits)
	h.Start()
	return b
}

// arm makes the daemon's failpoints spec, counted from now, and clears the
// trace.
func (b *crashBed) arm(spec string) {
	b.t.Helper()
	must(b.t, os.WriteFile(b.hits, nil, 0o644))
	must(b.t, os.WriteFile(b.points, []byte(spec), 0o644))
}

// steps are the failpoints c goes through, each NAME@N.
func (b *crashBed) steps(c change) []string {
	b.t.Helper()
	b.arm("")
	if err := c.do(); err != nil {
		b.t.Fatalf("%s: %v", c.name, err)
	}
	data, err := os.ReadFile(b.hits)
	must(b.t, err)
	must(b.t, c.undo())
	seen := map[string]int{}
	var out []string
	for _, name := range strings.Fields(string(data)) {
		seen[name]++
		out = append(out, fmt.Sprintf("%s@%d", name, seen[name]))
	}
	return out
}

// consistent fails unless the kernel and the maps are as the state says
// (a reconcile would repair nothing), no namespace is left that no sandbox
// names, and the state is before's or c is wholly there.
func (b *crashBed) consistent(c change, step, before string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := b.h.Client.Drift(ctx)
	if err != nil || !d.Clean() {
		b.t.Errorf("%s, %s: a reconcile would still repair %+v (%v)", c.name, step, d, err)
	}
	sbs, err := b.h.Client.Sandboxes(ctx)
	must(b.t, err)
	namespaces, _ := filepath.Glob("/run/netns/" + b.h.Prefix + "-*")
	for _, ns := range namespaces {
		name := filepath.Base(ns)
		if !strings.HasSuffix(name, "-host") && !strings.HasSuffix(name, "-out") && !strings.HasSuffix(name, "-c1") &&
			!slices.ContainsFunc(sbs, func(s api.Sandbox) bool { return s.Name == name }) {
			b.t.Errorf("%s, %s: namespace %s is left, which no sandbox names", c.name, step, name)
		}
	}
	// The host's own addresses follow its interfaces a moment after a
	// reconcile removed a leftover bridge (the host watcher).
	now := snapshot(b.t, b.h)
	for deadline := time.Now().Add(5 * time.Second); now != before && !c.exists() && time.Now().Before(deadline); now = snapshot(b.t, b.h) {
		time.Sleep(100 * time.Millisecond)
	}
	if now != before && !c.exists() {
		b.t.Errorf("%s, %s: half made: %s", c.name, step, difference(before, now))
	}
}

// Every change of the engine, with the daemon killed at each of its steps
// in turn (package control/failpoint), is wholly made or wholly undone
// once the daemon is back: the state is as before or holds the change, a
// reconcile has nothing left to repair, and nothing is left that no record
// names. The kernel refusing a step before the commit (ENOSPC, EEXIST)
// fails the change in one line and changes nothing.
func TestCrashAtEveryStep(t *testing.T) {
	t.Parallel()
	b := newCrashBed(t)
	h := b.h
	net1, net2, web, side := h.Name("n1"), h.Name("n2"), h.Name("web"), h.Name("side")
	h.MustCLI("network", "create", "--ipv6", net1)
	h.MustCLI("network", "create", net2)
	h.MustCLI("sandbox", "create", web, "--network", net1, "-p", "8080:7777")
	testbed.ServeOn(t, h.NS(web), 7777)
	ctx := context.Background()
	cli := func(args ...string) func() error {
		return func() error {
			if out, err := h.CLI(args...); err != nil {
				return fmt.Errorf("%s (%w)", strings.TrimSpace(out), err)
			}
			return nil
		}
	}
	sandbox := func(name string) func() bool {
		return func() bool { _, err := h.Client.Sandbox(ctx, name); return err == nil }
	}
	publishes := func(port string) func() bool {
		return func() bool { return strings.Contains(h.MustCLI("port", web), ":"+port) }
	}
	ns := containerNS(t, h, "c1")
	ref := api.AttachmentRef{ContainerID: "c1", IfName: "eth0"}
	changes := []change{
		{"network create", cli("network", "create", h.Name("n3")), cli("network", "rm", h.Name("n3")),
			func() bool { _, err := h.Client.Network(ctx, h.Name("n3")); return err == nil }},
		{"sandbox create", cli("sandbox", "create", side, "--network", net1, "--network", net2, "-p", "8090:7777", "--publish-allow", "10.99.0.0/24"),
			cli("sandbox", "rm", "-f", side), sandbox(side)},
		{"connect", cli("network", "connect", net2, web), cli("network", "disconnect", net2, web),
			func() bool { return len(h.Sandbox(web).NetworkSettings.Networks) == 2 }},
		{"publish", cli("publish", "8081:7777", "8081:7777/udp", web), cli("unpublish", "8081", web), publishes("8081")},
		{"unpublish", cli("unpublish", "8080", web), cli("publish", "8080:7777", web), func() bool { return !publishes("8080")() }},
		{"attach (CNI)", func() error {
			_, err := h.Client.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "c1", IfName: "eth0", NetNS: ns, Network: net1,
				Publish: []api.PortMapping{{Proto: "tcp", HostPort: 8095, Port: 7777}}, PublishSources: api.Sources{Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
			return err
		}, func() error { return h.Client.Detach(ctx, ref) }, sandbox("c1:eth0")},
		// Last: its undo makes web again, without the server the checks
		// above reach.
		{"sandbox remove", cli("sandbox", "rm", "-f", web), cli("sandbox", "create", web, "--network", net1, "-p", "8080:7777"),
			func() bool { return !sandbox(web)() }},
	}
	crashes, refusals := 0, 0
	for _, c := range changes {
		steps := b.steps(c)
		if len(steps) == 0 {
			t.Fatalf("%s went through no failpoint", c.name)
		}
		committed := false
		for _, step := range steps {
			before := snapshot(t, h)
			// The daemon dies at the step.
			b.arm(step + "=crash")
			c.do()
			select {
			case <-time.After(10 * time.Second):
				t.Fatalf("%s, %s: the daemon did not die", c.name, step)
			case <-h.Exited():
			}
			b.arm("")
			h.Start()
			crashes++
			b.consistent(c, step, before)
			if c.exists() {
				if c.name == "publish" {
					mustWork(t, "the port published before the crash at "+step, echoFrom(b.out.NS, "tcp", hostIP+":8081", ""))
				}
				must(t, c.undo())
			}
			// The kernel refuses the step, before the commit: the change
			// fails in one line and changes nothing.
			if strings.HasPrefix(step, "store.commit@") {
				committed = true
			}
			if committed || strings.HasPrefix(step, "engine.names") {
				continue
			}
			errno := "ENOSPC"
			if strings.HasPrefix(step, "wiring.link") || strings.HasPrefix(step, "engine.namespace") {
				errno = "EEXIST"
			}
			before = snapshot(t, h)
			b.arm(step + "=" + errno)
			err := c.do()
			refusals++
			if err == nil {
				t.Errorf("%s, the kernel refusing %s with %s: no error", c.name, step, errno)
				must(t, c.undo())
				continue
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "failpoint "+strings.Split(step, "@")[0]) {
				t.Errorf("%s, the kernel refusing %s: %q, want one line saying so", c.name, step, msg)
			}
			if now := snapshot(t, h); now != before {
				t.Errorf("%s, the kernel refusing %s changed the state: %s", c.name, step, difference(before, now))
			}
		}
	}
	t.Logf("%d changes: %d crashes and %d refusals injected", len(changes), crashes, refusals)
}

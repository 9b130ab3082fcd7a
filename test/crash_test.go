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

// change is one engine change, its inverse, and what says it is there;
// works, if given, checks that a change a crash left made does its work.
type change struct {
	name   string
	do     func() error
	undo   func() error
	exists func() bool
	works  func() error
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
		// The host's, the outside's, and the containers' the tests made.
		ours := slices.ContainsFunc([]string{"-host", "-out", "-c1", "-c2"}, func(suffix string) bool { return strings.HasSuffix(name, suffix) })
		if !ours && !slices.ContainsFunc(sbs, func(s api.Sandbox) bool { return s.Name == name }) {
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

// settledSnapshot is the host's snapshot once it holds still: the host's
// own addresses follow its interfaces a moment after they change (the
// host watcher), as when the undo of the change before removed a bridge.
func settledSnapshot(t *testing.T, h *testbed.Host) string {
	t.Helper()
	was := snapshot(t, h)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		now := snapshot(t, h)
		if now == was {
			break
		}
		was = now
	}
	return was
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
			func() bool { _, err := h.Client.Network(ctx, h.Name("n3")); return err == nil }, nil},
		{"sandbox create", cli("sandbox", "create", side, "--network", net1, "--network", net2, "-p", "8090:7777", "--publish-allow", "10.99.0.0/24"),
			cli("sandbox", "rm", "-f", side), sandbox(side), nil},
		{"connect", cli("network", "connect", net2, web), cli("network", "disconnect", net2, web),
			func() bool { return len(h.Sandbox(web).NetworkSettings.Networks) == 2 }, nil},
		{"publish", cli("publish", "8081:7777", "8081:7777/udp", web), cli("unpublish", "8081", web), publishes("8081"),
			func() error { return echoFrom(b.out.NS, "tcp", hostIP+":8081", "") }},
		{"unpublish", cli("unpublish", "8080", web), cli("publish", "8080:7777", web), func() bool { return !publishes("8080")() }, nil},
		{"attach (CNI)", func() error {
			_, err := h.Client.Attach(ctx, api.AttachmentCreate{Frontend: "cni", ContainerID: "c1", IfName: "eth0", NetNS: ns, Network: net1,
				Publish: []api.PortMapping{{Proto: "tcp", HostPort: 8095, Port: 7777}}, PublishSources: api.Sources{Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
			return err
		}, func() error { return h.Client.Detach(ctx, ref) }, sandbox("c1:eth0"), nil},
		// Last: its undo makes web again, without the server the checks
		// above reach.
		{"sandbox remove", cli("sandbox", "rm", "-f", web), cli("sandbox", "create", web, "--network", net1, "-p", "8080:7777"),
			func() bool { return !sandbox(web)() }, nil},
	}
	crashes, refusals := b.crashAtEveryStep(changes)
	t.Logf("%d changes: %d crashes and %d refusals injected", len(changes), crashes, refusals)
}

// crashAtEveryStep runs each change with the daemon killed at each of its
// steps in turn, and with the kernel refusing each step before the commit,
// and checks what is left each time.
func (b *crashBed) crashAtEveryStep(changes []change) (crashes, refusals int) {
	t, h := b.t, b.h
	for _, c := range changes {
		steps := b.steps(c)
		if len(steps) == 0 {
			t.Fatalf("%s went through no failpoint", c.name)
		}
		committed := false
		for _, step := range steps {
			before := settledSnapshot(t, h)
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
				if c.works != nil {
					mustWork(t, c.name+" made before the crash at "+step, c.works())
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
	return crashes, refusals
}

// Docker's plugin calls, each with the daemon killed at each of its steps
// in turn and with the kernel refusing each, as TestCrashAtEveryStep does
// with the engine's own changes: dockerd calls a plugin that restarts
// under it, and asks again or undoes what it asked.
func TestCrashAtEveryPluginCall(t *testing.T) {
	t.Parallel()
	b := newCrashBed(t)
	h := b.h
	ctx := context.Background()
	id := func(what string) string { return pluginID(h, what) }
	call := func(path string, req map[string]any) func() error {
		return func() error { return h.PluginCall("/NetworkDriver."+path, req, nil) }
	}
	network := func(nid, subnet, gw string) map[string]any {
		return map[string]any{"NetworkID": nid, "Options": map[string]any{"com.docker.network.generic": map[string]any{}},
			"IPv4Data": []map[string]any{{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gw}}}
	}
	endpoint := func(nid, eid, addr string) map[string]any {
		return map[string]any{"NetworkID": nid, "EndpointID": eid, "Interface": map[string]any{"Address": addr}}
	}
	ids := func(nid, eid string) map[string]any { return map[string]any{"NetworkID": nid, "EndpointID": eid} }
	join := func(nid, eid, ns string) map[string]any {
		return map[string]any{"NetworkID": nid, "EndpointID": eid, "SandboxKey": ns}
	}
	networkThere := func(nid string) bool { _, err := h.Client.Network(ctx, nid); return err == nil }
	endpointThere := func(eid string) bool { _, err := h.Client.Sandbox(ctx, eid); return err == nil }

	// A network; an endpoint on it joined to a container, one to join,
	// one to delete; a network to delete.
	net1, net2, gone := id("n1"), id("n2"), id("gone")
	web, side, joiner, leaver := id("web"), id("side"), id("joiner"), id("leaver")
	c1, c2 := containerNS(t, h, "c1"), containerNS(t, h, "c2")
	for _, c := range []func() error{
		call("CreateNetwork", network(net1, "172.29.0.0/24", "172.29.0.1/24")),
		call("CreateNetwork", network(gone, "172.27.0.0/24", "172.27.0.1/24")),
		call("CreateEndpoint", endpoint(net1, web, "172.29.0.9/24")),
		call("Join", join(net1, web, c1)),
		call("CreateEndpoint", endpoint(net1, joiner, "172.29.0.10/24")),
		call("CreateEndpoint", endpoint(net1, leaver, "172.29.0.11/24")),
	} {
		must(t, c())
	}
	portMap := map[string]any{"NetworkID": net1, "EndpointID": web, "Options": map[string]any{
		"com.docker.network.portmap": []map[string]any{{"Proto": 6, "Port": 7777, "HostPort": 8097}}}}
	changes := []change{
		{"CreateNetwork", call("CreateNetwork", network(net2, "172.28.0.0/24", "172.28.0.1/24")),
			call("DeleteNetwork", map[string]any{"NetworkID": net2}), func() bool { return networkThere(net2) }, nil},
		{"CreateEndpoint", call("CreateEndpoint", endpoint(net1, side, "172.29.0.5/24")), call("DeleteEndpoint", ids(net1, side)),
			func() bool { return endpointThere(side) }, nil},
		{"Join", call("Join", join(net1, joiner, c2)), call("Leave", ids(net1, joiner)), func() bool {
			sb, err := h.Client.Sandbox(ctx, joiner)
			return err == nil && sb.NetworkSettings.SandboxKey == c2
		}, nil},
		{"ProgramExternalConnectivity", call("ProgramExternalConnectivity", portMap), call("RevokeExternalConnectivity", ids(net1, web)), func() bool {
			sb, err := h.Client.Sandbox(ctx, web)
			return err == nil && len(sb.NetworkSettings.Ports) > 0
		}, nil},
		{"DeleteEndpoint", call("DeleteEndpoint", ids(net1, leaver)), call("CreateEndpoint", endpoint(net1, leaver, "172.29.0.11/24")),
			func() bool { return !endpointThere(leaver) }, nil},
		{"DeleteNetwork", call("DeleteNetwork", map[string]any{"NetworkID": gone}), call("CreateNetwork", network(gone, "172.27.0.0/24", "172.27.0.1/24")),
			func() bool { return !networkThere(gone) }, nil},
	}
	crashes, refusals := b.crashAtEveryStep(changes)
	t.Logf("%d plugin calls: %d crashes and %d refusals injected", len(changes), crashes, refusals)
}

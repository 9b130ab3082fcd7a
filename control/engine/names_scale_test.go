package engine

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/pools"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// TestNamesWorkPerChange catches a return of work per change that grows
// with the number of sandboxes (issue 24): with 200 sandboxes on two user
// networks, a create writes the files of the new sandbox alone and enters
// its namespace alone, a remove writes none, and a sandbox that others
// link to rewrites theirs too, and only theirs.
func TestNamesWorkPerChange(t *testing.T) {
	te := newTestEngine(t)
	nets := []string{te.name("na"), te.name("nb")}
	for i, n := range nets {
		subnet := netip.MustParsePrefix(fmt.Sprintf("172.%d.0.0/16", 21+i))
		if _, err := te.CreateNetwork(NetworkSpec{Name: n, IPv4: pools.Spec{Subnet: subnet}}); err != nil {
			t.Fatal(err)
		}
	}
	const present = 200
	target, linker := te.name("s0"), te.name("linker")
	for i := range present - 1 {
		if _, err := te.CreateSandbox(SandboxSpec{Name: te.name(fmt.Sprintf("s%d", i)), Networks: []string{nets[i%2]}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: linker, Networks: []string{nets[0]}, Links: []store.Link{{Sandbox: target, Alias: "db"}}}); err != nil {
		t.Fatal(err)
	}
	type work struct{ files, entered uint64 }
	now := func() work { return work{te.names.FilesWritten(), te.dnsServers.Entered()} }
	check := func(what string, want work, change func() error) {
		t.Helper()
		before := now()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := now()
		if got := (work{after.files - before.files, after.entered - before.entered}); got != want {
			t.Errorf("%s with %d sandboxes present: wrote the files of %d sandboxes and entered %d namespaces, want %d and %d",
				what, present, got.files, got.entered, want.files, want.entered)
		}
	}

	fresh := te.name("fresh")
	check("create with a published port", work{1, 1}, func() error {
		_, err := te.CreateSandbox(SandboxSpec{Name: fresh, Networks: []string{nets[1]},
			Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: 18080, Port: 80}}})
		return err
	})
	// The view, changed a sandbox at a time, still knows the first.
	if addrs := te.lookup(t, fresh, te.name("s1")); len(addrs) != 1 {
		t.Errorf("%s resolves %s to %v, want its address", fresh, te.name("s1"), addrs)
	}
	check("remove", work{0, 0}, func() error { return te.RemoveSandbox(fresh, true) })
	if addrs := te.lookup(t, linker, fresh); addrs != nil {
		t.Errorf("%s still resolves removed %s: %v", linker, fresh, addrs)
	}
	check("remove a link's target", work{1, 0}, func() error { return te.RemoveSandbox(target, true) })
	check("create a link's target again", work{2, 1}, func() error {
		_, err := te.CreateSandbox(SandboxSpec{Name: target, Networks: []string{nets[1]}})
		return err
	})
	hosts := te.hostsOf(t, linker)
	if addrs := te.lookup(t, linker, target); len(addrs) != 0 {
		t.Errorf("%s resolves %s, on a network it is not on: %v", linker, target, addrs)
	}
	if !strings.Contains(hosts, "\tdb "+target+"\n") {
		t.Errorf("hosts of %s does not name its link to the new %s:\n%s", linker, target, hosts)
	}
}

// lookup is what the resolver answers sandbox for name's A records from
// its view, nil for a name it would ask upstream.
func (te testEngine) lookup(t *testing.T, sandbox, name string) []string {
	t.Helper()
	var id string
	te.store.View(func(tx *store.Tx) error { sb, err := tx.Sandbox(sandbox); id = sb.ID; return err })
	resp, ok := te.resolver.AnswerNow(id, new(mdns.Msg).SetQuestion(name+".", mdns.TypeA), "udp")
	if !ok {
		return nil
	}
	var out []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// hostsOf reads a sandbox's hosts file.
func (te testEngine) hostsOf(t *testing.T, sandbox string) string {
	t.Helper()
	var sb store.Sandbox
	te.store.View(func(tx *store.Tx) (err error) { sb, err = tx.Sandbox(sandbox); return err })
	data, err := os.ReadFile(filepath.Join(te.cfg.Runtime.FilesDir(sb), "hosts"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// What a sandbox create and remove allocate must not grow with the
// sandboxes on their network either: what grows there is work per change
// that follows the state (the names of a whole network indexed again, a
// pool's every address decoded as text), and it makes the collector run
// ever more often (issue 24).
func TestAllocationPerChangeStaysFlat(t *testing.T) {
	te := newTestEngine(t)
	n := te.name("na")
	if _, err := te.CreateNetwork(NetworkSpec{Name: n, IPv4: pools.Spec{Subnet: netip.MustParsePrefix("172.24.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	perChange := func() uint64 {
		const changes = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range changes {
			name := te.name("timed")
			if _, err := te.CreateSandbox(SandboxSpec{Name: name, Networks: []string{n},
				Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: 19000, Port: 80}}}); err != nil {
				t.Fatal(err)
			}
			if err := te.RemoveSandbox(name, true); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / changes
	}
	alone := perChange()
	const present = 400
	for i := range present {
		if _, err := te.CreateSandbox(SandboxSpec{Name: te.name(fmt.Sprintf("s%d", i)), Networks: []string{n},
			Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: uint16(20000 + i), Port: 80}}}); err != nil {
			t.Fatal(err)
		}
	}
	crowded := perChange()
	t.Logf("allocated per create and remove: %d KiB alone, %d KiB with %d sandboxes on the network", alone>>10, crowded>>10, present)
	if float64(crowded) > 1.6*float64(alone) {
		t.Errorf("a create and remove allocate %d KiB with %d sandboxes on their network, %.1f× the %d KiB with none", crowded>>10, present, float64(crowded)/float64(alone), alone>>10)
	}
}

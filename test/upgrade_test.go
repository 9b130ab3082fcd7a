package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

const replacedLog = "replaced a pinned map of another layout"

// TestUpgradeReplacesMapsOfAnotherLayout starts the daemon over pins that
// an older binary left with other layouts, as an upgrade does: it must
// come up serving, without `ebpfnet reset`, and say what it replaced.
func TestUpgradeReplacesMapsOfAnotherLayout(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777")
	testbed.Serve(t, h.NS(web))
	mustWork(t, "published port before the upgrade", testbed.TCPTo(out.NS, hostIP+":8080"))
	h.Stop(syscall.SIGTERM)

	// The "old binary's" maps: the running programs keep theirs, only the
	// pins change, as if the new binary had been built with other layouts.
	for _, name := range []string{"ct", "publications"} {
		pin := filepath.Join(h.BPFFS(), name)
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8, Pinning: ebpf.PinByName},
			ebpf.MapOptions{PinPath: h.BPFFS()})
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	}

	h.Start()
	log := h.DaemonLog()
	for _, name := range []string{"ct", "publications"} {
		if !strings.Contains(log, replacedLog) || !strings.Contains(log, "map="+name+" ") {
			t.Errorf("the daemon did not log that it replaced %s:\n%s", name, log)
		}
	}
	if n := strings.Count(log, replacedLog); n != 2 {
		t.Errorf("logged %d replaced maps, want 2:\n%s", n, log)
	}
	spec, err := bpf.LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ct", "publications"} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(h.BPFFS(), name), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Maps[name].Compatible(m); err != nil {
			t.Errorf("pinned %s after the upgrade: %v", name, err)
		}
		m.Close()
	}
	// The new, empty publications map was refilled from the store.
	mustWork(t, "published port after the upgrade", testbed.TCPTo(out.NS, hostIP+":8080"))

	// A restart of the same binary keeps every map.
	h.Stop(syscall.SIGTERM)
	h.Start()
	if n := strings.Count(h.DaemonLog(), replacedLog); n != 2 {
		t.Errorf("a restart of the same binary replaced maps:\n%s", h.DaemonLog())
	}
	mustWork(t, "published port after a restart", testbed.TCPTo(out.NS, hostIP+":8080"))
}

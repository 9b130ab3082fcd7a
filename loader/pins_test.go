package loader_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// newPinDir is a fresh directory on the machine's bpffs, removed (with
// every pin in it) when the test ends.
func newPinDir(t *testing.T) string {
	t.Helper()
	testenv.RequirePrivileges(t)
	dir, err := os.MkdirTemp("/sys/fs/bpf", "ebpfnet-loader-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := loader.Reset(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// pinMap creates a map pinned by name in dir, as an older binary would have.
func pinMap(t *testing.T, dir string, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	spec = spec.Copy()
	spec.Pinning = ebpf.PinByName
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatalf("pin map %s: %v", spec.Name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func datapathSpec(t *testing.T) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := bpf.LoadDatapath()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestLoadReplacesPinnedMapsOfAnotherLayout(t *testing.T) {
	dir := newPinDir(t)
	spec := datapathSpec(t)

	// ct as a much older binary had it: another type and other sizes.
	oldCT := pinMap(t, dir, &ebpf.MapSpec{Name: "ct", Type: ebpf.LRUHash, KeySize: 4, ValueSize: 4, MaxEntries: 16})
	if err := oldCT.Put(uint32(1), uint32(2)); err != nil {
		t.Fatal(err)
	}
	// publications with the same sizes, type and flags, but fields in
	// other places: only the BTF layout tells them apart.
	want := spec.Maps["publications"]
	u8 := &btf.Int{Name: "u8", Size: 1}
	u16 := &btf.Int{Name: "u16", Size: 2}
	u32 := &btf.Int{Name: "u32", Size: 4}
	shuffled := want.Copy()
	shuffled.Key = &btf.Struct{Name: "publication_key", Size: want.KeySize, Members: []btf.Member{
		{Name: "port", Type: u16, Offset: 0},
		{Name: "proto", Type: u8, Offset: 16},
		{Name: "pad", Type: u8, Offset: 24},
		{Name: "addr", Type: u32, Offset: 32},
	}}
	oldPubs := pinMap(t, dir, shuffled)
	if err := oldPubs.Put(make([]byte, want.KeySize), make([]byte, want.ValueSize)); err != nil {
		t.Fatal(err)
	}
	// endpoints exactly as this binary declares it: kept, with its entry.
	endpoints := pinMap(t, dir, spec.Maps["endpoints"])
	endpointKey, endpointValue := entry(spec.Maps["endpoints"], 1)
	if err := endpoints.Put(endpointKey, endpointValue); err != nil {
		t.Fatal(err)
	}

	// A map the datapath no longer has, and a swap that died half way.
	for _, name := range []string{"old_nat", "ct_v0"} {
		pinMap(t, dir, &ebpf.MapSpec{Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	}

	dp, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatalf("load over maps of another layout: %v", err)
	}
	defer dp.Close()
	if retired := dp.RetiredMaps(); !slices.Equal(retired, []string{"ct_v0", "old_nat"}) {
		t.Errorf("retired maps %v, want ct_v0 and old_nat", retired)
	}
	for _, name := range []string{"old_nat", "ct_v0"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin of retired map %s: %v, want it gone", name, err)
		}
	}

	replaced := dp.ReplacedMaps()
	if len(replaced) != 2 || replaced[0].Name != "ct" || replaced[1].Name != "publications" {
		t.Fatalf("replaced %+v, want ct and publications", replaced)
	}
	if r := replaced[0].Reason; !strings.Contains(r, "Type: LRUHash changed to Hash") || !strings.Contains(r, "KeySize: 4 changed to") {
		t.Errorf("ct replaced because %q, want its type and key size named", r)
	}
	if r := replaced[1].Reason; !strings.Contains(r, "key layout {port@0:u16 proto@2:u8 pad@3:u8 addr@4:u32} changed to {addr@0:") || strings.Contains(r, "value layout") {
		t.Errorf("publications replaced because %q, want the key layout (and only it) named", r)
	}

	// The pins now hold this binary's maps, of this binary's layout.
	for _, m := range []struct {
		name string
		dp   *ebpf.Map
		old  *ebpf.Map
	}{{"ct", dp.Maps.Ct, oldCT}, {"publications", dp.Maps.Publications, oldPubs}} {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, m.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		if mapID(t, pinned) != mapID(t, m.dp) || mapID(t, pinned) == mapID(t, m.old) {
			t.Errorf("pin %s holds map %d, want the loaded map %d (not the old %d)", m.name, mapID(t, pinned), mapID(t, m.dp), mapID(t, m.old))
		}
		if err := spec.Maps[m.name].Compatible(pinned); err != nil {
			t.Errorf("pinned %s: %v", m.name, err)
		}
		pinned.Close()
		var key []byte
		if it := m.dp.Iterate(); it.Next(&key, new([]byte)) {
			t.Errorf("replaced map %s is not empty", m.name)
		}
	}
	if mapID(t, dp.Maps.Endpoints) != mapID(t, endpoints) {
		t.Error("a map of the same layout was replaced")
	}
	var got []byte
	if err := dp.Maps.Endpoints.Lookup(endpointKey, &got); err != nil || !bytes.Equal(got, endpointValue) {
		t.Errorf("kept map lost its entry: %x, %v", got, err)
	}
}

// entry is a key and value for a map of spec's sizes, told apart by n.
// Raw bytes keep the test independent of what the fields are.
func entry(spec *ebpf.MapSpec, n byte) (key, value []byte) {
	key, value = make([]byte, spec.KeySize), make([]byte, spec.ValueSize)
	key[0], value[0] = n, n+1
	return key, value
}

func TestReloadKeepsPinnedMapsAndTheirEntries(t *testing.T) {
	dir := newPinDir(t)
	first, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key, value := entry(datapathSpec(t).Maps["ct"], 6)
	if err := first.Maps.Ct.Put(key, value); err != nil {
		t.Fatal(err)
	}
	ctID := mapID(t, first.Maps.Ct)
	var seed, seedAgain uint32
	if err := first.Maps.HashSeed.Lookup(uint32(0), &seed); err != nil || seed == 0 {
		t.Fatalf("a fresh load left hash_seed %#x (%v), want a key drawn", seed, err)
	}
	first.Close()

	second, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if r := second.ReplacedMaps(); len(r) != 0 {
		t.Fatalf("reloading the same binary replaced maps: %+v", r)
	}
	if r := second.RetiredMaps(); len(r) != 0 {
		t.Fatalf("reloading the same binary removed maps: %v", r)
	}
	if mapID(t, second.Maps.Ct) != ctID {
		t.Fatal("reload created a new ct map")
	}
	var got []byte
	if err := second.Maps.Ct.Lookup(key, &got); err != nil || !bytes.Equal(got, value) {
		t.Fatalf("conntrack entry lost across a reload: %x, %v", got, err)
	}
	// Flows hash as they did: one whose entries were lost goes back to its backend.
	if err := second.Maps.HashSeed.Lookup(uint32(0), &seedAgain); err != nil || seedAgain != seed {
		t.Fatalf("hash_seed %#x across a reload (%v), want %#x kept", seedAgain, err, seed)
	}
}

// Pins of a datapath from before the monitor (no events, monitor or
// monitor_budget map) are kept, and the new maps are created beside them.
func TestLoadOverPinsWithoutTheMonitorMaps(t *testing.T) {
	dir := newPinDir(t)
	first, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key, value := entry(datapathSpec(t).Maps["ct"], 7)
	if err := first.Maps.Ct.Put(key, value); err != nil {
		t.Fatal(err)
	}
	statsID := mapID(t, first.Maps.Stats)
	first.Close()
	newMaps := []string{"events", "monitor", "monitor_budget"}
	for _, name := range newMaps {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	second, err := loader.Load(loader.Options{PinDir: dir})
	if err != nil {
		t.Fatalf("load over the pins of a datapath without the monitor: %v", err)
	}
	defer second.Close()
	if r := second.ReplacedMaps(); len(r) != 0 {
		t.Errorf("replaced %+v, want every pinned map kept", r)
	}
	if mapID(t, second.Maps.Stats) != statsID {
		t.Error("the counters were replaced: the new verdict should fit the stats map's slots")
	}
	var got []byte
	if err := second.Maps.Ct.Lookup(key, &got); err != nil || !bytes.Equal(got, value) {
		t.Errorf("conntrack entry lost: %x, %v", got, err)
	}
	for _, name := range newMaps {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("new map %s not pinned: %v", name, err)
		}
	}
}

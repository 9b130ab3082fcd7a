package bpf_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/loader"
)

// shared are the private datapaths the tests share, by the options they
// were loaded with: a load takes seconds (the verifier), and a test needs
// empty maps, not programs of its own. They live as long as the test
// binary.
var shared = map[string]*loader.Datapath{}

// privateDatapath is a private, unpinned datapath loaded with opts whose
// maps are empty; they are emptied again when tb ends, for the next test
// that shares it. Tests run one at a time in this package.
func privateDatapath(tb testing.TB, opts loader.Options) *loader.Datapath {
	tb.Helper()
	key := fmt.Sprintf("%+v", opts)
	if opts.CTTimeouts != nil {
		key += fmt.Sprintf("%+v", *opts.CTTimeouts)
	}
	dp, ok := shared[key]
	if !ok {
		var err error
		if dp, err = loader.Load(opts); err != nil {
			tb.Fatal(err)
		}
		shared[key] = dp
	}
	tb.Cleanup(func() {
		if err := emptyMaps(&dp.Maps); err != nil {
			tb.Errorf("empty the maps for the next test: %v", err)
		}
	})
	return dp
}

// emptyMaps leaves every map as a fresh load has it: hash maps and tries
// without entries, arrays zeroed but hash_seed, which keeps its key. The ring buffer is drained by whoever
// reads it; socket storage goes with its sockets.
func emptyMaps(all *bpf.DatapathMaps) error {
	var errs []error
	v := reflect.ValueOf(all).Elem()
	for i := range v.NumField() {
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || m == all.HashSeed { // a fresh load draws a key, and keeps it
			continue
		}
		switch m.Type() {
		case ebpf.Hash, ebpf.LRUHash, ebpf.PerCPUHash, ebpf.LPMTrie, ebpf.DevMapHash:
			errs = append(errs, deleteAll(m))
		case ebpf.Array, ebpf.PerCPUArray:
			errs = append(errs, zeroAll(m))
		case ebpf.RingBuf, ebpf.SkStorage:
		default:
			errs = append(errs, fmt.Errorf("map %s: no way to empty a %s", m, m.Type()))
		}
	}
	return errors.Join(errs...)
}

func deleteAll(m *ebpf.Map) error {
	var keys [][]byte
	var prev any // nil asks for the first key
	for {
		next := make([]byte, m.KeySize())
		err := m.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("walk %s: %w", m, err)
		}
		keys, prev = append(keys, next), next
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	return nil
}

func zeroAll(m *ebpf.Map) error {
	var zero any = make([]byte, m.ValueSize())
	if m.Type() == ebpf.PerCPUArray {
		perCPU := make([][]byte, ebpf.MustPossibleCPU())
		for i := range perCPU {
			perCPU[i] = make([]byte, m.ValueSize())
		}
		zero = perCPU
	}
	for i := range m.MaxEntries() {
		if err := m.Put(i, zero); err != nil {
			return fmt.Errorf("zero %s[%d]: %w", m, i, err)
		}
	}
	return nil
}

package loader

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// ReplacedMap is a pinned map that Load replaced with an empty one, because
// this binary's datapath declares it differently (an upgrade changed its
// layout). Its entries are gone: the control plane rewrites the maps it
// owns; conntrack and counters start afresh.
type ReplacedMap struct {
	Name   string // the map's name, which is also its pin's
	Reason string // how the pinned map differs
}

// staleMaps finds the pinned maps under pinDir that the spec declares
// differently. It changes nothing: Load swaps them once everything else
// has loaded, so a failed upgrade leaves the old datapath as it was.
func staleMaps(spec *ebpf.CollectionSpec, pinDir string) ([]ReplacedMap, error) {
	var stale []ReplacedMap
	for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
		ms := spec.Maps[name]
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		pin := filepath.Join(pinDir, name)
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", pin, err)
		}
		reason, err := incompatibility(ms, m)
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("compare pinned map %s with this datapath's: %w", pin, err)
		}
		if reason != "" {
			stale = append(stale, ReplacedMap{Name: name, Reason: reason})
		}
	}
	return stale, nil
}

// retiredMaps lists the maps pinned in pinDir that the spec no longer
// declares (an upgrade renamed or dropped them). Nothing would ever
// remove them, and a conntrack table holds megabytes.
func retiredMaps(spec *ebpf.CollectionSpec, pinDir string) ([]string, error) {
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		return nil, fmt.Errorf("list pins in %s: %w", pinDir, err)
	}
	var retired []string
	for _, e := range entries {
		if e.IsDir() || spec.Maps[e.Name()] != nil {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, e.Name()), nil)
		if err != nil {
			continue // not a map: not ours to judge
		}
		m.Close()
		retired = append(retired, e.Name())
	}
	return retired, nil
}

// incompatibility says how a pinned map differs from ms, or "" when the
// programs may go on using it. Sizes alone miss a field that moved or took
// over padding (the same bytes meaning something else), so when both
// sides carry BTF the key and value layouts are compared as well.
func incompatibility(ms *ebpf.MapSpec, m *ebpf.Map) (string, error) {
	if err := ms.Compatible(m); errors.Is(err, ebpf.ErrMapIncompatible) {
		return strings.TrimSuffix(err.Error(), ": "+ebpf.ErrMapIncompatible.Error()), nil
	} else if err != nil {
		return "", err
	}
	oldKey, oldValue, err := pinnedKV(m)
	if err != nil || oldKey == nil || oldValue == nil || ms.Key == nil || ms.Value == nil {
		// A map without BTF (created by hand, or on a kernel without
		// map BTF) can only be judged by its sizes.
		return "", err
	}
	newKey, newValue, err := kernelKV(ms)
	if err != nil {
		return "", err
	}
	var diffs []string
	if o, n := layout(oldKey), layout(newKey); o != n {
		diffs = append(diffs, fmt.Sprintf("key layout %s changed to %s", o, n))
	}
	if o, n := layout(oldValue), layout(newValue); o != n {
		diffs = append(diffs, fmt.Sprintf("value layout %s changed to %s", o, n))
	}
	return strings.Join(diffs, ", "), nil
}

// kernelKV is the key and value types of ms as the kernel would store them
// for a new map. Going through the kernel, like the pinned map's types
// did, keeps whatever the library or the kernel rewrites when loading BTF
// from showing up as a difference.
func kernelKV(ms *ebpf.MapSpec) (key, value btf.Type, err error) {
	h, keyID, valueID, err := btf.MarshalMapKV(ms.Key, ms.Value)
	if err != nil {
		return nil, nil, fmt.Errorf("load key and value types of %s: %w", ms.Name, err)
	}
	defer h.Close()
	return typesOf(h, keyID, valueID)
}

// pinnedKV is the key and value types the kernel holds for a map, or nils
// when it has none.
func pinnedKV(m *ebpf.Map) (key, value btf.Type, err error) {
	info, err := rawMapInfo(m)
	if err != nil {
		return nil, nil, err
	}
	if info.btfID == 0 || info.btfKeyTypeID == 0 || info.btfValueTypeID == 0 {
		return nil, nil, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.btfID))
	if err != nil {
		return nil, nil, fmt.Errorf("open the map's BTF (id %d): %w", info.btfID, err)
	}
	defer h.Close()
	return typesOf(h, btf.TypeID(info.btfKeyTypeID), btf.TypeID(info.btfValueTypeID))
}

func typesOf(h *btf.Handle, keyID, valueID btf.TypeID) (key, value btf.Type, err error) {
	spec, err := h.Spec(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read BTF: %w", err)
	}
	if key, err = spec.TypeByID(keyID); err != nil {
		return nil, nil, fmt.Errorf("read key type: %w", err)
	}
	if value, err = spec.TypeByID(valueID); err != nil {
		return nil, nil, fmt.Errorf("read value type: %w", err)
	}
	return key, value, nil
}

// mapInfo is the head of the kernel's struct bpf_map_info (UAPI, append
// only), up to the BTF type IDs of key and value, which ebpf.MapInfo does
// not expose.
type mapInfo struct {
	typ, id, keySize, valueSize, maxEntries, mapFlags uint32
	name                                              [16]byte
	ifindex, btfVmlinuxValueTypeID                    uint32
	netnsDev, netnsIno                                uint64
	btfID, btfKeyTypeID, btfValueTypeID               uint32
	_                                                 uint32
	mapExtra                                          uint64
}

func rawMapInfo(m *ebpf.Map) (*mapInfo, error) {
	info := new(mapInfo)
	// union bpf_attr's info member: bpf_fd, info_len, info (a u64, which a
	// pointer fills on the 64-bit machines the datapath is built for).
	attr := struct {
		fd, len uint32
		info    unsafe.Pointer
	}{uint32(m.FD()), uint32(unsafe.Sizeof(*info)), unsafe.Pointer(info)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(m)
	if errno != 0 {
		return nil, fmt.Errorf("read map info: %w", errno)
	}
	return info, nil
}

// layout describes what a type's bytes mean: sizes, offsets and field
// names, but not type names, which only restate them. A renamed field
// counts as a change: reusing padding for a new field looks exactly so.
func layout(t btf.Type) string {
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		switch t.Encoding {
		case btf.Signed:
			return fmt.Sprintf("s%d", t.Size*8)
		case btf.Char, btf.Bool:
			return t.Encoding.String()
		}
		return fmt.Sprintf("u%d", t.Size*8)
	case *btf.Enum:
		return fmt.Sprintf("enum%d", t.Size*8)
	case *btf.Pointer:
		return "ptr"
	case *btf.Array:
		return fmt.Sprintf("[%d]%s", t.Nelems, layout(t.Type))
	case *btf.Struct:
		return "{" + members(t.Members) + "}"
	case *btf.Union:
		return "union{" + members(t.Members) + "}"
	default:
		size, _ := btf.Sizeof(t)
		return fmt.Sprintf("%T(%d)", t, size)
	}
}

func members(ms []btf.Member) string {
	var parts []string
	for _, m := range ms {
		p := fmt.Sprintf("%s@%d:%s", m.Name, m.Offset.Bytes(), layout(m.Type))
		if m.BitfieldSize != 0 || m.Offset%8 != 0 {
			p = fmt.Sprintf("%s@bit%d/%d:%s", m.Name, m.Offset, m.BitfieldSize, layout(m.Type))
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// swapPin pins m (a map or link) at pin in place of whatever is pinned
// there, in one rename: there is no moment without an object at pin.
func swapPin(m interface{ Pin(string) error }, pin string) error {
	// bpffs names may not contain dots; a dash cannot clash with a map
	// name from C.
	tmp := pin + "-new"
	os.Remove(tmp) // left by a swap that died half way
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace pin %s: %w", pin, err)
	}
	return nil
}

// Package maps is the typed Go view of every ebpfnet BPF map: the only place
// that encodes map keys and values. Callers speak net/netip and plain Go
// values; the key and value layouts come from bpf/lib/types.h via bpf2go.
//
// maps never decides what belongs in a map; the control plane does.
package maps

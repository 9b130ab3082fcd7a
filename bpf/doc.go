// Package bpf holds ebpfnet's eBPF programs (C, one file per attach point,
// shared headers in lib/) and the Go that bpf2go generates from them.
//
// The generated *_bpfel.go and *_bpfel.o files are committed so that the
// project builds without clang; `make generate` rebuilds them. Types shared
// with Go are declared once, in lib/types.h, and reach Go through -type.
//
// This package never attaches anything and knows nothing about the control
// plane: loader attaches the programs, maps encodes map entries.
package bpf

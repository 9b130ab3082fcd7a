// Package store is ebpfnet's durable state: one bbolt file, the single
// source of truth for networks, sandboxes and endpoints. Every change is one
// transaction, so a crash leaves either the old or the new state, never a
// mix; the reconciler brings the kernel in line with whatever it holds.
//
// The store knows nothing about the kernel.
package store

// Package control is ebpfnet's engine: it turns requests (create a
// network, a sandbox, connect one to the other, publish ports…) into store
// records, kernel objects and BPF map entries, and reconciles the kernel
// with the store.
//
// Every change validates first, then runs in one store transaction that
// also makes the kernel changes; when a step fails, what was already done in
// the kernel is undone and the transaction rolls back, so bad input changes
// nothing. Kernel objects ebpfnet creates carry an interface alias naming
// their owner, which is how the reconciler recognises leftovers.
//
// Around it, in packages of their own: the API's wire types and read
// models (api), which the engine answers through Engine.API; the drivers
// (driver/…), which build networks and endpoints in the kernel; the
// frontends (frontend/…), which own user syntax and call through the API;
// the kinds of failure (errdefs); the store, IPAM, published ports and
// the host ports they take (hostports).
//
// control never encodes a map entry itself (package maps does; desired.go
// is where records become entries) and never switches namespaces by hand
// (package namespace does). It imports no frontend.
package control

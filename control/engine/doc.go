// Package engine is ebpfnet's CNM core: it turns requests (create a
// network, a sandbox, connect one to the other, publish ports…) into store
// records, kernel objects and BPF map entries. It owns the one lock under
// which every change is made, and wires the packages beside it.
//
// Every change validates first, then runs in one store transaction that
// also makes the kernel changes (store.Undo collects how to undo them);
// when a step fails, what was already done in the kernel is undone and the
// transaction rolls back, so bad input changes nothing. Package wiring
// makes the kernel objects and package desired says which map entries
// records call for. Kernel objects ebpfnet creates carry an interface
// alias naming their owner, which is how package reconcile, which the
// engine runs at start and on request, recognises leftovers.
//
// Package publications publishes ports inside the engine's transactions
// and holds their host ports; the engine says whose sandbox a request may
// change.
//
// Sandboxes come two ways. The CLI's are made whole by CreateSandbox, their
// namespaces, files and processes kept by a Runtime the frontend provides.
// A container runtime's (Docker, CNI) are external endpoints: one
// attachment each of a namespace the runtime owns and names by path
// (package external, which makes its changes under the engine's lock and
// in its transactions), with IPAM requests of their own (package pools,
// which also chooses the pools of the engine's networks).
//
// After each committed change the engine hands the records it changed to
// package names, which brings the embedded DNS's view and the sandboxes'
// hosts and resolv.conf in line with them.
//
// An overlay network is created in the cluster and mirrored here as a
// bridge network with a VXLAN port (overlay.go); package clustersync
// follows the cluster and asks the engine for the mirrors of the
// networks other hosts create.
//
// Package status reads the status and metrics from the parts the engine
// hands it; package apiengine serves the API with the engine. The engine
// never encodes a map entry itself (package maps does; package desired is
// where records become entries) and never switches namespaces by hand
// (package namespace does). It imports no frontend.
package engine

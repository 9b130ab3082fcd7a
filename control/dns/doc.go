// Package dns is ebpfnet's embedded DNS server, Docker's 127.0.0.11. It
// answers a sandbox's queries for the names and aliases of the sandboxes it
// shares a network with (A and AAAA), PTR records for their addresses
// (in-addr.arpa and ip6.arpa), and forwards the rest upstream, over either
// family, from the dataplane's namespace.
//
// The resolver works on an immutable View that the control plane rebuilds
// from the store after every change and swaps in whole, so an answer never
// mixes two states and nothing stale is ever answered. The package never
// reads the store itself and never switches namespaces except through
// package namespace.
package dns

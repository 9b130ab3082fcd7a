// Package dns is ebpfnet's embedded DNS server, Docker's 127.0.0.11. It
// answers a sandbox's queries for the names and aliases of the sandboxes it
// shares a network with (A and AAAA), PTR records for their addresses
// (in-addr.arpa and ip6.arpa), and forwards the rest upstream, over either
// family, from the dataplane's namespace.
//
// The resolver works on an immutable View that the control plane rebuilds
// from the store after every change and swaps in whole, so an answer never
// mixes two states and nothing stale is ever answered from it. Forwarded
// answers are cached by their TTLs (negative ones by RFC 2308), for askers
// with the same upstream servers only, and never stand in for a name of
// the view. Forwarding goes over UDP sockets the resolver keeps, opened
// through a Dial the control plane supplies in its namespace; the package
// owns the protocol (IDs, matching replies, TCP on truncation, the
// in-flight bounds) and never switches namespaces itself, nor reads the
// store.
//
// For a sandbox with an egress list, the resolver refuses the names no
// list allows rather than forward them, and hands the addresses it
// answers for allowed ones to a Learn hook (the control plane writes them
// to the datapath) before the answer leaves.
//
// Over UDP, the sockets of all sandboxes are read by one OS thread outside
// Go's netpoller; what needs no upstream server (a name of the view, a
// cached answer) is answered there as the query is read, and only a query
// that goes upstream gets a goroutine. TCP is served by miekg/dns.
package dns

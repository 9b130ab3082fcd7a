// Package ipam allocates IPv4 and IPv6 addresses and subnets. It is pure Go: it makes
// no kernel calls and keeps no state of its own. Pools have IDs and are
// kept by whoever hands it a Pools (the store, in the daemon), apart from
// any network or endpoint: a network refers to its pool by ID, and an
// address is allocated or released by pool ID, in the same transaction as
// the record that uses it.
package ipam

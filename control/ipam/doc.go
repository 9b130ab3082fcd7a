// Package ipam allocates IPv4 addresses and subnets. It is pure Go: it makes
// no kernel calls and keeps no state of its own; a network's Pool is stored
// with the network, so an allocation commits in the same transaction as the
// endpoint that uses it.
package ipam

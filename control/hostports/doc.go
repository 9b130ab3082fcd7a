// Package hostports chooses the host ports that published ports take. It
// owns the index of host ports already held (by protocol, address and
// port, so a publish costs the same however many sandboxes there are) and
// the rule that decides when two claims collide: the same protocol and
// port, on the same address or where either takes every address.
//
// Whether a host socket has a port is asked of a Probe the caller hands
// over: Bind in the daemon, a fake in unit tests. The package keeps no
// store and writes no map; its caller records what it chose and tells it
// what is released.
package hostports

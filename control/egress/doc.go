// Package egress reads and matches egress lists: where a sandbox may send.
// A rule is a prefix of either family (192.0.2.0/24, 2001:db8::/64, a
// bare address being its own /32 or /128), a DNS name (api.example.com)
// or a wildcard (*.example.com: every name below example.com, at any
// depth, not example.com itself). Prefixes become datapath entries
// (desired); names are matched by the embedded DNS, which lets a sandbox
// reach what it answered for them.
//
// egress is plain data, its checks and its syntax: it knows no store and
// no kernel, so the CLI and the CNI plugin link it without the daemon.
package egress

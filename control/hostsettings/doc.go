// Package hostsettings reads the settings of a host's network namespace
// that decide whether packets forwarded through the kernel's stack get
// through: br_netfilter and its sysctls, the policy of netfilter's forward
// hook by family, nf_conntrack's fill and rp_filter. `ebpfnet status`
// shows them because they break datapaths that forward through the stack
// (Docker's FORWARD DROP on a bridge, a full conntrack table), and so that
// an operator sees at once that ebpfnet's does not depend on them: it
// delivers every packet it accepts by redirect.
//
// It only reads. It never writes a sysctl or a netfilter rule, and runs no
// command that would create a table: nftables' ruleset is read with
// `nft -j list ruleset`, and legacy iptables only where its filter table
// already exists. Its reads apply to the namespace of the calling thread:
// the caller runs them there (the engine's host thread).
package hostsettings

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the datapath. Each program object declares them all through
 * this header; the loader creates them once (from datapath.c), pins them by
 * name under the daemon's bpffs directory and hands the same maps to every
 * object, so they outlive the daemon and are shared by all programs. The
 * lookups that several topics and programs make (the network of an
 * address, the host's addresses, the publications) are here too, beside
 * the maps they read. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "addr.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct iface_info);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union addr);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct network_info);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} networks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct subnet_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} subnets SEC(".maps");

/* Indexed by program * STATS_VERDICT_SLOTS + verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, STATS_PROGRAM_SLOTS * STATS_VERDICT_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct publication_key);
	__type(value, struct publication);
	__uint(max_entries, 262144); /* a port on every address takes one entry per family */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} publications SEC(".maps");

/* The backends of balanced publications and their lookup tables, keyed
 * by the publication's key (struct maglev_table). Values are 5 KB:
 * allocated as publications are balanced, not up front. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct publication_key);
	__type(value, struct maglev_table);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} maglev SEC(".maps");

/* The key of the hashes that pick a balanced publication's backend
 * (lib/maglev.h): a secret the loader draws when it creates the map, so
 * that no client computes offline which of its tuples share a slot of a
 * table (and lands every flow it opens on one backend). Pinned, it stays
 * across restarts: a flow whose conntrack entry was lost still goes back
 * to its backend. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hash_seed SEC(".maps");

/* New flows each backend of a balanced publication took (per CPU), keyed
 * by the backend's address, port and protocol, for the metrics. The
 * control plane removes a backend's count once no publication leads to
 * it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct target_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_flows SEC(".maps");

/* Who may open flows to a published port: the most specific prefix of the
 * publication's own lists decides, or of the daemon's default lists for a
 * publication without any (struct source_key).
 * A publication with lists has a prefix of length zero for each family,
 * so that it never falls through to the default. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct source_key);
	__type(value, enum source_action);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} source_ranges SEC(".maps");

/* Where sandboxes with an egress list may send (struct egress_key): the
 * most specific prefix of the sender's own entries decides; a sender
 * without entries has no list. lib/egress.h reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct egress_key);
	__type(value, enum egress_action);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} egress_allow SEC(".maps");

/* The addresses the embedded DNS answered for allowed names, until their
 * answers' TTL runs out (struct egress_name_key, value the lapse in
 * CLOCK_BOOTTIME ns). The datapath checks the lapse itself, so an
 * address lapses on time with the daemon down; the daemon removes lapsed
 * entries. A hash, not LRU: an evicted entry would refuse a flow the list
 * allows, with no one to tell. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct egress_name_key);
	__type(value, __u64);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} egress_names SEC(".maps");

/* The dataplane namespace's own addresses (value unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union addr);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_addrs SEC(".maps");

/* The VNIs of ebpfnet's overlay networks, and the VTEPs (underlay
 * addresses) of the cluster's hosts, which alone may send to them
 * (values unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} overlay_vnis SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union addr);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} overlay_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct uplink_info);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} uplinks SEC(".maps");

/* Connection tracking, in two tables: ct_new holds flows that have not
 * shown they are real (a TCP handshake not completed, UDP and ICMP not
 * answered and answered back) and is LRU, so a flood of new flows evicts
 * only new flows; ct holds the rest and never evicts: established flows
 * leave it only by closing or expiring. Each flow has one entry per
 * direction, keyed by the flow as that direction's packets show it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow);
	__type(value, struct ct_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_new SEC(".maps");

/* What each source address holds in ct (struct ct_source), so that no
 * single client can fill the table that never evicts. The datapath
 * alone writes ct_sources, with atomic adds; the daemon alone writes
 * ct_released, its correction for the flows removed behind the
 * datapath's back (the daemon's reclaim, a flush, a replaced ct): an
 * update from user space replaces a whole value, and would lose the
 * datapath's adds if both wrote one map. A hash, not LRU: an evicted
 * count would let its source start afresh. ct holds at most
 * 131072 flows, so at most that many sources hold any; the rest is room
 * for sources the daemon has not yet found idle and removed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union addr);
	__type(value, struct ct_source);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union addr);
	__type(value, __s64);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_released SEC(".maps");

/* Fragmented datagrams whose first fragment was seen, so the fragments
 * after it, which carry no ports, are translated as their flow is. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

/* The sandbox ports publications lead to, for the "routed" gateway mode. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct target_key);
	__type(value, __u32);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} published_ports SEC(".maps");

/* What the socket hooks rewrote, kept with each socket (freed with it). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_peers);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sk_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_budget);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} icmp_budget SEC(".maps");

/* The host's own echo requests, keyed by their replies' flow, with when
 * the note lapses (as a conntrack entry of the flow would): no socket
 * lookup finds a ping or raw socket, so the uplinks' egress notes the
 * requests as they leave (uplink_egress), and a sandbox's masqueraded
 * ping never takes their replies (nat.h, host_socket). LRU: a host that
 * pings more targets than this at once loses the oldest notes, never a
 * reply it waits for less than ct_timeouts.icmp. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow);
	__type(value, __u64);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_echoes SEC(".maps");

/* The published host ports, for the bind hook (sock.c); kept in step with
 * publications by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct held_port_key);
	__type(value, __u32);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} held_ports SEC(".maps");

/* Where conntrack works out the key a flow's source is counted under in
 * ct_sources (ct_source_of), as the subnets' key it looks the source up
 * by first: one per CPU, for the same reason as below. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct subnet_key);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_source_scratch SEC(".maps");

/* Where a NAT port search builds the flow it creates: one per CPU, as a
 * program runs on one CPU from start to end. On the stack it would leave
 * too little of the BPF stack's 512 bytes to the calls around it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct new_flow_scratch);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} new_flow_scratch SEC(".maps");

/* Where deliver looks up a route (a struct bpf_fib_lookup, whose
 * anonymous unions have no Go form), for the same reason: one per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__uint(value_size, sizeof(struct bpf_fib_lookup));
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fib_scratch SEC(".maps");

/* Whether and what `ebpfnet monitor` listens to (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct monitor_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} monitor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct monitor_budget);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} monitor_budget SEC(".maps");

/* The monitor's events (struct monitor_event), for the daemon to read.
 * 1 MiB holds about 10,000 events: a second of one CPU at its full rate. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* The host sides of the endpoints XDP may deliver to (uplink_xdp.c): the
 * veths ebpfnet made with their sandbox side able to take redirected
 * frames (a veth takes them only in NAPI mode, which GRO turns on). Keyed
 * and valued by ifindex; the kernel drops an interface's entry as the
 * interface goes. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_targets SEC(".maps");

/* Where XDP sums a frame's L4 bytes to check its checksum, a chunk at a
 * time (bpf_csum_diff takes at most 512 bytes). One per CPU. */
#define CSUM_CHUNK 512
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__uint(value_size, CSUM_CHUNK);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} csum_scratch SEC(".maps");

/* Bandwidth limits of sandboxes (ratelimit.h): the daemon's limits, and
 * the buckets the datapath keeps for them, which the daemon deletes with
 * their limits. Two directions of every endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rate_key);
	__type(value, struct rate_limit);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rate_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct rate_key);
	__type(value, struct rate_bucket);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rate_buckets SEC(".maps");

/* network_of returns the index of the network whose subnet holds addr. */
static __always_inline __u32 *network_of(const union addr *addr)
{
	struct subnet_key key = { .prefixlen = 128, .addr = *addr };

	return bpf_map_lookup_elem(&subnets, &key);
}

static __always_inline int is_host_addr(const union addr *addr)
{
	return bpf_map_lookup_elem(&host_addrs, addr) != NULL;
}

/* published_at finds where a host address and port lead: the entry for
 * that address, else the one for every address of its family; key is
 * left as the entry's. */
static __always_inline struct publication *published_at(struct publication_key *key, const union addr *addr, __be16 port,
							 __u8 proto)
{
	struct publication *pub;

	__builtin_memset(key, 0, sizeof(*key));
	key->addr = *addr;
	key->port = port;
	key->proto = proto;
	pub = bpf_map_lookup_elem(&publications, key);
	if (pub)
		return pub;
	__builtin_memset(&key->addr, 0, sizeof(key->addr));
	if (addr_is_v4(addr))
		key->addr.w[2] = bpf_htonl(0xffff);
	return bpf_map_lookup_elem(&publications, key);
}

/* published finds where a host address and port lead (published_at). */
static __always_inline struct publication *published(const union addr *addr, __be16 port, __u8 proto)
{
	struct publication_key key;

	return published_at(&key, addr, port, proto);
}

/* source_refused reports whether client saddr, opening a new flow to a
 * published port, may not: the publication's own lists decide, or the
 * daemon's default when it has none; no list at all lets everyone in.
 * key->pub holds the publication's key (published_at's), and key is where
 * the lookups are made: a per-CPU scratch's (new_flow_scratch.source), off the
 * caller's stack. It leaves key->pub the key of the lists that decided. */
static __noinline __attribute__((unused)) int source_refused(struct source_key *key, const union addr *saddr)
{
	enum source_action *action;

	key->prefixlen = 8 * (sizeof(*key) - sizeof(key->prefixlen));
	key->addr = *saddr;
	action = bpf_map_lookup_elem(&source_ranges, key);
	if (!action) {
		__builtin_memset(&key->pub, 0, sizeof(key->pub));
		if (addr_is_v4(saddr))
			key->pub.addr.w[2] = bpf_htonl(0xffff);
		action = bpf_map_lookup_elem(&source_ranges, key);
	}
	return action && *action == SOURCE_DENY;
}

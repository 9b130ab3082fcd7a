/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Balanced publications: which of a publication's backends a new flow
 * goes to. A hash of the flow's tuple picks a slot of the publication's
 * Maglev table (struct maglev_table), which the control plane fills so
 * that each backend has its share of the slots and a backend leaving
 * moves few slots of the others. The choice depends on the tuple alone:
 * TC, XDP and the hairpin agree on it, and a flow whose conntrack entry
 * was lost goes back to its backend, unless that backend left. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* hash_mix folds word k into hash h (MurmurHash3's round). */
static __always_inline __u32 hash_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* hash_final spreads every bit of h over the others (MurmurHash3's). */
static __always_inline __u32 hash_final(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

/* hash_key is the secret the hashes start from (hash_seed). */
static __always_inline __u32 hash_key(void)
{
	__u32 zero = 0, *key = bpf_map_lookup_elem(&hash_seed, &zero);

	return key ? *key : 0;
}

/* flow_hash hashes a flow's addresses, ports and protocol, as its first
 * packet shows them, keyed with the host's secret. */
static __noinline __attribute__((unused)) __u32 flow_hash(const struct flow *f)
{
	__u32 h = hash_key();

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_mix(h, f->saddr.w[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_mix(h, f->daddr.w[i]);
	h = hash_mix(h, (__u32)f->sport << 16 | f->dport);
	h = hash_mix(h, f->proto);
	return hash_final(h ^ 37);
}

/* cookie_hash hashes a socket's cookie, keyed as flow_hash: the socket
 * hooks choose a backend before the connection has a source port. */
static __always_inline __u32 cookie_hash(__u64 cookie)
{
	return hash_final(hash_mix(hash_mix(hash_key(), (__u32)cookie), (__u32)(cookie >> 32)) ^ 8);
}

/* count_backend_flow counts the new flow this CPU's scratch holds (the
 * flow just claimed) when it went to a backend of a balanced publication:
 * dnat_backend leaves the publication's flags with the backend. It takes
 * nothing but the scratch, so that its caller keeps nothing more of its
 * own across the NAT port search. */
static __noinline __attribute__((unused)) void count_backend_flow(void)
{
	struct new_flow_scratch *sc;
	__u64 one = 1, *n;
	__u32 zero = 0;

	sc = bpf_map_lookup_elem(&new_flow_scratch, &zero);
	if (!sc || !(sc->backend.flags & PUBLICATION_BALANCED))
		return;
	struct target_key key = { .addr = sc->backend.addr, .port = sc->backend.port, .proto = sc->nf.orig.proto };

	n = bpf_map_lookup_elem(&backend_flows, &key);
	if (n)
		*n += 1; /* this CPU's */
	else
		bpf_map_update_elem(&backend_flows, &key, &one, BPF_NOEXIST);
}

/* backend_of gives where a new flow of hash h to publication pub (whose
 * key is key) goes: pub itself, or for a balanced publication the backend
 * its table names for h. NULL: a balanced publication without a table. */
static __always_inline struct publication *backend_of(const struct publication_key *key, struct publication *pub,
						      __u32 h)
{
	struct maglev_table *t;
	__u32 i;

	if (!(pub->flags & PUBLICATION_BALANCED))
		return pub;
	t = bpf_map_lookup_elem(&maglev, key);
	if (!t)
		return NULL;
	/* The verifier cannot follow the compiler's modulo by a constant:
	 * the bounds are checked again, where it sees them. */
	i = h % MAGLEV_SLOTS;
	asm volatile("" : "+r"(i));
	if (i >= MAGLEV_SLOTS)
		return NULL;
	i = t->slot[i];
	asm volatile("" : "+r"(i));
	if (i >= MAGLEV_BACKENDS)
		return NULL;
	pub = &t->backend[i];
	return pub->port ? pub : NULL;
}

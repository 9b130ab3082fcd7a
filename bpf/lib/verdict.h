/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "maps.h"

static __always_inline void count_bytes(enum program prog, enum verdict v, __u32 bytes)
{
	__u32 key = prog * STATS_VERDICT_SLOTS + v;
	struct counter *c = bpf_map_lookup_elem(&stats, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void count(struct __sk_buff *skb, enum program prog, enum verdict v)
{
	count_bytes(prog, v, skb->len);
}

/* TC_ACT_UNSPEC hands the packet to the next program or filter, so ebpfnet
 * never ends a chain it shares with others; TC_ACT_OK would. */
static __always_inline int pass(struct __sk_buff *skb, enum program prog)
{
	count(skb, prog, VERDICT_PASS);
	return TC_ACT_UNSPEC;
}

static __always_inline int drop(struct __sk_buff *skb, enum program prog, enum verdict why)
{
	count(skb, prog, why);
	return TC_ACT_SHOT;
}

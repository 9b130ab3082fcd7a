/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "maps.h"
#include "monitor.h"

static __always_inline void count_bytes(enum program prog, enum verdict v, __u32 bytes)
{
	__u32 key = prog * STATS_VERDICT_SLOTS + v;
	struct counter *c = bpf_map_lookup_elem(&stats, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* count_flow counts a packet's verdict and reports it to a monitor as an
 * event of type (MONITOR_DROP or MONITOR_TRACE), with the flow it came in
 * as (NULL: as the packet still shows it) and the one it was translated
 * to (NULL: none). */
static __always_inline void count_flow(struct __sk_buff *skb, enum program prog, enum verdict v, __u32 type,
				       const struct flow *before, const struct flow *after)
{
	count_bytes(prog, v, skb->len);
	monitor_packet(skb, prog * STATS_VERDICT_SLOTS + v, type, before, after);
}

static __always_inline void count(struct __sk_buff *skb, enum program prog, enum verdict v)
{
	count_flow(skb, prog, v, MONITOR_TRACE, NULL, NULL);
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
	count_flow(skb, prog, why, MONITOR_DROP, NULL, NULL);
	return TC_ACT_SHOT;
}

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "maps.h"

static __always_inline void count(struct __sk_buff *skb, enum verdict v)
{
	struct counter *c = bpf_map_lookup_elem(&stats, &v);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

/* TC_ACT_UNSPEC hands the packet to the next program or filter, so ebpfnet
 * never ends a chain it shares with others; TC_ACT_OK would. */
static __always_inline int pass(struct __sk_buff *skb)
{
	count(skb, VERDICT_PASS);
	return TC_ACT_UNSPEC;
}

static __always_inline int drop(struct __sk_buff *skb, enum verdict why)
{
	count(skb, why);
	return TC_ACT_SHOT;
}

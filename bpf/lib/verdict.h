/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "maps.h"
#include "ctx.h"
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
static __always_inline void count_flow(struct ctx_buff *ctx, enum program prog, enum verdict v, __u32 type,
				       const struct flow *before, const struct flow *after)
{
	count_bytes(prog, v, ctx_len(ctx));
	monitor_packet(ctx, prog * STATS_VERDICT_SLOTS + v, type, before, after);
}

static __always_inline void count(struct ctx_buff *ctx, enum program prog, enum verdict v)
{
	count_flow(ctx, prog, v, MONITOR_TRACE, NULL, NULL);
}

static __always_inline int pass(struct ctx_buff *ctx, enum program prog)
{
	count(ctx, prog, VERDICT_PASS);
	return CTX_PASS;
}

static __always_inline int drop(struct ctx_buff *ctx, enum program prog, enum verdict why)
{
	count_flow(ctx, prog, why, MONITOR_DROP, NULL, NULL);
	return CTX_DROP;
}

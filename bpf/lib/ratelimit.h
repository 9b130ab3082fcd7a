/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bandwidth limits of sandboxes: a token bucket per endpoint and
 * direction, which a packet over the limit finds empty and is dropped
 * by, as a policer does. The kernel here has no fq qdisc to pace packets
 * by their departure time (Cilium's EDT), and a policer needs none: it
 * costs a lookup and a few instructions per packet, and no queue.
 *
 * The bucket is kept as the time it will be full again (the generic cell
 * rate algorithm, the token bucket's twin): a packet of len bytes costs
 * len / rate seconds, and passes while the bucket would still hold it,
 * that is while its cost fits in the burst's time ahead of now. Egress is
 * judged where the sandbox's packets come in (from_container), ingress
 * on every way into the sandbox: through the bridge (to_container), and
 * before each redirect into it (forward.h, neighbour.h, uplink_xdp.c). A
 * GSO packet counts by its whole length: it is what the sandbox sent or
 * gets. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"
#include "ctx.h"
#include "verdict.h"

#define RATE_NSEC_PER_SEC 1000000000ULL

/* over_rate reports whether a packet (ctx) to or from the endpoint whose
 * host side is ifindex, in direction dir, is over that endpoint's limit;
 * when it is not, its cost is taken from the bucket. A packet bigger than
 * the whole burst passes when the bucket is full, and leaves it in debt:
 * it would otherwise never pass, and the rate still holds over time. A
 * bucket the map has no room for leaves the endpoint unlimited rather
 * than cut off. Not inlined: its frame is no part of its callers', whose
 * stacks are near the limit. */
static __noinline int over_rate(struct ctx_buff *ctx, __u32 ifindex, enum rate_direction dir)
{
	struct rate_key key = { .ifindex = ifindex, .direction = dir };
	struct rate_limit *lim = bpf_map_lookup_elem(&rate_limits, &key);
	struct rate_bucket fresh = {}, *b;
	__u64 now, cost, burst, start;
	int over;

	if (!lim || !lim->rate)
		return 0;
	b = bpf_map_lookup_elem(&rate_buckets, &key);
	if (!b) {
		bpf_map_update_elem(&rate_buckets, &key, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&rate_buckets, &key);
		if (!b)
			return 0;
	}
	cost = (__u64)ctx_len(ctx) * RATE_NSEC_PER_SEC / lim->rate;
	burst = lim->burst * RATE_NSEC_PER_SEC / lim->rate;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&b->lock);
	start = b->full_at > now ? b->full_at : now;
	over = start > now && start - now + cost > burst;
	if (!over)
		b->full_at = start + cost;
	bpf_spin_unlock(&b->lock);
	return over;
}

/* pass_in passes a packet on to the sandbox behind ifindex, or drops it
 * when it is over the sandbox's ingress limit. */
static __always_inline int pass_in(struct ctx_buff *ctx, enum program prog, __u32 ifindex)
{
	if (over_rate(ctx, ifindex, RATE_INGRESS))
		return drop(ctx, prog, VERDICT_DROP_RATE_LIMIT);
	return pass(ctx, prog);
}
